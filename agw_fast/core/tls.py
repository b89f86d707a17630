"""Client TLS contexts for upstreams, built once at load time (never per connection)."""

from __future__ import annotations

import ssl

import certifi

from agw_fast.config.model import BackendTLS

__all__ = ["client_context"]


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
