"""A listener's `tls` block (protocol HTTPS) and `frontendPolicies.tls`.

agentgateway terminates TLS with rustls (types/local.rs `LocalTLSServerConfig`, types/agent.rs
`build_server_config`); agw-fast with OpenSSL through Python's ssl. Names map one to one except
TLS 1.3 cipher suites, which Python cannot choose among: they are all on or all off.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from agw_fast.config.load_policies import _readable_file as readable_file
from agw_fast.config.model import ListenerTLS
from agw_fast.config.validate import Obj, as_list, as_str, choice, not_supported
from agw_fast.errors import ConfigError

__all__ = ["TLS12_SUITES", "TLS13_SUITES", "parse_frontend_tls", "parse_listener_tls"]

# agentgateway's TLS 1.2 suite names (transport/tls.rs `CipherSuite`) -> OpenSSL's, which
# agentgateway also accepts as aliases.
TLS12_SUITES: dict[str, str] = {
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# TLS 1.3 suites (and their `TLS13_` aliases): OpenSSL enables exactly these three.
TLS13_SUITES: dict[str, str] = {
    "TLS_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS13_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS13_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
}
_ALL_SUITES = [*TLS12_SUITES, *TLS12_SUITES.values(), *TLS13_SUITES]
_VERSIONS = ("TLS_V1_0", "TLS_V1_1", "TLS_V1_2", "TLS_V1_3")

Version = Literal["TLS_V1_2", "TLS_V1_3"]


def parse_listener_tls(raw: object, path: str, base_dir: Path) -> ListenerTLS:
    o = Obj(raw, path, "LocalTLSServerConfig")
    mode = o.get("mode")
    if mode is not None and choice(mode, o.child("mode"), ("static", "dynamicCa")) != "static":
        raise not_supported(o.child("mode"), "dynamicCa")
    files: dict[str, str | None] = {}
    for key in ("cert", "key", "root"):
        value = o.get(key)
        if value is None and key != "root":
            raise ConfigError(o.child(key), f"tls requires '{key}'")
        files[key] = None if value is None else readable_file(value, o.child(key), base_dir)
    low = _version(o, "minTLSVersion", "minTlsVersion")
    high = _version(o, "maxTLSVersion", "maxTlsVersion")
    if low is not None and high is not None and low > high:
        raise ConfigError(path, f"invalid TLS version range: {low} is above {high}")
    ciphers, tls13 = _suites(o)
    o.close()
    # rustls offers a version only with a suite for it; OpenSSL would fail every handshake.
    if not tls13 and low == "TLS_V1_3":
        raise ConfigError(o.child("cipherSuites"), "no TLS 1.3 suite listed for minTLSVersion")
    if ciphers == () and high == "TLS_V1_2":
        raise ConfigError(o.child("cipherSuites"), "no TLS 1.2 suite listed for maxTLSVersion")
    assert files["cert"] is not None and files["key"] is not None
    return ListenerTLS(
        cert=files["cert"],
        key=files["key"],
        root=files["root"],
        min_version=low,
        max_version=high,
        ciphers=ciphers,
        tls13_suites=tls13,
    )


def _version(o: Obj, key: str, alias: str) -> Version | None:
    if o.has(key) and o.has(alias):
        raise ConfigError(o.child(alias), f"duplicate field: {key} is already set")
    name = key if o.has(key) else alias
    raw = o.get(name)
    if raw is None:
        return None
    version = choice(raw, o.child(name), _VERSIONS)
    if version == "TLS_V1_2":
        return "TLS_V1_2"
    if version == "TLS_V1_3":
        return "TLS_V1_3"
    raise ConfigError(
        o.child(name), f"unsupported TLS version: {version} (TLS_V1_2 and TLS_V1_3 are)"
    )


def _suites(o: Obj) -> tuple[tuple[str, ...] | None, bool]:
    """(OpenSSL TLS 1.2 cipher names or None for the defaults, TLS 1.3 suites on)."""
    path = o.child("cipherSuites")
    raw = o.get("cipherSuites")
    items = [] if raw is None else as_list(raw, path)
    names = [as_str(n, f"{path}[{i}]") for i, n in enumerate(items)]
    if not names:
        return None, True  # an empty list means the defaults, as in agentgateway
    tls12: list[str] = []
    tls13: set[str] = set()
    for i, name in enumerate(names):
        if name in TLS13_SUITES:
            tls13.add(TLS13_SUITES[name])
            continue
        openssl = TLS12_SUITES.get(name) or (name if name in TLS12_SUITES.values() else None)
        if openssl is None:
            choice(name, f"{path}[{i}]", _ALL_SUITES)  # raises, listing the valid names
        elif openssl not in tls12:
            tls12.append(openssl)
    if tls13 and len(tls13) < len(set(TLS13_SUITES.values())):
        raise not_supported(
            path, "a subset of the TLS 1.3 suites: Python's ssl enables all three or none"
        )
    return tuple(tls12), bool(tls13)


def parse_frontend_tls(raw: object, path: str) -> float | None:
    """`frontendPolicies.tls`: the handshake timeout (None: the default)."""
    o = Obj(raw, path, "TLS")
    timeout = o.opt_duration("handshakeTimeout")
    o.close()
    if timeout is not None and timeout <= 0:
        raise ConfigError(o.child("handshakeTimeout"), "must be greater than zero")
    return timeout
