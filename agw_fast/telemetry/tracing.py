"""OpenTelemetry spans, one per traced request, exported over OTLP in batches off the loop.

Each worker builds its `Tracer` after the fork (`start_tracer`): the OTLP exporter (gRPC or
HTTP/protobuf) behind the SDK's `BatchSpanProcessor`, whose own thread encodes and sends
spans. A request pays for tracing only when the config has it: `Tracer.begin` reads the
client's `traceparent`, samples (policies/tracing.py) and, for a sampled request, puts the
gateway's span into the upstream's `traceparent`; `PendingSpan.finish`, with the request's
`RequestRecord`, builds the span and queues it (a bounded queue: when the collector is
down or slow, spans are dropped, requests never wait).

The span mirrors agentgateway's (telemetry/trc.rs `Tracer::send`, log.rs): kind SERVER,
scope `agentgateway`, named `{method} {path match}` (`/api/*` for a prefix), or by an
added `span.name` attribute; its attributes are the access log's fields (`http.*`,
`gen_ai.*` from the OpenTelemetry GenAI conventions, `agw.ai.time_to_first_token`...)
with `url.scheme` and `network.protocol.version`, less `remove`d ones, plus the added
ones (CEL; `flatten`/`flattenRecursive` values expand into `name.0`, `name.key`...).
A request that failed has an error status carrying the error.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import threading
import time
from typing import TYPE_CHECKING, Any

from agw_fast.config.model import PathMatch, TracingPolicy
from agw_fast.core.cel import FLATTEN_MARKERS, LOG_VARIABLES, VARIABLES, EvaluationError, activation
from agw_fast.core.reason import Reason
from agw_fast.log import logger
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.tracing import (
    CompiledTracing,
    compile_tracing,
    format_traceparent,
    parse_traceparent,
)
from agw_fast.telemetry.recorder import log_variables

if TYPE_CHECKING:
    from agw_fast.llm.exchange import LLMOutcome
    from agw_fast.policies.request import PolicyRequest
    from agw_fast.telemetry.record import RequestRecord

__all__ = ["PendingSpan", "Tracer", "start_tracer"]

SCOPE = "agentgateway"
EXPORT_TIMEOUT = 5.0  # seconds one export may take (the SDK retries within it)
SHUTDOWN_WAIT = 2.0  # seconds a stopping worker gives the exporter to send what is queued
_TRACEPARENT = b"traceparent"
_VERSIONS = {"HTTP/1.1": "1.1"}  # agentgateway sets network.protocol.version for 1.1 and 2


class Tracer:
    """One worker's tracing: the compiled policy and the SDK's batch processor."""

    __slots__ = ("compiled", "processor", "resource", "scope", "_kinds")

    def __init__(self, compiled: CompiledTracing, processor: Any, resource: Any) -> None:
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanKind

        self.compiled = compiled
        self.processor = processor
        self.resource = resource
        self.scope = InstrumentationScope(SCOPE)
        self._kinds = SpanKind.SERVER

    def begin(
        self,
        headers: list[tuple[bytes, bytes]],
        method: bytes,
        path_match: PathMatch,
        request: PolicyRequest | None,
    ) -> PendingSpan | None:
        """Sample the request; for a sampled one, the span it gets, written into `headers`
        as the upstream's `traceparent`. None: not traced (headers untouched)."""
        parent = None
        index = -1
        for i, (name, value) in enumerate(headers):
            if name == _TRACEPARENT:
                parent = parse_traceparent(value)
                index = i
                break
        compiled = self.compiled
        sampler = compiled.random if parent is None else compiled.client
        bound = None
        if sampler.program is not None:
            bound = activation(
                {} if request is None else cel_variables(request, sampler.program.uses),
                VARIABLES,
            )
        if not sampler.sample(bound):
            return None
        span_id = random.getrandbits(64) or 1
        if parent is None:
            span = PendingSpan(self, 0, random.getrandbits(128) or 1, span_id, 0, 1)
        else:
            version, trace_id, parent_id, flags = parent
            span = PendingSpan(self, version, trace_id, span_id, parent_id, flags)
        line = (_TRACEPARENT, format_traceparent(span.version, span.trace_id, span_id, span.flags))
        if index < 0:
            headers.append(line)
        else:
            # agentgateway's `insert` replaces every traceparent field with its own.
            headers[:] = [h for h in headers if h[0] != _TRACEPARENT]
            headers.insert(index, line)
        span.name = _span_name(method, path_match)
        return span

    def shutdown(self) -> None:
        """Send what is queued, waiting at most `SHUTDOWN_WAIT` (a daemon thread: a dead
        collector never holds a stopping worker)."""
        done = threading.Thread(target=self.processor.shutdown, daemon=True)
        done.start()
        done.join(SHUTDOWN_WAIT)

    def retire(self) -> None:
        """A reload replaced this tracer: flush and close it in the background."""
        threading.Thread(target=self.processor.shutdown, daemon=True).start()


class PendingSpan:
    """The span of one sampled request, from its head to its last byte."""

    __slots__ = ("flags", "name", "parent_id", "span_id", "trace_id", "tracer", "version")

    def __init__(
        self, tracer: Tracer, version: int, trace_id: int, span_id: int, parent_id: int,
        flags: int,
    ) -> None:  # fmt: skip
        self.tracer = tracer
        self.version = version
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id  # 0: the gateway started the trace
        self.flags = flags
        self.name = ""

    def finish(self, record: RequestRecord) -> None:
        """Build and queue the span; never raises into the proxy."""
        if not self.flags & 1:
            return  # the client's "not sampled" is followed
        try:
            self._emit(record)
        except Exception:
            logger.exception("internal error building a trace span")

    def _emit(self, record: RequestRecord) -> None:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        tracer = self.tracer
        compiled = tracer.compiled
        bound = None
        if compiled.attributes or compiled.filter is not None:
            bound = activation(log_variables(record, compiled.uses), LOG_VARIABLES)
        if compiled.filter is not None and not compiled.filter.evaluate_bool(bound):
            return
        attributes = span_attributes(record, self.trace_id, self.span_id, compiled.remove)
        name = self.name
        for key, program in compiled.attributes:
            value = program.evaluate(bound)
            if value is None or isinstance(value, EvaluationError):
                continue
            if key == "span.name":
                if isinstance(value, str):
                    name = value
                continue
            _add_value(attributes, key, value, False)
        end = time.time_ns()
        start = end - int(record[12] * 1e9)
        error = record[11]
        parent = None
        if self.parent_id:
            parent = SpanContext(
                self.trace_id, self.parent_id, is_remote=True, trace_flags=TraceFlags(self.flags)
            )
        span = ReadableSpan(
            name,
            context=SpanContext(
                self.trace_id, self.span_id, is_remote=False, trace_flags=TraceFlags(self.flags)
            ),
            parent=parent,
            resource=tracer.resource,
            attributes=attributes,
            kind=tracer._kinds,
            status=Status(StatusCode.UNSET) if error is None else Status(StatusCode.ERROR, error),
            start_time=start,
            end_time=end,
            instrumentation_scope=tracer.scope,
        )
        tracer.processor.on_end(span)


def span_attributes(
    record: RequestRecord, trace_id: int, span_id: int, remove: frozenset[str]
) -> dict[str, Any]:
    """The built-in attributes, in agentgateway's order, those without a value left out."""
    (labels, _, endpoint, protocol, method, host, path, version, peer, status, reason,
     _, duration, llm, retries) = record[:15]  # fmt: skip
    values: list[tuple[str, Any]] = [
        ("gateway", labels.gateway),
        ("listener", labels.listener),
        ("route_rule", labels.route_rule),
        ("route", labels.route),
        ("endpoint", endpoint),
        ("src.addr", peer),
        ("http.method", method.decode("latin-1")),
        ("http.host", host.decode("latin-1")),
        ("http.path", path.decode("latin-1")),
        ("http.version", version),
        ("http.status", status or None),
        ("protocol", protocol),
        ("trace.id", f"{trace_id:032x}"),
        ("span.id", f"{span_id:016x}"),
    ]
    if llm is not None:
        values += _llm_attributes(llm, duration)
    values += [
        ("retry.attempt", retries or None),
        ("reason", reason if reason != Reason.UPSTREAM else None),
        ("duration", f"{int(duration * 1000)}ms"),
        ("url.scheme", "http"),
        ("network.protocol.version", _VERSIONS.get(version)),
    ]
    return {k: v for k, v in values if v is not None and k not in remove}


def _llm_attributes(llm: LLMOutcome, duration: float) -> list[tuple[str, Any]]:
    """OpenTelemetry GenAI semantic conventions, as agentgateway sets them (seconds)."""
    ttft, tokens = llm.time_to_first_token, llm.output_tokens
    tpot = None
    if ttft is not None and tokens and tokens > 0 and duration >= ttft:
        tpot = (duration - ttft) / tokens
    return [
        ("gen_ai.operation.name", "embeddings" if llm.route_type == "embeddings" else "chat"),
        ("gen_ai.provider.name", llm.provider),
        ("gen_ai.request.model", llm.request_model),
        ("gen_ai.response.model", llm.response_model),
        ("gen_ai.usage.input_tokens", llm.input_tokens),
        ("gen_ai.usage.cache_read.input_tokens", llm.cached_input_tokens),
        ("gen_ai.usage.output_tokens", llm.output_tokens),
        ("agw.ai.time_to_first_token", ttft),
        ("agw.ai.time_per_output_token", tpot),
        ("gen_ai.request.temperature", llm.temperature),
        ("gen_ai.request.max_tokens", llm.max_tokens),
    ]


def _span_name(method: bytes, path_match: PathMatch) -> str:
    if path_match.kind == "prefix":
        value = path_match.value
        match = "/*" if value == "/" else value.rstrip("/") + "/*"
    else:
        match = path_match.value
    return f"{method.decode('latin-1')} {match}"


def _add_value(attributes: dict[str, Any], key: str, value: object, recursive: bool) -> None:
    """One added attribute; a flatten marker (or, under `flattenRecursive`, any list or
    map) expands into `key.index` / `key.field` attributes (agentgateway's `resolve_value`)."""
    if isinstance(value, dict) and len(value) == 1:
        (marker, inner), = value.items()
        deep = FLATTEN_MARKERS.get(marker) if isinstance(marker, str) else None
        if deep is not None:
            for sub, item in _entries(inner):
                _add_value(attributes, f"{key}.{sub}", item, deep)
            return
    if recursive and isinstance(value, dict | list | tuple):
        for sub, item in _entries(value):
            _add_value(attributes, f"{key}.{sub}", item, True)
        return
    attributes[key] = _otel_value(value)


def _entries(value: object) -> list[tuple[object, object]]:
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list | tuple):
        return list(enumerate(value))
    return []


def _otel_value(value: object) -> Any:
    """A string, integer or float as itself (agentgateway's `to_otel`); anything else as
    its JSON text."""
    if isinstance(value, str | int | float):
        return value
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


# -- start-up ---------------------------------------------------------------------------------


def start_tracer(policy: TracingPolicy | None) -> Tracer | None:
    """The worker's tracer for `policy` (call after the fork: the exporter's thread and
    connections belong to this process), or None when tracing is off."""
    compiled = compile_tracing(policy)
    if compiled is None:
        return None
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    # The SDK logs every failed export; a collector that is down would fill the log.
    logging.getLogger("opentelemetry").setLevel(logging.ERROR)
    processor = BatchSpanProcessor(
        _exporter(compiled.policy), export_timeout_millis=EXPORT_TIMEOUT * 1000
    )
    return Tracer(compiled, processor, _resource(compiled))


def _exporter(policy: TracingPolicy) -> Any:
    headers = dict(policy.headers)
    if policy.protocol == "grpc":
        import grpc
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
            OTLPSpanExporter as GrpcExporter,
        )

        secure = policy.endpoint.startswith("https://")
        return GrpcExporter(
            endpoint=policy.endpoint.split("://", 1)[1],
            insecure=not secure,
            credentials=grpc.ssl_channel_credentials() if secure else None,
            headers=headers or None,
            timeout=EXPORT_TIMEOUT,
        )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpExporter,
    )

    return HttpExporter(
        endpoint=policy.endpoint + policy.otlp_path, headers=headers, timeout=EXPORT_TIMEOUT
    )


def _resource(compiled: CompiledTracing) -> Any:
    """`service.name` (`OTEL_SERVICE_NAME`, else agentgateway's "agentgateway"),
    `service.version`, `OTEL_RESOURCE_ATTRIBUTES`, then the policy's `resources`."""
    from importlib.metadata import PackageNotFoundError, version

    from opentelemetry.sdk.resources import Resource

    attributes: dict[str, Any] = {}
    for pair in os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "").split(","):
        name, sep, text = pair.strip().partition("=")
        if sep and name.strip():
            attributes[name.strip()] = text.strip()
    attributes["service.name"] = os.environ.get("OTEL_SERVICE_NAME") or SCOPE
    try:
        attributes["service.version"] = version("agw-fast")
    except PackageNotFoundError:
        pass
    empty = activation({}, LOG_VARIABLES) if compiled.resources else None
    for key, program in compiled.resources:
        value = program.evaluate(empty)
        if value is not None and not isinstance(value, EvaluationError):
            attributes[key] = _otel_value(value)
    # Resource(), not Resource.create(): no detectors run (they read the environment again).
    return Resource(attributes)
