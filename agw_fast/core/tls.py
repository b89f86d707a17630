"""TLS contexts, built once at load time (never per connection): client contexts for
upstreams, server contexts for HTTPS listeners."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from typing import TypeVar

import certifi

from agw_fast.config.model import BackendTLS, ListenerTLS
from agw_fast.core.routing import select_listener

__all__ = [
    "DEFAULT_TLS12_CIPHERS",
    "TLSFileError",
    "client_context",
    "handshake_profile",
    "server_context",
    "sni_chooser",
]

# agentgateway's default TLS 1.2 suites (rustls: ECDHE with AES-GCM or ChaCha20 only); OpenSSL's
# own default would also allow CBC suites.
DEFAULT_TLS12_CIPHERS = (
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-RSA-CHACHA20-POLY1305",
)
_VERSIONS = {"TLS_V1_2": ssl.TLSVersion.TLSv1_2, "TLS_V1_3": ssl.TLSVersion.TLSv1_3}

L = TypeVar("L")


class TLSFileError(ValueError):
    """A listener's certificate, key or root file that OpenSSL cannot use."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field


def _has_certificates(path: str) -> bool:
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError, ValueError):
        return False
    return True


def _why(error: Exception) -> str:
    return str(getattr(error, "reason", None) or error)


def client_context(tls: BackendTLS) -> ssl.SSLContext:
    """The SSLContext for `backendTLS`. `{}` = certifi roots, verification and SNI on.

    We only speak HTTP/1.1 upstream, so ALPN offers exactly that: offering h2 (agentgateway's
    default) to a server we then talk HTTP/1.1 to would break servers that pick h2.
    """
    context = ssl.create_default_context(cafile=tls.root or certifi.where())
    if tls.cert is not None and tls.key is not None:
        context.load_cert_chain(tls.cert, tls.key)
    if tls.insecure:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif tls.insecure_host:
        context.check_hostname = False
    context.set_alpn_protocols(["http/1.1"])
    return context


def handshake_profile(tls: ListenerTLS) -> tuple[object, ...]:
    """What OpenSSL keeps from the port's first context when the SNI callback switches to a
    listener's own (versions, suites, whether a client certificate is required; the CA store
    does follow the switch): listeners sharing a port must agree on all of it."""
    return (tls.min_version, tls.max_version, tls.ciphers, tls.tls13_suites, tls.root is not None)


def server_context(tls: ListenerTLS) -> ssl.SSLContext:
    """The SSLContext of an HTTPS listener (TLSFileError naming the field for a bad file).

    As agentgateway: TLS 1.2 and 1.3 only, its cipher suites, and with `root` every client
    must present a certificate that root signed (no anonymous fallback). ALPN offers
    http/1.1 only: agentgateway also offers h2, which we do not serve.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[tls.min_version or "TLS_V1_2"]
    context.maximum_version = _VERSIONS[tls.max_version or "TLS_V1_3"]
    ciphers = DEFAULT_TLS12_CIPHERS if tls.ciphers is None else tls.ciphers
    if ciphers:
        context.set_ciphers(":".join(ciphers))
    else:
        context.minimum_version = ssl.TLSVersion.TLSv1_3  # no TLS 1.2 suite: no TLS 1.2
    if not tls.tls13_suites:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    try:
        context.load_cert_chain(tls.cert, tls.key)
    except (ssl.SSLError, OSError, ValueError) as error:
        # OpenSSL does not say which file it choked on: whichever holds no readable
        # certificate is the culprit, else the key (unreadable, or not the certificate's).
        field = "key" if _has_certificates(tls.cert) else "cert"
        raise TLSFileError(field, f"cannot load the certificate and key: {_why(error)}") from None
    if tls.root is not None:
        try:
            context.load_verify_locations(cafile=tls.root)
        except (ssl.SSLError, OSError, ValueError) as error:
            raise TLSFileError("root", f"cannot load the CA file: {_why(error)}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    context.set_alpn_protocols(["http/1.1"])
    return context


def sni_chooser(
    listeners: Mapping[str, L], contexts: Mapping[int, ssl.SSLContext]
) -> Callable[[ssl.SSLObject, str | None, ssl.SSLContext], int | None]:
    """An `sni_callback` that serves the certificate of the listener the client's SNI selects
    (agentgateway's `best_match_tls`: exact name, longest `*` suffix, then the fallback "").

    `contexts` maps id(listener) to its context. No listener for the name: the handshake
    fails, as agentgateway drops such a connection ("no TLS listener match").
    """

    def choose(
        connection: ssl.SSLObject, server_name: str | None, _current: ssl.SSLContext
    ) -> int | None:
        listener = select_listener(listeners, (server_name or "").lower())
        if listener is None:
            return ssl.ALERT_DESCRIPTION_UNRECOGNIZED_NAME
        connection.context = contexts[id(listener)]
        return None

    return choose
