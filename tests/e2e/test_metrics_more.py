"""The rest of agentgateway's metrics, the `process_*` metrics, and the admin's `/logging`.

Each test runs the gateway by its CLI, drives it as a client would and reads `/metrics` as
Prometheus would: connection and byte counters match what the client sent and received, TLS
handshakes and upstream connects are timed per listener and transport, every worker reports
its own process metrics, and `POST /logging?level=...` changes what every worker logs.
Names and label sets are agentgateway's (crates/agentgateway/src/telemetry/metrics.rs).
"""

from __future__ import annotations

import re
import socket
import ssl
import time

import httpx

from tests.e2e.conftest import (
    DEADLINE,
    Certs,
    GatewayFactory,
    Process,
    RawClient,
    Sample,
    Upstream,
    UpstreamConnection,
    access_log_lines,
    http_request,
    metric_total,
    poll,
    scrape_metrics,
    wait_until,
)

STATS = """config:
  statsAddr: 127.0.0.1:0
  adminAddr: "off"
  readinessAddr: "off"
"""
ADMIN = """config:
  statsAddr: 127.0.0.1:0
  adminAddr: 127.0.0.1:0
  readinessAddr: "off"
"""
PAYLOAD = b"0123456789" * 30  # 300 bytes


def plain_config(upstream_port: int, head: str = STATS) -> str:
    return head + f"""binds:
- port: 0
  listeners:
  - name: main
    routes:
    - name: api
      backends: [{{host: "127.0.0.1:{upstream_port}"}}]
"""


def serve_chunked(conn: UpstreamConnection) -> None:
    """Answers each request with PAYLOAD in three chunks (framing bytes on top of it)."""
    while (request := conn.read_request()) is not None:
        head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        if request.method == "HEAD":
            conn.send(head)
            continue
        chunks = b"".join(b"%x\r\n%s\r\n" % (100, PAYLOAD[i : i + 100]) for i in (0, 100, 200))
        conn.send(head + chunks + b"0\r\n\r\n")


def serve_payload(conn: UpstreamConnection) -> None:
    while conn.read_request() is not None:
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(PAYLOAD), PAYLOAD))


def one(samples: list[Sample], name: str, **labels: str) -> Sample:
    found = [
        s for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def stats(gw: Process) -> list[Sample]:
    return scrape_metrics(gw.extra_ports["stats"])


def admin_port(gw: Process) -> int:
    pattern = re.compile(r"admin listening on \S+ port (\d+)")
    found: list[int] = []

    def listening() -> bool:
        match = pattern.search(gw.output())
        if match:
            found.append(int(match[1]))
        return bool(match)

    wait_until(listening, what="the admin port")
    return found[0]


def test_connections_and_bytes_match_what_the_client_sent_and_received(
    gateway: GatewayFactory,
) -> None:
    with Upstream(serve_payload) as upstream:
        gw = gateway(plain_config(upstream.port), expect_stats=True)
        sent = received = 0
        for _ in range(2):  # two connections, two requests each
            with RawClient(gw.port) as client:
                for body in (b"", b"x" * 1000):
                    request = http_request("POST", "/v1/x", body=body)
                    response = client.request(request)
                    assert response.status == 200 and response.body == PAYLOAD
                    sent += len(request)
                    received += len(response.raw)
        # agentgateway's labels for an HTTP bind: the bind only (no listener is chosen yet).
        labels = {"bind": "bind/0", "gateway": "unknown", "listener": "unknown",
                  "protocol": "http"}  # fmt: skip
        # Counted as each connection closes (as agentgateway does).
        samples = poll(
            lambda: stats(gw),
            lambda s: metric_total(s, "agentgateway_downstream_received_bytes_total") == sent,
        )
        # The harness's own connection (made to see the port accepting) is the third.
        assert one(samples, "agentgateway_downstream_connections_total", **labels).value == 3
        assert one(samples, "agentgateway_downstream_received_bytes_total", **labels).value == sent
        assert one(samples, "agentgateway_downstream_sent_bytes_total", **labels).value == received
        route = {"bind": "bind/0", "listener": "main", "route": "default/api"}
        # The body bytes the client got, under the request's labels.
        counted = one(samples, "agentgateway_response_bytes_total", method="POST", status="200",
                      **route)  # fmt: skip
        assert counted.value == 4 * len(PAYLOAD)
        assert counted.labels["backend"] == one(
            samples, "agentgateway_requests_total", **route
        ).labels["backend"]
        # One processing observation per proxied request, labelled by backend and route only.
        for name in ("agentgateway_request_processing_seconds",
                     "agentgateway_response_processing_seconds"):  # fmt: skip
            count = one(samples, f"{name}_count", **route)
            assert count.value == 4
            assert set(count.labels) == {
                "backend", "bind", "gateway", "listener", "route", "route_rule"
            }
            assert 0 < one(samples, f"{name}_sum", **route).value < 4 * 0.25
        calls = one(samples, "agentgateway_upstream_call_duration_seconds_count",
                    kind="Primary", subtype="Http")  # fmt: skip
        assert calls.value == 4
        # The upstream connection is pooled: opened once, reused by the other requests.
        connects = one(
            samples, "agentgateway_upstream_connect_duration_seconds_count", transport="plaintext"
        )
        assert connects.value == upstream.accepted == 1


def test_response_bytes_count_the_payload_of_a_chunked_body(gateway: GatewayFactory) -> None:
    with Upstream(serve_chunked) as upstream:
        gw = gateway(plain_config(upstream.port), expect_stats=True)
        with RawClient(gw.port) as client:
            response = client.request(http_request("GET", "/chunked"))
            assert response.status == 200 and response.chunked
            assert response.body == PAYLOAD
            assert len(response.raw) > len(PAYLOAD) + 30  # the framing the client also got
            response = client.request(http_request("HEAD", "/chunked"), head_request=True)
            assert response.status == 200 and response.body == b""
        samples = stats(gw)
        # Payload only, as agentgateway counts body data; a HEAD response has none.
        assert one(samples, "agentgateway_response_bytes_total", method="GET").value == 300
        counted = [s for s in samples if s.name == "agentgateway_response_bytes_total"]
        assert [s.labels["method"] for s in counted] == ["GET"]


def https_config(certs: Certs, upstream_port: int) -> str:
    return STATS + f"""binds:
- port: 0
  listeners:
  - name: secure
    protocol: HTTPS
    tls: {{cert: "{certs.cert_path}", key: "{certs.key_path}"}}
    routes:
    - backends: [{{host: "127.0.0.1:{upstream_port}"}}]
"""


def test_tls_handshakes_are_timed_per_listener(gateway: GatewayFactory, certs: Certs) -> None:
    with Upstream(serve_payload) as upstream:
        gw = gateway(https_config(certs, upstream.port), expect_stats=True)
        context = ssl.create_default_context(cafile=str(certs.ca_path))
        sent = 0
        for _ in range(3):
            raw = socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE)
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                request = http_request("GET", "/", host="localhost")
                tls.sendall(request)
                sent += len(request)
                data = b""
                while not data.endswith(PAYLOAD):
                    chunk = tls.recv(65536)
                    assert chunk
                    data += chunk
        # A client that never finishes its handshake is neither timed nor counted.
        with socket.create_connection(("127.0.0.1", gw.port), timeout=DEADLINE) as idle:
            idle.sendall(b"\x16\x03\x01")
        labels = {"bind": "bind/0", "gateway": "default/default",
                  "listener": "secure", "protocol": "https"}  # fmt: skip
        samples = poll(
            lambda: stats(gw),
            lambda s: metric_total(s, "agentgateway_downstream_received_bytes_total") == sent,
        )
        name = "agentgateway_tls_handshake_duration_seconds"
        assert one(samples, f"{name}_count", **labels).value == 3
        assert 0 < one(samples, f"{name}_sum", **labels).value < 3 * DEADLINE
        buckets = [s for s in samples if s.name == f"{name}_bucket"]
        assert [s.labels["le"] for s in buckets][:3] == ["0.0005", "0.0015", "0.0043"]
        assert one(samples, "agentgateway_downstream_connections_total", **labels).value == 3
        # Decrypted bytes, as the application reads them.
        assert one(
            samples, "agentgateway_downstream_received_bytes_total", **labels
        ).value == sent


def test_upstream_connects_are_timed_per_transport(
    gateway: GatewayFactory, certs: Certs, tls_upstream: Process
) -> None:
    with Upstream(serve_payload) as plain:
        gw = gateway(STATS + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: tls
      matches: [{{path: {{pathPrefix: /tls}}}}]
      policies:
        urlRewrite: {{path: {{prefix: /echo}}}}
        backendTLS: {{root: "{certs.ca_path}"}}
      backends: [{{host: "localhost:{tls_upstream.port}"}}]
    - name: plain
      backends: [{{host: "127.0.0.1:{plain.port}"}}]
""", expect_stats=True)
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
            assert client.get("/tls/a").status_code == 200
            assert client.get("/plain").status_code == 200
        samples = stats(gw)
        name = "agentgateway_upstream_connect_duration_seconds"
        tls = one(samples, f"{name}_count", transport="tls")
        plaintext = one(samples, f"{name}_count", transport="plaintext")
        assert tls.value == plaintext.value == 1
        # The TLS handshake is part of the connect.
        assert one(samples, f"{name}_sum", transport="tls").value > 0
        assert one(samples, "agentgateway_upstream_call_duration_seconds_count",
                   kind="Primary", subtype="Http").value == 2  # fmt: skip


def test_build_info_and_process_metrics_per_worker(gateway: GatewayFactory) -> None:
    with Upstream(serve_payload) as upstream:
        gw = gateway(plain_config(upstream.port), workers=2, expect_stats=True)
        samples = poll(
            lambda: stats(gw),
            lambda s: len([x for x in s if x.name == "process_open_fds"]) == 2,
        )
        build = one(samples, "agentgateway_build_info")
        assert build.value == 1 and build.labels["tag"]
        now = time.time()
        for worker in ("0", "1"):
            assert one(samples, "process_resident_memory_bytes", worker=worker).value > 1 << 20
            assert one(samples, "process_virtual_memory_bytes", worker=worker).value > 1 << 20
            # Its listening sockets, its stdio, its event loop: a handful at least.
            assert one(samples, "process_open_fds", worker=worker).value >= 4
            assert one(samples, "process_max_fds", worker=worker).value >= 256
            started = one(samples, "process_start_time_seconds", worker=worker).value
            assert now - 120 < started <= now + 1
            assert one(samples, "process_cpu_seconds_total", worker=worker).value >= 0
        # The workers' own numbers, not the stats process's or the supervisor's.
        assert {s.labels["worker"] for s in samples if s.name == "process_cpu_seconds_total"} \
            == {"0", "1"}


def logging_post(port: int, query: str = "") -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{port}/logging{query}", timeout=DEADLINE)


def test_logging_endpoint_changes_what_every_worker_logs(gateway: GatewayFactory) -> None:
    with Upstream(serve_payload) as upstream:
        gw = gateway(plain_config(upstream.port, ADMIN), workers=2, expect_stats=True)
        port = admin_port(gw)
        listed = logging_post(port)
        assert listed.status_code == 200
        assert listed.text == "current log level is info\n"
        assert httpx.get(f"http://127.0.0.1:{port}/logging", timeout=DEADLINE).status_code == 405
        bad = logging_post(port, "?level=loud")
        assert bad.status_code == 400 and "Invalid level provided: loud" in bad.text

        def send(path: str, connections: int = 4) -> None:
            # Several connections: with two workers, each one takes some.
            for _ in range(connections):
                with RawClient(gw.port) as client:
                    assert client.request(http_request("GET", path)).status == 200

        def logged(path: str) -> int:
            return len([line for line in access_log_lines(gw.output())
                        if line.get("http.path") == path])

        send("/before")
        wait_until(lambda: logged("/before") == 4, what="access lines at info")
        # Answered once every worker applied it: from here on, nothing at info is logged.
        changed = logging_post(port, "?level=warn")
        assert changed.text == "current log level is warn\n"
        send("/while-warn")
        # The access log alone, by agentgateway's target name.
        assert logging_post(port, "?level=info,request=off").text == (
            "current log level is info,request=off\n"
        )
        send("/while-request-off")
        assert logging_post(port, "?reset").text == "current log level is info\n"
        send("/after-reset")
        wait_until(lambda: logged("/after-reset") == 4, what="access lines after the reset")
        assert logged("/while-warn") == 0
        assert logged("/while-request-off") == 0
        assert "log level set to warn" in gw.output()
