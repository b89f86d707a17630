"""OpenTelemetry tracing: spans reach an OTLP receiver started here (HTTP and gRPC), the
client's W3C trace context is continued upstream, sampling is followed, and a collector that
is down costs requests nothing (they all complete)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

pytest.importorskip("opentelemetry.sdk")
grpc = pytest.importorskip("grpc")

from opentelemetry.proto.collector.trace.v1 import (  # noqa: E402
    trace_service_pb2,
    trace_service_pb2_grpc,
)

from tests.e2e.conftest import (  # noqa: E402
    DEADLINE,
    QUIET,
    GatewayFactory,
    Process,
    Upstream,
    poll,
    unused_port,
)

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
MESSAGES = [{"role": "user", "content": "Trace this call"}]


class Received:
    """Spans a receiver decoded: (resource attributes, span) pairs, attributes as a dict."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest,
            headers: dict[str, str]) -> None:  # fmt: skip
        with self.lock:
            self.headers.append(headers)
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append({
                            "name": span.name,
                            "kind": span.kind,
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "attributes": _attributes(span.attributes),
                            "status": (span.status.code, span.status.message),
                            "scope": scope_spans.scope.name,
                            "resource": resource,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                        })  # fmt: skip

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.spans)


def _attributes(values: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kv in values:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


@pytest.fixture
def http_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers["content-length"]))
            request = trace_service_pb2.ExportTraceServiceRequest()
            request.ParseFromString(body)
            received.add(request, {k.lower(): v for k, v in self.headers.items()})
            reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
            self.send_response(200)
            self.send_header("content-type", "application/x-protobuf")
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], received
    server.shutdown()
    server.server_close()


@pytest.fixture
def grpc_receiver() -> Iterator[tuple[int, Received]]:
    received = Received()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
        def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC's naming)
            received.add(request, dict(context.invocation_metadata()))
            return trace_service_pb2.ExportTraceServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port, received
    server.stop(None)


def tracing_config(tracing: str, backend: str, *, frontend: bool = False) -> str:
    """A quiet gateway with one route to `backend` (a YAML flow mapping) and `tracing`
    (indented YAML) under `config:` or `frontendPolicies:`."""
    if frontend:
        return QUIET + "frontendPolicies:\n  tracing:\n" + tracing + _binds(backend)
    return QUIET + "  tracing:\n" + tracing + _binds(backend)


def _binds(backend: str) -> str:
    return f"""binds:
- port: 0
  listeners:
  - routes:
    - matches: [{{path: {{pathPrefix: /v1}}}}]
      backends: [{backend}]
"""


def spans_of(received: Received, count: int) -> list[dict[str, Any]]:
    return poll(received.snapshot, lambda found: len(found) >= count, what=f"{count} spans")


def test_llm_call_span_with_gen_ai_attributes_over_otlp_http(
    gateway: GatewayFactory, plain_upstream: Process, http_receiver: tuple[int, Received]
) -> None:
    port, received = http_receiver
    backend = (
        f"{{ai: {{name: mock, hostOverride: 'localhost:{plain_upstream.port}', "
        "provider: {openAI: {}}}}"
    )
    tracing = f"""    otlpEndpoint: http://127.0.0.1:{port}
    otlpProtocol: http
    headers: {{x-collector-token: secret-1}}
    randomSampling: true
    fields:
      add:
        gen_ai.system: 'llm.provider'
        llm.usage.total_tokens: 'llm.totalTokens'
        llm.is_streaming: 'llm.streaming'
        gen_ai.completion: >-
          flattenRecursive(["a", "b"].map(c, {{"role": "assistant", "content": c}}))
      remove: [src.addr]
"""
    gw = gateway(tracing_config(tracing, backend))
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
        response = client.post("/v1/chat/completions",
                               json={"model": "gpt-4o-mini", "messages": MESSAGES,
                                     "temperature": 0.25, "max_tokens": 32})  # fmt: skip
        assert response.status_code == 200
        stream = client.post("/v1/chat/completions",
                             json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True})
        assert stream.status_code == 200
    first, second = sorted(spans_of(received, 2), key=lambda s: s["start"])
    assert received.headers[0]["x-collector-token"] == "secret-1"
    assert first["name"] == "POST /v1/*"
    assert first["kind"] == 2  # SPAN_KIND_SERVER
    assert first["scope"] == "agentgateway"
    assert first["resource"]["service.name"] == "agentgateway"
    assert first["parent_span_id"] == ""  # the gateway started the trace
    attrs = first["attributes"]
    assert attrs["http.method"] == "POST"
    assert attrs["http.path"] == "/v1/chat/completions"
    assert attrs["http.status"] == 200
    assert attrs["url.scheme"] == "http"
    assert attrs["network.protocol.version"] == "1.1"
    assert attrs["trace.id"] == first["trace_id"]
    assert attrs["span.id"] == first["span_id"]
    assert "src.addr" not in attrs
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"]
    assert attrs["gen_ai.request.temperature"] == 0.25
    assert attrs["gen_ai.request.max_tokens"] == 32
    assert attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["gen_ai.usage.output_tokens"] > 0
    assert attrs["llm.usage.total_tokens"] == (
        attrs["gen_ai.usage.input_tokens"] + attrs["gen_ai.usage.output_tokens"]
    )
    assert attrs["llm.is_streaming"] is False
    assert attrs["gen_ai.completion.0.role"] == "assistant"
    assert attrs["gen_ai.completion.1.content"] == "b"
    assert first["end"] > first["start"]
    streamed = second["attributes"]
    assert streamed["agw.ai.time_to_first_token"] > 0
    assert streamed["gen_ai.usage.output_tokens"] > 0


def test_client_trace_continues_upstream_over_otlp_grpc(
    gateway: GatewayFactory, grpc_receiver: tuple[int, Received]
) -> None:
    port, received = grpc_receiver
    tracing = f"""    otlpEndpoint: http://127.0.0.1:{port}
"""
    with Upstream() as upstream:
        gw = gateway(tracing_config(tracing, f'{{host: "127.0.0.1:{upstream.port}"}}'))
        parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
            response = client.get(
                "/v1/items", headers={"traceparent": parent, "tracestate": "vendor=abc"}
            )
            assert response.status_code == 200
        (span,) = spans_of(received, 1)
        (request,) = upstream.requests
    sent = request.header("traceparent")
    assert sent == f"00-{CLIENT_TRACE}-{span['span_id']}-01"
    assert span["span_id"] != CLIENT_SPAN
    assert span["trace_id"] == CLIENT_TRACE
    assert span["parent_span_id"] == CLIENT_SPAN
    assert request.header("tracestate") == "vendor=abc"
    assert span["name"] == "GET /v1/*"
    assert span["attributes"]["http.status"] == 200


def test_sampling_decisions(
    gateway: GatewayFactory, http_receiver: tuple[int, Received]
) -> None:
    """randomSampling false: a request without a trace is neither traced nor touched; a
    client's trace is followed (clientSampling's default), its "not sampled" flag too."""
    port, received = http_receiver
    tracing = f"""    otlpEndpoint: http://127.0.0.1:{port}
    otlpProtocol: http
    randomSampling: false
"""
    with Upstream() as upstream:
        gw = gateway(tracing_config(tracing, f'{{host: "127.0.0.1:{upstream.port}"}}'))
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
            assert client.get("/v1/untraced").status_code == 200
            unsampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"
            response = client.get("/v1/unsampled", headers={"traceparent": unsampled})
            assert response.status_code == 200
            malformed = "00-xyz-00f067aa0ba902b7-01"
            assert client.get("/v1/bad", headers={"traceparent": malformed}).status_code == 200
            sampled = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
            assert client.get("/v1/sampled", headers={"traceparent": sampled}).status_code == 200
        (span,) = spans_of(received, 1)
        untraced, not_sampled, bad, traced = upstream.requests
    assert span["attributes"]["http.path"] == "/v1/sampled"
    assert untraced.header("traceparent") is None
    # Continued with the gateway's span id, still "not sampled": no span exported for it.
    got = not_sampled.header("traceparent")
    assert got is not None and got.startswith(f"00-{CLIENT_TRACE}-") and got.endswith("-00")
    assert got != unsampled
    assert bad.header("traceparent") == malformed  # not a trace context: forwarded as is
    assert traced.header("traceparent") == f"00-{CLIENT_TRACE}-{span['span_id']}-01"


def test_frontend_policy_tracing_with_attributes_and_filter(
    gateway: GatewayFactory, http_receiver: tuple[int, Received]
) -> None:
    port, received = http_receiver
    tracing = f"""    host: 127.0.0.1:{port}
    protocol: http
    randomSampling: "1.0"
    filter: 'response.code != 404'
    attributes:
      span.name: '"custom " + request.method'
      team: 'request.headers["x-team"]'
    remove: [http.host]
"""
    with Upstream() as upstream:
        gw = gateway(
            tracing_config(tracing, f'{{host: "127.0.0.1:{upstream.port}"}}', frontend=True)
        )
        with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
            assert client.get("/v1/kept", headers={"x-team": "blue"}).status_code == 200
            assert client.get("/other").status_code == 404  # no route: no span either way
            assert client.get("/v1/kept2").status_code == 200
    spans = sorted(spans_of(received, 2), key=lambda s: s["start"])
    assert [s["name"] for s in spans] == ["custom GET", "custom GET"]
    assert spans[0]["attributes"]["team"] == "blue"
    assert "team" not in spans[1]["attributes"]
    assert "http.host" not in spans[0]["attributes"]


def test_dead_collector_does_not_fail_requests(gateway: GatewayFactory) -> None:
    dead = unused_port()
    for protocol in ("grpc", "http"):
        tracing = f"""    otlpEndpoint: http://127.0.0.1:{dead}
    otlpProtocol: {protocol}
    randomSampling: true
"""
        with Upstream() as upstream:
            gw = gateway(tracing_config(tracing, f'{{host: "127.0.0.1:{upstream.port}"}}'))
            with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", timeout=DEADLINE) as client:
                statuses = [client.get(f"/v1/r{i}").status_code for i in range(200)]
            assert statuses == [200] * 200
            assert len(upstream.requests) == 200
            assert gw.stop() == 0  # drains, and the exporter's bounded wait ends


def test_reload_follows_frontend_tracing_and_keeps_config_tracing(
    gateway: GatewayFactory, http_receiver: tuple[int, Received]
) -> None:
    """`frontendPolicies.tracing` follows a reload (agentgateway reads it with the routes);
    `config.tracing` is read at start-up only: a change is reported, the running one kept."""
    port, received = http_receiver
    on = f"    host: 127.0.0.1:{port}\n    protocol: http\n    randomSampling: true\n"
    off = on.replace("randomSampling: true", "randomSampling: false")
    with Upstream() as upstream:
        backend = f'{{host: "127.0.0.1:{upstream.port}"}}'
        gw = gateway(tracing_config(on, backend, frontend=True))
        path = gateway.tmp / f"gateway{gateway.started.index(gw)}.yaml"
        url = f"http://127.0.0.1:{gw.port}/v1/x"
        assert httpx.get(url, timeout=DEADLINE).status_code == 200
        spans_of(received, 1)
        assert upstream.requests[-1].header("traceparent") is not None
        path.write_text(tracing_config(off, backend, frontend=True))

        def untraced() -> bool:
            assert httpx.get(url, timeout=DEADLINE).status_code == 200
            return upstream.requests[-1].header("traceparent") is None

        poll(untraced, bool, what="a request the new policy does not trace")
        static = f"    otlpEndpoint: http://127.0.0.1:{port}\n    randomSampling: true\n"
        path.write_text(tracing_config(static, backend))
        poll(gw.output, lambda out: "config.tracing changed" in out, what="the restart notice")
        assert httpx.get(url, timeout=DEADLINE).status_code == 200
        assert upstream.requests[-1].header("traceparent") is None  # still the running one
