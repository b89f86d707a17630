"""HTTPS listeners in the config: `tls` fields, what is refused, the SSL contexts built."""

from __future__ import annotations

import json
import ssl
from pathlib import Path

import pytest
import trustme

from agw_fast.config import load_config
from agw_fast.config.model import ListenerTLS
from agw_fast.errors import ConfigError
from agw_fast.plan import compile_config

L = "binds[0].listeners[0]"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name in ("a.test", "b.test"):
        cert = ca.issue_cert(name)
        cert.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        cert.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    (directory / "garbage.pem").write_text("not a certificate\n")
    return directory


def listener(
    tls: object, hostname: str | None = None, protocol: str = "HTTPS"
) -> dict[str, object]:
    found: dict[str, object] = {"protocol": protocol, "tls": tls, "routes": []}
    if hostname is not None:
        found["hostname"] = hostname
    return found


def doc(*listeners: dict[str, object], **top: object) -> str:
    return json.dumps({"binds": [{"port": 8443, "listeners": list(listeners)}], **top})


def load(text: str, base: Path) -> list[object]:
    return list(compile_config(load_config(text, {}, base_dir=base)))


def error_of(text: str, base: Path) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(text, base)
    return info.value


AB = {"cert": "a.test.pem", "key": "a.test.key"}


def test_https_listener_loads_relative_files(files: Path) -> None:
    config = load_config(doc(listener({**AB, "root": "ca.pem"})), {}, base_dir=files)
    tls = config.binds[0].listeners[0].tls
    assert config.binds[0].listeners[0].protocol == "HTTPS"
    assert tls == ListenerTLS(
        cert=str(files / "a.test.pem"), key=str(files / "a.test.key"), root=str(files / "ca.pem")
    )
    (bind,) = compile_config(config)
    assert bind.ssl_context is not None
    assert bind.ssl_context.verify_mode == ssl.CERT_REQUIRED
    assert bind.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert bind.ssl_context.maximum_version == ssl.TLSVersion.TLSv1_3
    assert bind.ssl_context.sni_callback is not None


def test_plain_bind_has_no_context(files: Path) -> None:
    (bind,) = compile_config(load_config(doc({"routes": []}), {}, base_dir=files))
    assert bind.ssl_context is None
    assert bind.tls_listeners is None


def test_default_tls12_suites_are_agentgateways(files: Path) -> None:
    (bind,) = compile_config(load_config(doc(listener(AB)), {}, base_dir=files))
    assert bind.ssl_context is not None
    names = {c["name"] for c in bind.ssl_context.get_ciphers() if c["protocol"] == "TLSv1.2"}
    assert names == {
        "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305",
    }


def test_cipher_suite_names_map_to_openssl(files: Path) -> None:
    suites = ["TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256", "ECDHE-RSA-CHACHA20-POLY1305"]
    config = load_config(doc(listener({**AB, "cipherSuites": suites})), {}, base_dir=files)
    tls = config.binds[0].listeners[0].tls
    assert tls is not None
    assert tls.ciphers == ("ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305")
    assert not tls.tls13_suites  # no TLS 1.3 suite listed: no TLS 1.3, as with rustls
    (bind,) = compile_config(config)
    assert bind.ssl_context is not None
    assert bind.ssl_context.maximum_version == ssl.TLSVersion.TLSv1_2


def test_all_tls13_suites_only_means_tls13_only(files: Path) -> None:
    suites = ["TLS_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"]
    (bind,) = load(doc(listener({**AB, "cipherSuites": suites})), files)
    assert bind.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3  # type: ignore[attr-defined]


def test_versions(files: Path) -> None:
    tls = {**AB, "minTlsVersion": "TLS_V1_3", "maxTLSVersion": "TLS_V1_3"}
    (bind,) = load(doc(listener(tls)), files)
    assert bind.ssl_context.minimum_version == ssl.TLSVersion.TLSv1_3  # type: ignore[attr-defined]


def test_handshake_timeout(files: Path) -> None:
    text = doc(listener(AB), frontendPolicies={"tls": {"handshakeTimeout": "250ms"}})
    assert load_config(text, {}, base_dir=files).frontend.tls_handshake_timeout == 0.25
    assert load_config(doc(listener(AB)), {}, base_dir=files).frontend.tls_handshake_timeout == 15


def test_sni_listeners_share_a_port(files: Path) -> None:
    b = {"cert": "b.test.pem", "key": "b.test.key"}
    (bind,) = load(doc(listener(AB, "a.test"), listener(b, "*.test")), files)
    assert len(bind.tls_listeners) == 2  # type: ignore[attr-defined]


ERRORS: list[tuple[object, str, str]] = [
    # (listener or whole config, path, message fragment)
    (listener(None), f"{L}.tls", "HTTPS listener requires 'tls'"),
    (listener(AB, protocol="HTTP"), f"{L}.tls", "tls requires protocol: HTTPS"),
    ({**listener(AB), "routes": None}, L, "HTTPS listener requires routes"),
    (listener({"key": "a.test.key"}), f"{L}.tls.cert", "tls requires 'cert'"),
    (listener({"cert": "a.test.pem"}), f"{L}.tls.key", "tls requires 'key'"),
    (listener({**AB, "cert": "missing.pem"}), f"{L}.tls.cert", "file not found"),
    (listener({**AB, "root": "missing.pem"}), f"{L}.tls.root", "file not found"),
    (listener({**AB, "cert": "garbage.pem"}), f"{L}.tls.cert", "cannot load"),
    (listener({**AB, "key": "b.test.key"}), f"{L}.tls.key", "KEY_VALUES_MISMATCH"),
    (listener({**AB, "key": "garbage.pem"}), f"{L}.tls.key", "cannot load"),
    (listener({**AB, "key": "a.test.pem"}), f"{L}.tls.key", "cannot load"),
    (listener({**AB, "cert": "a.test.key"}), f"{L}.tls.cert", "cannot load"),
    (listener({**AB, "root": "garbage.pem"}), f"{L}.tls.root", "cannot load the CA file"),
    (listener({**AB, "mode": "dynamicCa"}), f"{L}.tls.mode", "not supported"),
    (listener({**AB, "mode": "other"}), f"{L}.tls.mode", 'expected one of "static"'),
    (listener({**AB, "spiffe": {}}), f"{L}.tls.spiffe", "not supported"),
    (listener({**AB, "minTLSVersion": "TLS_V1_1"}), f"{L}.tls.minTLSVersion", "unsupported"),
    (listener({**AB, "maxTLSVersion": "TLS1.3"}), f"{L}.tls.maxTLSVersion", "expected one of"),
    (
        listener({**AB, "minTLSVersion": "TLS_V1_3", "maxTLSVersion": "TLS_V1_2"}),
        f"{L}.tls",
        "invalid TLS version range",
    ),
    (
        listener({**AB, "minTLSVersion": "TLS_V1_2", "minTlsVersion": "TLS_V1_2"}),
        f"{L}.tls.minTlsVersion",
        "duplicate field",
    ),
    (
        listener({**AB, "cipherSuites": ["TLS_RSA_WITH_RC4_128_MD5"]}),
        f"{L}.tls.cipherSuites[0]",
        "expected one of",
    ),
    (
        listener({**AB, "cipherSuites": ["TLS_AES_128_GCM_SHA256"]}),
        f"{L}.tls.cipherSuites",
        "not supported",
    ),
    (
        listener({**AB, "cipherSuites": ["ECDHE-RSA-AES128-GCM-SHA256"],
                  "minTLSVersion": "TLS_V1_3"}),
        f"{L}.tls.cipherSuites",
        "no TLS 1.3 suite",
    ),
    (
        {"frontendPolicies": {"tls": {"handshakeTimeout": "0s"}}},
        "frontendPolicies.tls.handshakeTimeout",
        "greater than zero",
    ),
    (
        {"frontendPolicies": {"tls": {"minVersion": "TLS_V1_3"}}},
        "frontendPolicies.tls.minVersion",
        "not supported",
    ),
]


@pytest.mark.parametrize(("config", "path", "fragment"), ERRORS)
def test_errors(files: Path, config: dict[str, object], path: str, fragment: str) -> None:
    text = json.dumps(config) if "protocol" not in config else doc(config)
    error = error_of(text, files)
    assert (error.path, fragment in error.message) == (path, True), str(error)


def test_http_and_https_listeners_cannot_share_a_port(files: Path) -> None:
    error = error_of(doc(listener(AB, "a.test"), {"routes": []}), files)
    assert error.path == "binds[0].listeners[1].protocol"
    assert "cannot share a port" in error.message


def test_listeners_on_one_port_may_trust_different_roots(files: Path) -> None:
    b = {"cert": "b.test.pem", "key": "b.test.key", "root": "b.test.pem"}
    (bind,) = load(doc(listener({**AB, "root": "ca.pem"}, "a.test"), listener(b, "b.test")), files)
    assert len(bind.tls_listeners) == 2  # type: ignore[attr-defined]


def test_listeners_on_one_port_all_or_none_verify_clients(files: Path) -> None:
    b = {"cert": "b.test.pem", "key": "b.test.key", "root": "ca.pem"}
    error = error_of(doc(listener(AB, "a.test"), listener(b, "b.test")), files)
    assert error.path == "binds[0].listeners[1].tls"
    assert "whether a root" in error.message


def test_listeners_on_one_port_share_the_handshake_profile(files: Path) -> None:
    b = {"cert": "b.test.pem", "key": "b.test.key", "minTLSVersion": "TLS_V1_3"}
    error = error_of(doc(listener(AB, "a.test"), listener(b, "b.test")), files)
    assert error.path == "binds[0].listeners[1].tls"
    assert error.message.startswith("not supported: binds[0].listeners[1].tls (HTTPS listeners")
