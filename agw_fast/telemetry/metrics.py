"""Prometheus metrics summed across pre-forked workers with no IPC per request.

Each worker counts into its own `MetricsRegistry` (plain dicts, a lookup and a few adds per
request). A `Publisher`, ticked from the worker's loop, copies the registry's cumulative
state into that worker's slot of a `SharedSlots` mmap at most every 100 ms, and only when
something changed. Whoever serves `/metrics` reads every slot and `render_prometheus` sums
them. Slots hold cumulative totals, so a replacement worker restores its predecessor's slot
and totals never go backwards.

Worker wiring::

    slots = SharedSlots(n_workers)                 # in the parent, before fork
    registry = MetricsRegistry()                   # in worker i, after fork
    registry.restore(slots.read(i))
    publisher = Publisher(registry, slots, i)      # call maybe_publish() from a loop timer,
                                                   # publish_now() on graceful shutdown
    body = render_prometheus(slots.read_all())     # wherever /metrics is served
"""

from __future__ import annotations

import logging
import marshal
import math
from bisect import bisect_left
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

__all__ = [
    "CONTENT_TYPE",
    "DEFAULT_MAX_LLM_SERIES",
    "DEFAULT_MAX_REQUEST_SERIES",
    "GEN_AI_DURATION_BUCKETS",
    "MAX_LABEL_LENGTH",
    "REQUEST_DURATION_BUCKETS",
    "TOKEN_BUCKETS",
    "TPOT_BUCKETS",
    "TTFT_BUCKETS",
    "MetricsRegistry",
    "Snapshot",
    "render_prometheus",
]

_log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

REQUEST_DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0,
)  # fmt: skip
TOKEN_BUCKETS = tuple(4**i for i in range(14))  # 1, 4, 16, ... 67108864
# The three below are the OpenTelemetry GenAI semantic-conventions bucket advice.
GEN_AI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

# A histogram is one flat list: a count per bucket, then the +Inf overflow count, then the
# sum. Recording is `h[bisect_left(bounds, v)] += 1; h[-1] += v`; cumulative counts are only
# computed when rendering.
Hist = list[float]
# (route, backend, method, status, reason)
RequestKey = tuple[str, str, str, int, str]
# (operation, system, request_model, response_model, route)
LLMKey = tuple[str, str, str, str, str]
# Histograms of one LLM series, each created on first use.
_IN, _OUT, _CACHE_READ, _DURATION, _TTFT, _TPOT = range(6)
_LLM_BOUNDS = (
    TOKEN_BUCKETS, TOKEN_BUCKETS, TOKEN_BUCKETS,
    GEN_AI_DURATION_BUCKETS, TTFT_BUCKETS, TPOT_BUCKETS,
)  # fmt: skip
_TOKEN_TYPES = ((_IN, "input"), (_OUT, "output"), (_CACHE_READ, "input_cache_read"))

# Bump when keys or bucket layouts change: a slot written by another build is then ignored.
_FORMAT = 1
_OVERFLOW = "__overflow__"
DEFAULT_MAX_REQUEST_SERIES = 2000
DEFAULT_MAX_LLM_SERIES = 500
MAX_LABEL_LENGTH = 128  # longer label values are cut; with the caps, a snapshot stays < 1 MiB


def _clip(key: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(
        part[:MAX_LABEL_LENGTH] if type(part) is str and len(part) > MAX_LABEL_LENGTH else part
        for part in key
    )


def _new_hist(bounds: tuple[float, ...]) -> Hist:
    hist: Hist = [0] * (len(bounds) + 1)
    hist.append(0.0)
    return hist


def _observe(entry: list[Hist | None], which: int, value: float) -> None:
    bounds = _LLM_BOUNDS[which]
    hist = entry[which]
    if hist is None:
        hist = entry[which] = _new_hist(bounds)
    hist[bisect_left(bounds, value)] += 1
    hist[-1] += value


class MetricsRegistry:
    """One worker's counters and histograms, keyed by label tuples.

    Not thread-safe: it belongs to the worker's event-loop thread. Client-influenced labels
    (method, models) are bounded by `max_*_series`; past that, new label sets are counted in
    one series whose labels all read `__overflow__`.
    """

    __slots__ = ("_dirty", "_llm", "_max_llm", "_max_requests", "_requests", "_warned")

    def __init__(
        self,
        *,
        max_request_series: int = DEFAULT_MAX_REQUEST_SERIES,
        max_llm_series: int = DEFAULT_MAX_LLM_SERIES,
    ) -> None:
        self._requests: dict[RequestKey, Hist] = {}
        self._llm: dict[LLMKey, list[Hist | None]] = {}
        self._max_requests = max(max_request_series, 1)
        self._max_llm = max(max_llm_series, 1)
        self._dirty = False
        self._warned = False

    @property
    def dirty(self) -> bool:
        """Whether anything was recorded since the last `mark_clean()`."""
        return self._dirty

    def mark_clean(self) -> None:
        self._dirty = False

    def record_request(
        self,
        route: str,
        backend: str,
        method: str,
        status: int,
        duration_s: float,
        reason: str = "Upstream",
    ) -> None:
        """One finished request: `requests_total` and `request_duration_seconds`.

        Both come from the same histogram (its count is the request counter).
        """
        key = (route, backend, method, status, reason)
        hist = self._requests.get(key)
        if hist is None:
            hist = self._request_series(key)
        if not duration_s >= 0.0:  # also catches NaN, which would poison the sum
            duration_s = 0.0
        hist[bisect_left(REQUEST_DURATION_BUCKETS, duration_s)] += 1
        hist[-1] += duration_s
        self._dirty = True

    def record_llm(
        self,
        route: str,
        request_model: str,
        response_model: str,
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        duration_s: float,
        ttft_s: float | None = None,
        cached_input_tokens: int | None = None,
        system: str = "openai",
        operation: str = "chat",
    ) -> None:
        """One LLM call: token usage, server duration, TTFT and time per output token."""
        key = (operation, system, request_model, response_model, route)
        entry = self._llm.get(key)
        if entry is None:
            entry = self._llm_series(key)
        if input_tokens is not None and input_tokens >= 0:
            _observe(entry, _IN, input_tokens)
        if output_tokens is not None and output_tokens >= 0:
            _observe(entry, _OUT, output_tokens)
        if cached_input_tokens is not None and cached_input_tokens > 0:
            _observe(entry, _CACHE_READ, cached_input_tokens)
        if duration_s >= 0.0:
            _observe(entry, _DURATION, duration_s)
            if ttft_s is not None and ttft_s >= 0.0:
                _observe(entry, _TTFT, ttft_s)
                # Decode time spread over the tokens after the first one.
                if output_tokens is not None and output_tokens > 1 and duration_s >= ttft_s:
                    _observe(entry, _TPOT, (duration_s - ttft_s) / (output_tokens - 1))
        self._dirty = True

    # Slow paths, taken once per new label set: bound label length and series count so
    # client-chosen values (method, model names) cannot grow memory or the published slot.
    def _request_series(self, key: RequestKey) -> Hist:
        key = cast(RequestKey, _clip(key))
        hist = self._requests.get(key)
        if hist is None:
            if len(self._requests) >= self._max_requests:
                self._warn_overflow()
                key = (_OVERFLOW, _OVERFLOW, _OVERFLOW, 0, _OVERFLOW)
                hist = self._requests.get(key)
            if hist is None:
                hist = self._requests[key] = _new_hist(REQUEST_DURATION_BUCKETS)
        return hist

    def _llm_series(self, key: LLMKey) -> list[Hist | None]:
        key = cast(LLMKey, _clip(key))
        entry = self._llm.get(key)
        if entry is None:
            if len(self._llm) >= self._max_llm:
                self._warn_overflow()
                key = (_OVERFLOW,) * 5
                entry = self._llm.get(key)
            if entry is None:
                entry = self._llm[key] = [None] * len(_LLM_BOUNDS)
        return entry

    def _warn_overflow(self) -> None:
        if not self._warned:
            self._warned = True
            _log.warning("metrics: too many label sets; new ones are counted as %s", _OVERFLOW)

    def encode_snapshot(self) -> bytes:
        """The cumulative state as bytes for `SharedSlots.publish` (one C-level marshal)."""
        return marshal.dumps((_FORMAT, self._requests, self._llm))

    def snapshot(self) -> Snapshot:
        """An independent copy of the cumulative state."""
        return Snapshot.decode(self.encode_snapshot())

    def restore(self, snapshot: Snapshot | None) -> None:
        """Add a previous worker's totals (its slot) so this worker continues from them."""
        if snapshot is None:
            return
        for key, hist in snapshot.requests.items():
            _add_hist(self._requests, key, hist)
        for lkey, entry in snapshot.llm.items():
            _add_entry(self._llm, lkey, entry)
        self._dirty = True


def _sum_into(mine: Hist | None, hist: Hist) -> Hist:
    if mine is None:
        return list(hist)
    for i, value in enumerate(hist):
        mine[i] += value
    return mine


def _add_hist(into: dict[RequestKey, Hist], key: RequestKey, hist: Hist) -> None:
    into[key] = _sum_into(into.get(key), hist)


def _add_entry(
    into: dict[LLMKey, list[Hist | None]], key: LLMKey, entry: list[Hist | None]
) -> None:
    mine = into.get(key)
    if mine is None:
        mine = into[key] = [None] * len(_LLM_BOUNDS)
    for which, hist in enumerate(entry):
        if hist is not None:
            mine[which] = _sum_into(mine[which], hist)


def _valid_key(key: object, int_at: int) -> bool:
    return (
        type(key) is tuple
        and len(key) == 5
        and all(type(part) is (int if i == int_at else str) for i, part in enumerate(key))
    )


def _valid_hist(hist: object, bounds: tuple[float, ...]) -> bool:
    return (
        type(hist) is list
        and len(hist) == len(bounds) + 2
        and all(type(v) is int or type(v) is float for v in hist)
    )


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One worker's cumulative metrics, as stored in its slot."""

    requests: dict[RequestKey, Hist]
    llm: dict[LLMKey, list[Hist | None]]

    def encode(self) -> bytes:
        return marshal.dumps((_FORMAT, self.requests, self.llm))

    @classmethod
    def decode(cls, data: bytes) -> Snapshot:
        """Parse and validate; malformed entries are dropped, a foreign format is ValueError."""
        try:
            obj = marshal.loads(data)
        except (EOFError, ValueError, TypeError) as exc:
            raise ValueError(f"bad metrics snapshot: {exc}") from None
        if type(obj) is not tuple or len(obj) != 3 or obj[0] != _FORMAT:
            raise ValueError("bad metrics snapshot: unknown format")
        raw_requests, raw_llm = obj[1], obj[2]
        if type(raw_requests) is not dict or type(raw_llm) is not dict:
            raise ValueError("bad metrics snapshot: unknown format")
        requests: dict[RequestKey, Hist] = {
            key: hist
            for key, hist in raw_requests.items()
            if _valid_key(key, 3) and _valid_hist(hist, REQUEST_DURATION_BUCKETS)
        }
        llm: dict[LLMKey, list[Hist | None]] = {
            key: entry
            for key, entry in raw_llm.items()
            if _valid_key(key, -1)
            and type(entry) is list
            and len(entry) == len(_LLM_BOUNDS)
            and all(h is None or _valid_hist(h, b) for h, b in zip(entry, _LLM_BOUNDS, strict=True))
        }
        return cls(requests, llm)


# Slot layout (little endian). Two payload buffers per slot: the writer fills the inactive
# one, then flips `active`, so a worker killed mid-write leaves the last complete snapshot
# readable. `seq` is a seqlock: odd while a write is in progress, and a reader retries when
# it changed during its read. The CRC catches a torn read on weakly ordered CPUs, where
# Python offers no memory fences.
#   header: seq u64 | active u32 | pad u32
#   buffer: length u32 | crc32 u32 | payload[capacity]   (twice)
def _escape(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        value = value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return value


def _labels(names: tuple[str, ...], values: Iterable[str]) -> str:
    return ",".join(f'{n}="{_escape(v)}"' for n, v in zip(names, values, strict=True))


def _number(value: float) -> str:
    if type(value) is int:
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _render_histogram(
    out: list[str], name: str, labels: str, hist: Hist, bounds: tuple[float, ...]
) -> None:
    sep = "," if labels else ""
    cumulative: float = 0
    for bound, count in zip(bounds, hist, strict=False):
        cumulative += count
        out.append(f'{name}_bucket{{{labels}{sep}le="{float(bound)!r}"}} {_number(cumulative)}')
    cumulative += hist[len(bounds)]
    out.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {_number(cumulative)}')
    out.append(f"{name}_sum{{{labels}}} {_number(hist[-1])}")
    out.append(f"{name}_count{{{labels}}} {_number(cumulative)}")


def _header(out: list[str], name: str, kind: str, help_text: str) -> None:
    out.append(f"# HELP {name} {help_text}")
    out.append(f"# TYPE {name} {kind}")


_REQUEST_LABELS = ("route", "backend", "method", "status", "reason")
_GEN_AI_LABELS = (
    "gen_ai_operation_name",
    "gen_ai_system",
    "gen_ai_request_model",
    "gen_ai_response_model",
    "route",
)
_GEN_AI_HISTOGRAMS = (
    (_DURATION, "agentgateway_gen_ai_server_request_duration", "GenAI request duration (s)"),
    (_TTFT, "agentgateway_gen_ai_server_time_to_first_token", "Time to first token (s)"),
    (_TPOT, "agentgateway_gen_ai_server_time_per_output_token", "Time per output token (s)"),
)


def render_prometheus(snapshots: Iterable[Snapshot]) -> bytes:
    """Sum the workers' snapshots into Prometheus text exposition format 0.0.4."""
    requests: dict[RequestKey, Hist] = {}
    llm: dict[LLMKey, list[Hist | None]] = {}
    for snapshot in snapshots:
        for key, hist in snapshot.requests.items():
            _add_hist(requests, key, hist)
        for lkey, entry in snapshot.llm.items():
            _add_entry(llm, lkey, entry)
    out: list[str] = []

    request_keys = sorted(requests)
    request_labels = [
        _labels(_REQUEST_LABELS, (k[0], k[1], k[2], str(k[3]), k[4])) for k in request_keys
    ]
    name = "agentgateway_requests_total"
    _header(out, name, "counter", "The total number of HTTP requests")
    for key, labels in zip(request_keys, request_labels, strict=True):
        out.append(f"{name}{{{labels}}} {_number(sum(requests[key][:-1]))}")
    name = "agentgateway_request_duration_seconds"
    _header(out, name, "histogram", "Duration of HTTP requests in seconds")
    for key, labels in zip(request_keys, request_labels, strict=True):
        _render_histogram(out, name, labels, requests[key], REQUEST_DURATION_BUCKETS)

    llm_keys = sorted(llm)
    llm_labels = [_labels(_GEN_AI_LABELS, k) for k in llm_keys]
    name = "agentgateway_gen_ai_client_token_usage"
    _header(out, name, "histogram", "Number of tokens used per GenAI request")
    for which, token_type in _TOKEN_TYPES:
        for lkey, labels in zip(llm_keys, llm_labels, strict=True):
            lhist = llm[lkey][which]
            if lhist is not None:
                typed = f'gen_ai_token_type="{token_type}",{labels}'
                _render_histogram(out, name, typed, lhist, TOKEN_BUCKETS)
    for which, name, help_text in _GEN_AI_HISTOGRAMS:
        _header(out, name, "histogram", help_text)
        for lkey, labels in zip(llm_keys, llm_labels, strict=True):
            lhist = llm[lkey][which]
            if lhist is not None:
                _render_histogram(out, name, labels, lhist, _LLM_BOUNDS[which])
    out.append("")
    return "\n".join(out).encode("utf-8")
