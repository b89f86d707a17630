"""The Prometheus text exposition (format 0.0.4) of the workers' summed series.

Names and label sets are agentgateway's (crates/agentgateway/src/telemetry/metrics.rs), with
labels in its order: `HTTPLabels` then the flattened `RouteIdentifier`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from agw_fast.telemetry.metrics import (
    CONNECT_DURATION_BUCKETS,
    CONNECTIONS,
    LLM_BOUNDS,
    LLM_DURATION,
    LLM_TPOT,
    LLM_TTFT,
    PROCESSING_BUCKETS,
    RECEIVED_BYTES,
    REQUEST_DURATION_BUCKETS,
    REQUEST_PROCESSING,
    RESPONSE_BYTES,
    RESPONSE_PROCESSING,
    SENT_BYTES,
    TLS_HANDSHAKE,
    TOKENS_CACHE_READ,
    TOKENS_IN,
    TOKENS_OUT,
    RequestKey,
    Snapshot,
)

__all__ = ["CONTENT_TYPE", "render_build_info", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ROUTE_LABELS = ("bind", "gateway", "listener", "route", "route_rule")
_REQUEST_LABELS = ("backend", "protocol", "method", "status", "reason", *_ROUTE_LABELS)
_MINIMAL_LABELS = ("backend", *_ROUTE_LABELS)
_CONNECTION_LABELS = ("bind", "gateway", "listener", "protocol")
_CALL_LABELS = ("kind", "subtype")
_PROCESSING_HISTOGRAMS = (
    (
        REQUEST_PROCESSING,
        "agentgateway_request_processing_seconds",
        "Time from an HTTP request's arrival to its upstream call being made (s)",
    ),
    (
        RESPONSE_PROCESSING,
        "agentgateway_response_processing_seconds",
        "Time from the upstream response's arrival to it being ready for the client (s)",
    ),
)
_GEN_AI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_system",
    "gen_ai_request_model",
    "gen_ai_response_model",
    *_ROUTE_LABELS,
)
_TOKEN_TYPES = (
    (TOKENS_IN, "input"),
    (TOKENS_OUT, "output"),
    (TOKENS_CACHE_READ, "input_cache_read"),
)
_GEN_AI_HISTOGRAMS = (
    (LLM_DURATION, "agentgateway_gen_ai_server_request_duration", "GenAI request duration (s)"),
    (LLM_TTFT, "agentgateway_gen_ai_server_time_to_first_token", "Time to first token (s)"),
    (LLM_TPOT, "agentgateway_gen_ai_server_time_per_output_token", "Time per output token (s)"),
)


def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _count(value: float) -> str:
    return str(int(value))  # counts are whole numbers kept as float64


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _render_histogram(
    out: list[str], name: str, labels: str, hist: list[float], bounds: tuple[float, ...]
) -> None:
    cumulative = 0.0
    for bound, count in zip(bounds, hist, strict=False):
        cumulative += count
        out.append(f'{name}_bucket{{{labels},le="{float(bound)!r}"}} {_count(cumulative)}')
    cumulative += hist[len(bounds)]
    out.append(f'{name}_bucket{{{labels},le="+Inf"}} {_count(cumulative)}')
    out.append(f"{name}_sum{{{labels}}} {_number(hist[-1])}")
    out.append(f"{name}_count{{{labels}}} {_count(cumulative)}")


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


def _request_labels(k: RequestKey) -> str:
    return _labels(
        _REQUEST_LABELS, (k[5], k[6], k[7], str(k[8]) if k[8] else "unknown", k[9], *k[:5])
    )


def render_build_info(tag: str) -> bytes:
    """agentgateway's `build` info metric; the text format has no info type: a gauge of 1."""
    return (
        b"# HELP agentgateway_build_info The gateway's build\n"
        b"# TYPE agentgateway_build_info gauge\n"
        b'agentgateway_build_info{tag="%s"} 1\n' % _escape(tag).encode()
    )


def render_prometheus(snapshots: Iterable[Snapshot]) -> bytes:
    """Sum the workers' snapshots into the text exposition format."""
    total = Snapshot.merge(snapshots)
    requests, llm = total.requests, total.llm
    out: list[str] = []

    request_keys = sorted(requests)
    request_labels = [_request_labels(k) for k in request_keys]
    name = "agentgateway_requests_total"
    _header(out, name, "counter", "The total number of HTTP requests")
    for key, labels in zip(request_keys, request_labels, strict=True):
        out.append(f"{name}{{{labels}}} {_count(sum(requests[key][:-1]))}")
    name = "agentgateway_request_duration_seconds"
    _header(out, name, "histogram", "Duration of HTTP requests in seconds")
    for key, labels in zip(request_keys, request_labels, strict=True):
        _render_histogram(out, name, labels, requests[key], REQUEST_DURATION_BUCKETS)
    retries = total.retries
    if retries:
        # agentgateway's `retries` counter, labelled as the request (its final response).
        name = "agentgateway_retries_total"
        _header(out, name, "counter", "The total number of request retries")
        for key in sorted(retries):
            out.append(f"{name}{{{_request_labels(key)}}} {_count(retries[key])}")
    _render_extras(out, total)
    _render_connections(out, total)
    _render_upstream(out, total)

    guardrails = total.guardrails
    if guardrails:
        name = "agentgateway_guardrail_checks_total"
        _header(out, name, "counter", "Total number of guardrail checks")
        for gkey in sorted(guardrails):
            labels = _labels(("phase", "action"), gkey)
            out.append(f"{name}{{{labels}}} {_count(guardrails[gkey])}")

    llm_keys = sorted(llm)
    llm_labels = [_labels(_GEN_AI_LABELS, (*k[5:], *k[:5])) for k in llm_keys]
    name = "agentgateway_gen_ai_client_token_usage"
    _header(out, name, "histogram", "Number of tokens used per GenAI request")
    for kind, token_type in _TOKEN_TYPES:
        for lkey, labels in zip(llm_keys, llm_labels, strict=True):
            hist = llm[lkey][kind]
            if hist is not None:
                typed = f'gen_ai_token_type="{token_type}",{labels}'
                _render_histogram(out, name, typed, hist, LLM_BOUNDS[kind])
    for kind, name, help_text in _GEN_AI_HISTOGRAMS:
        _header(out, name, "histogram", help_text)
        for lkey, labels in zip(llm_keys, llm_labels, strict=True):
            hist = llm[lkey][kind]
            if hist is not None:
                _render_histogram(out, name, labels, hist, LLM_BOUNDS[kind])
    cost = total.cost
    if cost:
        # agentgateway registers `gen_ai_client_cost` with the unit "usd": a counter whose
        # samples are named ..._usd_total; GenAI labels as the token usage.
        name = "agentgateway_gen_ai_client_cost_usd_total"
        _header(out, name, "counter", "Cumulative USD cost of generative AI requests")
        for ckey in sorted(cost):
            labels = _labels(_GEN_AI_LABELS, (*ckey[5:], *ckey[:5]))
            out.append(f"{name}{{{labels}}} {_number(cost[ckey])}")
    lookups = total.cost_lookups
    if lookups:
        name = "agentgateway_cost_catalog_lookups_total"
        _header(
            out, name, "counter", "Total number of model cost catalog lookups by resolution status"
        )
        for lookup in sorted(lookups):
            labels = _labels(("status", *_GEN_AI_LABELS), (lookup[9], *lookup[5:9], *lookup[:5]))
            out.append(f"{name}{{{labels}}} {_count(lookups[lookup])}")
    out.append("")
    return "\n".join(out).encode("utf-8")


def _render_extras(out: list[str], total: Snapshot) -> None:
    extras = total.extras
    keys = sorted(key for key, values in extras.items() if values[RESPONSE_BYTES] > 0)
    if keys:
        # As agentgateway: a label set appears once a response carried body bytes.
        name = "agentgateway_response_bytes_total"
        _header(out, name, "counter", "Bytes of HTTP response bodies sent to clients")
        for key in keys:
            out.append(f"{name}{{{_request_labels(key)}}} {_count(extras[key][RESPONSE_BYTES])}")
    size = len(PROCESSING_BUCKETS) + 2
    for at, name, help_text in _PROCESSING_HISTOGRAMS:
        # Kept per request label set; agentgateway's labels are backend and route only.
        merged: dict[tuple[str, ...], list[float]] = {}
        for key, values in extras.items():
            hist = values[at : at + size]
            if sum(hist[:-1]) == 0:
                continue
            short: tuple[str, ...] = (key[5], *key[:5])
            mine = merged.get(short)
            if mine is None:
                merged[short] = hist
            else:
                for i, value in enumerate(hist):
                    mine[i] += value
        if not merged:
            continue
        _header(out, name, "histogram", help_text)
        for short in sorted(merged):
            labels = _labels(_MINIMAL_LABELS, short)
            _render_histogram(out, name, labels, merged[short], PROCESSING_BUCKETS)


def _render_connections(out: list[str], total: Snapshot) -> None:
    connections = total.connections
    if not connections:
        return
    keys = sorted(connections)
    labels = [_labels(_CONNECTION_LABELS, key) for key in keys]
    for at, name, help_text in (
        (CONNECTIONS, "agentgateway_downstream_connections_total",
         "Client connections accepted (after the TLS handshake on HTTPS listeners)"),
        (RECEIVED_BYTES, "agentgateway_downstream_received_bytes_total",
         "Bytes received from clients (decrypted), counted as each connection closes"),
        (SENT_BYTES, "agentgateway_downstream_sent_bytes_total",
         "Bytes sent to clients (before encryption), counted as each connection closes"),
    ):  # fmt: skip
        _header(out, name, "counter", help_text)
        for key, label in zip(keys, labels, strict=True):
            out.append(f"{name}{{{label}}} {_count(connections[key][at])}")
    size = len(CONNECT_DURATION_BUCKETS) + 2
    handshakes = [
        (label, values[TLS_HANDSHAKE : TLS_HANDSHAKE + size])
        for key, label in zip(keys, labels, strict=True)
        if sum((values := connections[key])[TLS_HANDSHAKE : TLS_HANDSHAKE + size - 1])
    ]
    if handshakes:
        name = "agentgateway_tls_handshake_duration_seconds"
        _header(out, name, "histogram", "Duration of inbound TLS handshakes (s)")
        for label, hist in handshakes:
            _render_histogram(out, name, label, hist, CONNECT_DURATION_BUCKETS)


def _render_upstream(out: list[str], total: Snapshot) -> None:
    if total.connects:
        name = "agentgateway_upstream_connect_duration_seconds"
        _header(out, name, "histogram", "Time to open an upstream connection, TLS included (s)")
        for transport in sorted(total.connects):
            labels = _labels(("transport",), (transport,))
            _render_histogram(
                out, name, labels, total.connects[transport], CONNECT_DURATION_BUCKETS
            )
    if total.calls:
        name = "agentgateway_upstream_call_duration_seconds"
        _header(
            out, name, "histogram",
            "Time from an upstream call being made to its response head (s)",
        )
        for call in sorted(total.calls):
            _render_histogram(
                out, name, _labels(_CALL_LABELS, call), total.calls[call],
                REQUEST_DURATION_BUCKETS,
            )
