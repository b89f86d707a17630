"""HTTPS listeners: real TLS clients (httpx, curl, the openai SDK, raw ssl sockets) against the
gateway started by its CLI.

Two gateways serve the module:
  - `sni_gw`: one port, listeners `a.test` (proxied to an echo upstream), `b.test` (a direct
    response) and `*.wild.test`, each with its own certificate; handshake timeout 1s.
  - `profiles_gw`: one listener per port: mTLS (`root`), TLS 1.3 only, TLS 1.2 only, and the
    seed's LLM route behind HTTPS (for the SDK).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trustme
import yaml

from tests.e2e.conftest import (
    DEADLINE,
    QUIET,
    UPSTREAM_KEY,
    Certs,
    GatewayFactory,
    Process,
    Upstream,
    ai_route,
    unused_port,
)


@dataclass
class Pki:
    directory: Path
    ca: trustme.CA
    client: trustme.LeafCert  # signed by `ca`
    rogue_client: trustme.LeafCert  # signed by another CA

    def path(self, name: str) -> str:
        return str(self.directory / name)

    def client_context(
        self,
        *,
        cert: trustme.LeafCert | None = None,
        low: ssl.TLSVersion | None = None,
        high: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if cert is not None:
            cert.configure_cert(context)
        if low is not None:
            context.minimum_version = low
        if high is not None:
            context.maximum_version = high
        return context


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("listener-tls")
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(directory / "ca.pem"))
    for name, hosts in (("a", ["a.test"]), ("b", ["b.test"]), ("wild", ["*.wild.test"]),
                        ("local", ["localhost", "127.0.0.1"])):
        leaf = ca.issue_cert(*hosts)
        leaf.cert_chain_pems[0].write_to_path(str(directory / f"{name}.pem"))
        leaf.private_key_pem.write_to_path(str(directory / f"{name}.key"))
    rogue_ca = trustme.CA()
    rogue_ca.cert_pem.write_to_path(str(directory / "rogue-ca.pem"))
    return Pki(directory, ca, ca.issue_cert("client.test"), rogue_ca.issue_cert("client.test"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def tls(pki: Pki, name: str, **extra: object) -> dict[str, object]:
    return {"cert": pki.path(f"{name}.pem"), "key": pki.path(f"{name}.key"), **extra}


def echo_routes(port: int) -> list[dict[str, object]]:
    return [{"backends": [{"host": f"127.0.0.1:{port}"}]}]


def gateway_yaml(binds: list[dict[str, object]], **top: object) -> str:
    return QUIET + yaml.safe_dump({**top, "binds": binds}, sort_keys=False)


@pytest.fixture(scope="module")
def sni_gw(module_gateway: GatewayFactory, pki: Pki, upstream: Upstream) -> Process:
    direct = [{"policies": {"directResponse": {"status": 200, "body": "from b"}}}]
    listeners = [
        {"name": "a", "hostname": "a.test", "protocol": "HTTPS", "tls": tls(pki, "a"),
         "routes": echo_routes(upstream.port)},
        {"name": "b", "hostname": "b.test", "protocol": "HTTPS", "tls": tls(pki, "b"),
         "routes": direct},
        {"name": "wild", "hostname": "*.wild.test", "protocol": "HTTPS",
         "tls": tls(pki, "wild"), "routes": echo_routes(upstream.port)},
    ]
    return module_gateway(
        gateway_yaml([{"port": 0, "listeners": listeners}],
                     frontendPolicies={"tls": {"handshakeTimeout": "1s"}})
    )


@dataclass
class Profiles:
    mtls: int
    tls13: int
    tls12: int
    llm: int
    mtls_sni: int  # a.test trusts the CA's clients, b.test the rogue CA's


@pytest.fixture(scope="module")
def profiles(
    module_gateway: GatewayFactory, pki: Pki, upstream: Upstream, tls_upstream: Process,
    certs: Certs,
) -> Profiles:
    ports = Profiles(*(unused_port() for _ in range(5)))
    llm_route = ai_route(tls_upstream.port, rewrite_path="/compatibility/v1/chat/completions",
                         ca_path=certs.ca_path)

    def bind(port: int, listener_tls: dict[str, object], routes: list[Any]) -> dict[str, Any]:
        listener = {"protocol": "HTTPS", "tls": listener_tls, "routes": routes}
        return {"port": port, "listeners": [listener]}

    binds = [
        bind(ports.mtls, tls(pki, "local", root=pki.path("ca.pem")), echo_routes(upstream.port)),
        bind(ports.tls13, tls(pki, "local", minTLSVersion="TLS_V1_3"), echo_routes(upstream.port)),
        bind(ports.tls12, tls(pki, "local", maxTLSVersion="TLS_V1_2"), echo_routes(upstream.port)),
        bind(ports.llm, tls(pki, "local"), [llm_route]),
        {"port": ports.mtls_sni, "listeners": [
            {"hostname": name, "protocol": "HTTPS", "routes": echo_routes(upstream.port),
             "tls": tls(pki, name[0], root=pki.path(root))}
            for name, root in (("a.test", "ca.pem"), ("b.test", "rogue-ca.pem"))
        ]},
    ]
    config = gateway_yaml(binds).replace("'$UPSTREAM_KEY'", '"$UPSTREAM_KEY"')
    module_gateway(config, env={"UPSTREAM_KEY": UPSTREAM_KEY})
    return ports


def get(
    port: int, context: ssl.SSLContext, *, sni: str = "localhost", host: str | None = None,
    path: str = "/",
) -> httpx.Response:
    """GET over TLS to 127.0.0.1:port with `sni` as the server name (verified against it)."""
    with httpx.Client(verify=context, timeout=DEADLINE) as client:
        return client.get(
            f"https://127.0.0.1:{port}{path}",
            headers={"host": host or sni},
            extensions={"sni_hostname": sni},
        )


def handshake(port: int, context: ssl.SSLContext, sni: str | None) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=DEADLINE)
    try:
        return context.wrap_socket(raw, server_hostname=sni)
    except BaseException:
        raw.close()
        raise


def served_names(port: int, pki: Pki, sni: str) -> list[str]:
    with handshake(port, pki.client_context(), sni) as conn:
        cert = conn.getpeercert()
        assert cert is not None
        names: tuple[tuple[str, str], ...] = cert["subjectAltName"]  # type: ignore[assignment]
        return [value for kind, value in names if kind == "DNS"]


# -- SNI: the certificate, the listener, 421 and 404 ----------------------------------------------


def test_sni_selects_each_listeners_certificate(sni_gw: Process, pki: Pki) -> None:
    assert served_names(sni_gw.port, pki, "a.test") == ["a.test"]
    assert served_names(sni_gw.port, pki, "b.test") == ["b.test"]
    assert served_names(sni_gw.port, pki, "x.wild.test") == ["*.wild.test"]


def test_each_listener_serves_its_routes(sni_gw: Process, pki: Pki) -> None:
    a = get(sni_gw.port, pki.client_context(), sni="a.test")
    assert a.status_code == 200
    assert a.json()["method"] == "GET"  # the echo upstream behind listener a
    b = get(sni_gw.port, pki.client_context(), sni="b.test")
    assert (b.status_code, b.text) == (200, "from b")
    wild = get(sni_gw.port, pki.client_context(), sni="x.wild.test", path="/w")
    assert (wild.status_code, wild.json()["target"]) == (200, "/w")


def test_host_of_another_tls_listener_is_misdirected(sni_gw: Process, pki: Pki) -> None:
    response = get(sni_gw.port, pki.client_context(), sni="a.test", host="b.test")
    assert (response.status_code, response.text) == (421, "misdirected request")
    # The connection stays usable: the next request with the right Host is served.
    with httpx.Client(verify=pki.client_context(), timeout=DEADLINE) as client:
        url = f"https://127.0.0.1:{sni_gw.port}/"
        ext = {"sni_hostname": "a.test"}
        assert client.get(url, headers={"host": "b.test"}, extensions=ext).status_code == 421
        assert client.get(url, headers={"host": "a.test:443"}, extensions=ext).status_code == 200


def test_host_matching_only_the_sni_listener_is_served(sni_gw: Process, pki: Pki) -> None:
    # SNI picks *.wild.test, but no other listener matches b.wild.test: served.
    ok = get(sni_gw.port, pki.client_context(), sni="a.wild.test", host="b.wild.test")
    assert ok.status_code == 200


def test_host_of_no_listener_is_not_found(sni_gw: Process, pki: Pki) -> None:
    response = get(sni_gw.port, pki.client_context(), sni="a.test", host="c.test")
    assert (response.status_code, response.text) == (404, "route not found")


@pytest.mark.parametrize("sni", ["c.test", None])
def test_sni_of_no_listener_fails_the_handshake(
    sni_gw: Process, pki: Pki, sni: str | None
) -> None:
    context = pki.client_context()
    context.check_hostname = False
    with pytest.raises((ssl.SSLError, ConnectionError)):
        handshake(sni_gw.port, context, sni).close()


def test_curl_with_cacert(sni_gw: Process, pki: Pki) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    port = sni_gw.port
    base = [curl, "-sS", "--cacert", pki.path("ca.pem"), "-w", " %{http_code} %{http_version}",
            "--resolve", f"b.test:{port}:127.0.0.1"]
    out = subprocess.run([*base, f"https://b.test:{port}/"], capture_output=True, text=True,
                         timeout=DEADLINE, check=True).stdout
    assert out == "from b 200 1.1"  # ALPN: http/1.1 even though curl offers h2
    out = subprocess.run([*base, "-H", "Host: a.test", f"https://b.test:{port}/"],
                         capture_output=True, text=True, timeout=DEADLINE, check=True).stdout
    assert out == "misdirected request 421 1.1"


def test_alpn_is_http11_only(sni_gw: Process, pki: Pki) -> None:
    context = pki.client_context()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with handshake(sni_gw.port, context, "b.test") as conn:
        assert conn.selected_alpn_protocol() == "http/1.1"


# -- Handshake timeout, plain HTTP on the TLS port -------------------------------------------------


@pytest.mark.parametrize("sent", [b"", b"\x16\x03\x01\x02\x00"], ids=["nothing", "partial-hello"])
def test_stalled_handshake_is_cut(sni_gw: Process, pki: Pki, sent: bytes) -> None:
    # handshakeTimeout is 1s; the default (15s) would outlast the DEADLINE read timeout.
    with socket.create_connection(("127.0.0.1", sni_gw.port), timeout=DEADLINE) as sock:
        sock.sendall(sent)
        assert sock.recv(1024) == b""
    assert get(sni_gw.port, pki.client_context(), sni="b.test").status_code == 200


def test_plain_http_to_the_tls_port_is_closed(sni_gw: Process, pki: Pki) -> None:
    with socket.create_connection(("127.0.0.1", sni_gw.port), timeout=DEADLINE) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: b.test\r\n\r\n")
        received = b""
        while chunk := sock.recv(1024):
            received += chunk
    assert not received.startswith(b"HTTP/")
    assert get(sni_gw.port, pki.client_context(), sni="b.test").status_code == 200
    assert "Traceback" not in sni_gw.log.read_text()


# -- mTLS and versions ----------------------------------------------------------------------------


def test_mtls_client_with_certificate(profiles: Profiles, pki: Pki) -> None:
    response = get(profiles.mtls, pki.client_context(cert=pki.client))
    assert response.status_code == 200


@pytest.mark.parametrize("which", ["none", "rogue"])
def test_mtls_client_without_valid_certificate_fails(
    profiles: Profiles, pki: Pki, which: str
) -> None:
    cert = None if which == "none" else pki.rogue_client
    with pytest.raises(httpx.TransportError):
        get(profiles.mtls, pki.client_context(cert=cert))


def test_mtls_roots_per_sni_listener(profiles: Profiles, pki: Pki) -> None:
    port = profiles.mtls_sni
    assert get(port, pki.client_context(cert=pki.client), sni="a.test").status_code == 200
    assert get(port, pki.client_context(cert=pki.rogue_client), sni="b.test").status_code == 200
    for sni, cert in (("a.test", pki.rogue_client), ("b.test", pki.client), ("b.test", None)):
        with pytest.raises(httpx.TransportError):
            get(port, pki.client_context(cert=cert), sni=sni)


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3])
def test_version_limits(profiles: Profiles, pki: Pki, version: ssl.TLSVersion) -> None:
    served, refused = (
        (profiles.tls12, profiles.tls13) if version == ssl.TLSVersion.TLSv1_2
        else (profiles.tls13, profiles.tls12)
    )
    context = pki.client_context(low=version, high=version)
    assert get(served, context).status_code == 200
    with handshake(served, context, "localhost") as conn:
        assert conn.version() == ("TLSv1.2" if version == ssl.TLSVersion.TLSv1_2 else "TLSv1.3")
    with pytest.raises(httpx.ConnectError):
        get(refused, context)


def test_default_versions_negotiate_tls13(profiles: Profiles, pki: Pki) -> None:
    with handshake(profiles.llm, pki.client_context(), "localhost") as conn:
        assert conn.version() == "TLSv1.3"


# -- The openai SDK over HTTPS --------------------------------------------------------------------


def test_openai_sdk_over_https(profiles: Profiles, pki: Pki) -> None:
    http_client = httpx.Client(verify=pki.client_context(), timeout=DEADLINE * 2)
    with openai.OpenAI(
        base_url=f"https://localhost:{profiles.llm}/v1", api_key="client-key", max_retries=0,
        http_client=http_client,
    ) as client:
        reply = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from the mock LLM."
        stream = client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
        assert text == "Hello from the mock LLM."
