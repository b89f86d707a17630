"""The Prometheus text exposition (format 0.0.4) of the workers' summed series.

Names and label sets are agentgateway's (crates/agentgateway/src/telemetry/metrics.rs), with
labels in its order: `HTTPLabels` then the flattened `RouteIdentifier`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from agw_fast.telemetry.metrics import (
    LLM_BOUNDS,
    LLM_DURATION,
    LLM_TPOT,
    LLM_TTFT,
    REQUEST_DURATION_BUCKETS,
    TOKENS_CACHE_READ,
    TOKENS_IN,
    TOKENS_OUT,
    Snapshot,
)

__all__ = ["CONTENT_TYPE", "render_prometheus"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_ROUTE_LABELS = ("bind", "gateway", "listener", "route", "route_rule")
_REQUEST_LABELS = ("backend", "protocol", "method", "status", "reason", *_ROUTE_LABELS)
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


def render_prometheus(snapshots: Iterable[Snapshot]) -> bytes:
    """Sum the workers' snapshots into the text exposition format."""
    total = Snapshot.merge(snapshots)
    requests, llm = total.requests, total.llm
    out: list[str] = []

    request_keys = sorted(requests)
    request_labels = [
        _labels(
            _REQUEST_LABELS,
            (k[5], k[6], k[7], str(k[8]) if k[8] else "unknown", k[9], *k[:5]),
        )
        for k in request_keys
    ]
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
            labels = _labels(
                _REQUEST_LABELS,
                (key[5], key[6], key[7], str(key[8]) if key[8] else "unknown", key[9], *key[:5]),
            )
            out.append(f"{name}{{{labels}}} {_count(retries[key])}")

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
