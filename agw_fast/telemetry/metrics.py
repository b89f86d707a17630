"""One worker's metric series: agentgateway's names, labels and buckets.

Each series is a histogram held as one flat array of float64s: a count per bucket, the
overflow (+Inf) count, then the sum. Recording is `h[bisect_left(bounds, v)] += 1;
h[-1] += v`; cumulative counts and `requests_total` (the histogram's count) are computed only
when rendering. Given a `SeriesStore` (a worker's slot in shared memory, see
`shared_slots.py`), the arrays live there and are updated in place, so whoever serves
`/metrics` sees every finished request at once and a killed worker loses none; without one
they are plain lists (tests, tools).

Label values follow agentgateway (crates/agentgateway/src/telemetry/metrics.rs): names it
does not know read "unknown".
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, TypeVar, cast

__all__ = [
    "CALL",
    "CONNECT",
    "CONNECTION",
    "CONNECT_DURATION_BUCKETS",
    "CONNECTION_SIZE",
    "DEFAULT_MAX_LLM_SERIES",
    "DEFAULT_MAX_REQUEST_SERIES",
    "GEN_AI_DURATION_BUCKETS",
    "LLM_BOUNDS",
    "LLM_KINDS",
    "MAX_LABEL_LENGTH",
    "OVERFLOW",
    "PROCESSING_BUCKETS",
    "REQUEST",
    "REQUEST_DURATION_BUCKETS",
    "REQUEST_EXTRA",
    "REQUEST_EXTRA_SIZE",
    "RETRIES",
    "COST",
    "COST_LOOKUPS",
    "GUARDRAILS",
    "GuardrailKey",
    "SERIES_SIZES",
    "TOKEN_BUCKETS",
    "TPOT_BUCKETS",
    "TTFT_BUCKETS",
    "CallKey",
    "ConnectionKey",
    "Hist",
    "LLMKey",
    "LookupKey",
    "MetricsRegistry",
    "RequestKey",
    "SeriesStore",
    "Snapshot",
    "observe",
    "observe_request",
]

_log = logging.getLogger(__name__)
_K = TypeVar("_K", bound=tuple[str, ...])

# agentgateway's HTTP_REQUEST_DURATION_BUCKET.
REQUEST_DURATION_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 80.0,
)  # fmt: skip
TOKEN_BUCKETS = tuple(float(4**i) for i in range(14))  # 1, 4, 16, ... 67108864
# The OpenTelemetry GenAI semantic-conventions bucket advice, as agentgateway uses it (time
# per output token with an extra 1 ms bucket for fast models).
GEN_AI_DURATION_BUCKETS = (
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
)  # fmt: skip
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
TPOT_BUCKETS = (
    0.001, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip

# agentgateway's CONNECT_DURATION_BUCKET (upstream connects, inbound TLS handshakes).
CONNECT_DURATION_BUCKETS = (
    0.0005, 0.0015, 0.0043, 0.0126, 0.0368, 0.108, 0.316, 0.924, 2.71, 8.0,
)  # fmt: skip
# agentgateway's PROCESSING_DURATION_BUCKETS: the gateway's own time around the upstream call.
PROCESSING_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25,
)  # fmt: skip

# (bind, gateway, listener, route, route_rule, backend, protocol, method, status, reason);
# status 0 renders as "unknown" (no response).
RequestKey = tuple[str, str, str, str, str, str, str, str, int, str]
# (bind, gateway, listener, route, route_rule, operation, system, request_model,
#  response_model)
LLMKey = tuple[str, str, str, str, str, str, str, str, str]
# An LLMKey and the cost lookup's status (Exact, Unpriced, Missing).
LookupKey = tuple[str, str, str, str, str, str, str, str, str, str]

# agentgateway's TCPLabels: (bind, gateway, listener, protocol), protocol "http" or "https".
ConnectionKey = tuple[str, str, str, str]
# agentgateway's OutboundCallLabels: (kind, subtype), e.g. ("Primary", "Llm").
CallKey = tuple[str, str]

# Series kinds, as stored with each series: a request histogram, or one of an LLM series'
# histograms (each created on first use).
# `gen_ai_client_cost_usd_total` of an LLM label set (USD, one value), and
# `cost_catalog_lookups_total` of an LLM label set plus the lookup status (a count).
COST = 13
COST_LOOKUPS = 14
REQUEST = 0
TOKENS_IN, TOKENS_OUT, TOKENS_CACHE_READ, LLM_DURATION, LLM_TTFT, LLM_TPOT = range(1, 7)
LLM_KINDS = range(1, 7)
# `retries_total` of a request label set: one counter, stored as a series of one value.
RETRIES = 7
# The rest of a request label set's series, one record beside its REQUEST histogram (one
# lookup per request serves both): `response_bytes_total`, then the
# `request_processing_seconds` and `response_processing_seconds` histograms (agentgateway
# labels these two with its MinimalHTTPLabels, a subset: they are summed when rendered).
REQUEST_EXTRA = 8
# A listener's connections (TCPLabels): `downstream_connections_total`, the received and
# sent byte counters, then the `tls_handshake_duration_seconds` histogram.
CONNECTION = 9
# `upstream_connect_duration_seconds` of one transport ("plaintext", "tls").
CONNECT = 10
# `upstream_call_duration_seconds` of one (kind, subtype).
CALL = 11
# `guardrail_checks_total{phase,action}`: one counter per (phase, action).
GUARDRAILS = 12
GuardrailKey = tuple[str, str]
LLM_BOUNDS: dict[int, tuple[float, ...]] = {
    TOKENS_IN: TOKEN_BUCKETS,
    TOKENS_OUT: TOKEN_BUCKETS,
    TOKENS_CACHE_READ: TOKEN_BUCKETS,
    LLM_DURATION: GEN_AI_DURATION_BUCKETS,
    LLM_TTFT: TTFT_BUCKETS,
    LLM_TPOT: TPOT_BUCKETS,
}

# Offsets in a REQUEST_EXTRA record.
RESPONSE_BYTES = 0
REQUEST_PROCESSING = 1
RESPONSE_PROCESSING = REQUEST_PROCESSING + len(PROCESSING_BUCKETS) + 2
REQUEST_EXTRA_SIZE = RESPONSE_PROCESSING + len(PROCESSING_BUCKETS) + 2
# Offsets in a CONNECTION record.
CONNECTIONS, RECEIVED_BYTES, SENT_BYTES, TLS_HANDSHAKE = range(4)
CONNECTION_SIZE = TLS_HANDSHAKE + len(CONNECT_DURATION_BUCKETS) + 2

# How many float64 values a series of each kind holds.
SERIES_SIZES: dict[int, int] = {REQUEST: len(REQUEST_DURATION_BUCKETS) + 2, RETRIES: 1}
SERIES_SIZES.update({kind: len(bounds) + 2 for kind, bounds in LLM_BOUNDS.items()})
SERIES_SIZES.update({
    REQUEST_EXTRA: REQUEST_EXTRA_SIZE,
    CONNECTION: CONNECTION_SIZE,
    CONNECT: len(CONNECT_DURATION_BUCKETS) + 2,
    CALL: len(REQUEST_DURATION_BUCKETS) + 2,
    GUARDRAILS: 1,
    COST: 1,
    COST_LOOKUPS: 1,
})  # fmt: skip

OVERFLOW = "__overflow__"
DEFAULT_MAX_REQUEST_SERIES = 2000
DEFAULT_MAX_LLM_SERIES = 500
MAX_LABEL_LENGTH = 128  # longer label values are cut


class Hist(Protocol):
    """A histogram's values: a list, or a float64 memoryview into shared memory."""

    def __getitem__(self, index: int, /) -> float: ...
    def __setitem__(self, index: int, value: float, /) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self) -> Iterator[float]: ...


class SeriesStore(Protocol):
    """Where series live (a worker's shared-memory slot)."""

    def series(self) -> Iterable[tuple[int, tuple[str | int, ...], Hist]]:
        """The series already stored (a replacement worker continues from them)."""
        ...

    def allocate(self, kind: int, key: tuple[str | int, ...], size: int, last: bool) -> Hist | None:
        """Zeroed room for a new series of `size` values, or None when full. `last`: the
        overflow series, which may use the room kept back for it."""
        ...


def observe_request(hist: Hist, duration_s: float) -> None:
    """Count one request of `duration_s` in a request histogram."""
    if not duration_s >= 0.0:  # also catches NaN, which would poison the sum
        duration_s = 0.0
    hist[bisect_left(REQUEST_DURATION_BUCKETS, duration_s)] += 1
    hist[-1] += duration_s


def observe(hist: Hist, at: int, bounds: tuple[float, ...], value: float) -> None:
    """Count `value` in the histogram that starts at offset `at` of `hist` (its buckets,
    +Inf, then its sum), `bounds` its upper bounds."""
    if not value >= 0.0:  # also catches NaN, which would poison the sum
        value = 0.0
    hist[at + bisect_left(bounds, value)] += 1
    hist[at + len(bounds) + 1] += value


def _size(bounds: tuple[float, ...]) -> int:
    return len(bounds) + 2  # buckets, +Inf, sum


def _clip(key: tuple[str | int, ...]) -> tuple[str | int, ...]:
    return tuple(
        part[:MAX_LABEL_LENGTH] if type(part) is str and len(part) > MAX_LABEL_LENGTH else part
        for part in key
    )


def _valid(value: float) -> bool:
    return value >= 0.0  # False for NaN too, which would poison a sum


class MetricsRegistry:
    """One worker's series, keyed by label tuples.

    Not thread-safe: it belongs to the worker's event-loop thread. Client-influenced labels
    (method, models) are bounded by `max_*_series`; past that, or when the store is full, new
    label sets are counted in one series whose labels all read `__overflow__`.
    """

    __slots__ = (
        "_cost", "_extras", "_fixed", "_guardrails", "_llm", "_lookups", "_max_llm",
        "_max_requests", "_requests", "_retries", "_store", "_warned",
    )

    def __init__(
        self,
        store: SeriesStore | None = None,
        *,
        max_request_series: int = DEFAULT_MAX_REQUEST_SERIES,
        max_llm_series: int = DEFAULT_MAX_LLM_SERIES,
    ) -> None:
        self._requests: dict[RequestKey, Hist] = {}
        self._llm: dict[LLMKey, list[Hist | None]] = {}
        self._retries: dict[RequestKey, Hist] = {}
        self._extras: dict[RequestKey, Hist] = {}
        # Series whose labels come from the config, not from clients (connections, upstream
        # connects and calls): (kind, key) -> values.
        self._fixed: dict[tuple[int, tuple[str, ...]], Hist] = {}
        self._guardrails: dict[GuardrailKey, Hist] = {}
        self._cost: dict[LLMKey, Hist] = {}
        self._lookups: dict[LookupKey, Hist] = {}
        self._max_requests = max(max_request_series, 1)
        self._max_llm = max(max_llm_series, 1)
        self._store = store
        self._warned = False
        if store is not None:
            for kind, key, hist in store.series():
                if kind == REQUEST:
                    self._requests[cast(RequestKey, key)] = hist
                elif kind == RETRIES:
                    self._retries[cast(RequestKey, key)] = hist
                elif kind == REQUEST_EXTRA:
                    self._extras[cast(RequestKey, key)] = hist
                elif kind == GUARDRAILS:
                    self._guardrails[cast(GuardrailKey, key)] = hist
                elif kind == COST:
                    self._cost[cast(LLMKey, key)] = hist
                elif kind == COST_LOOKUPS:
                    self._lookups[cast(LookupKey, key)] = hist
                elif kind in (CONNECTION, CONNECT, CALL):
                    self._fixed[kind, cast(tuple[str, ...], key)] = hist
                else:
                    entry = self._llm.setdefault(cast(LLMKey, key), [None] * 7)
                    entry[kind] = hist

    def record_request(self, key: RequestKey, duration_s: float) -> None:
        """One finished request: `requests_total` and `request_duration_seconds`."""
        observe_request(self.request_series(key), duration_s)

    def request_series(self, key: RequestKey) -> Hist:
        """The histogram of `key` (created on first use), for `observe_request`: callers on
        the hot path keep it rather than build and hash the whole key per request."""
        hist = self._requests.get(key)
        if hist is None:
            hist = self._request_series(key)
        return hist

    def request_extra(self, key: RequestKey) -> Hist:
        """The REQUEST_EXTRA record of `key` (created on first use; bounded as the request
        series are, which have the same keys)."""
        hist = self._extras.get(key)
        if hist is None:
            key = cast(RequestKey, _clip(key))
            hist = self._extras.get(key)
            if hist is None:
                if len(self._extras) < self._max_requests:
                    hist = self._new(REQUEST_EXTRA, key, REQUEST_EXTRA_SIZE, last=False)
                if hist is None:
                    self._warn_overflow()
                    key = _REQUEST_OVERFLOW
                    hist = self._extras.get(key)
                    if hist is None:
                        hist = self._new_last(REQUEST_EXTRA, key, REQUEST_EXTRA_SIZE)
                self._extras[key] = hist
        return hist

    def fixed_series(self, kind: int, key: tuple[str, ...]) -> Hist:
        """A CONNECTION, CONNECT or CALL record (labels from the config: few). Should the
        store be full, the values are kept here, out of `/metrics`, rather than fail."""
        hist = self._fixed.get((kind, key))
        if hist is None:
            key = cast(tuple[str, ...], _clip(key))
            size = SERIES_SIZES[kind]
            hist = self._new(kind, key, size, last=True)
            if hist is None:
                self._warn_overflow()
                hist = [0.0] * size
            self._fixed[kind, key] = hist
        return hist

    def record_retries(self, key: RequestKey, retries: int) -> None:
        """`retries_total`: the retries one request made (agentgateway counts them under the
        request's labels, the final response's status and reason)."""
        hist = self._retries.get(key)
        if hist is None:
            key = cast(RequestKey, _clip(key))
            hist = self._retries.get(key)
            if hist is None:
                # Bounded like the request series: a request label set exists for each.
                if len(self._retries) < self._max_requests:
                    hist = self._new(RETRIES, key, 1, last=False)
                if hist is None:
                    self._warn_overflow()
                    key = _REQUEST_OVERFLOW
                    hist = self._retries.get(key)
                    if hist is None:
                        hist = self._new_last(RETRIES, key, 1)
                self._retries[key] = hist
        hist[0] += retries

    def record_llm(
        self,
        key: LLMKey,
        *,
        input_tokens: int | None,
        output_tokens: int | None,
        cached_input_tokens: int | None,
        duration_s: float,
        ttft_s: float | None,
        tpot_s: float | None,
    ) -> None:
        """One LLM call: token usage, request duration, time to first token and per token."""
        entry = self._llm.get(key)
        if entry is None:
            entry = self._llm_series(key)
        if input_tokens is not None and input_tokens >= 0:
            self._observe(key, entry, TOKENS_IN, input_tokens)
        if output_tokens is not None and output_tokens >= 0:
            self._observe(key, entry, TOKENS_OUT, output_tokens)
        if cached_input_tokens is not None and cached_input_tokens > 0:
            self._observe(key, entry, TOKENS_CACHE_READ, cached_input_tokens)
        if _valid(duration_s):
            self._observe(key, entry, LLM_DURATION, duration_s)
        if ttft_s is not None and _valid(ttft_s):
            self._observe(key, entry, LLM_TTFT, ttft_s)
        if tpot_s is not None and _valid(tpot_s):
            self._observe(key, entry, LLM_TPOT, tpot_s)

    def record_cost(self, key: LLMKey, status: str, cost: float | None) -> None:
        """One priced (or unpriceable) LLM call: `cost_catalog_lookups_total` by status and,
        when priced, `gen_ai_client_cost_usd_total`. Bounded like the LLM series."""
        lookup_key = cast(LookupKey, _clip(key + (status,)))
        hist = self._lookups.get(lookup_key)
        if hist is None:
            hist = self._counter(self._lookups, COST_LOOKUPS, lookup_key, _LOOKUP_OVERFLOW)
        hist[0] += 1
        if cost is not None and _valid(cost):
            llm_key = cast(LLMKey, _clip(key))
            hist = self._cost.get(llm_key)
            if hist is None:
                hist = self._counter(self._cost, COST, llm_key, _LLM_OVERFLOW)
            hist[0] += cost

    def _counter(
        self, series: dict[_K, Hist], kind: int, key: _K, overflow: _K
    ) -> Hist:
        """A new one-value series for `key`, or the overflow one past the cap or when full."""
        hist = None
        if len(series) < self._max_llm:
            hist = self._new(kind, key, 1, last=False)
        if hist is None:
            self._warn_overflow()
            key = overflow
            hist = series.get(key)
            if hist is None:
                hist = self._new_last(kind, key, 1)
        series[key] = hist
        return hist

    def _observe(self, key: LLMKey, entry: list[Hist | None], kind: int, value: float) -> None:
        bounds = LLM_BOUNDS[kind]
        hist = entry[kind]
        if hist is None:
            hist = self._llm_hist(key, entry, kind)
        hist[bisect_left(bounds, value)] += 1
        hist[-1] += value

    # Slow paths, taken once per new label set: bound label length and series count so
    # client-chosen values (method, model names) cannot grow memory without limit.
    def _request_series(self, key: RequestKey) -> Hist:
        key = cast(RequestKey, _clip(key))
        hist = self._requests.get(key)
        if hist is not None:
            return hist
        size = _size(REQUEST_DURATION_BUCKETS)
        if len(self._requests) < self._max_requests:
            hist = self._new(REQUEST, key, size, last=False)
            if hist is not None:
                self._requests[key] = hist
                return hist
        self._warn_overflow()
        hist = self._requests.get(_REQUEST_OVERFLOW)
        if hist is None:
            hist = self._requests[_REQUEST_OVERFLOW] = self._new_last(
                REQUEST, _REQUEST_OVERFLOW, size
            )
        return hist

    def _llm_series(self, key: LLMKey) -> list[Hist | None]:
        key = cast(LLMKey, _clip(key))
        entry = self._llm.get(key)
        if entry is None:
            if len(self._llm) >= self._max_llm:
                self._warn_overflow()
                key = _LLM_OVERFLOW
                entry = self._llm.get(key)
            if entry is None:
                entry = self._llm[key] = [None] * 7
        return entry

    def _llm_hist(self, key: LLMKey, entry: list[Hist | None], kind: int) -> Hist:
        size = _size(LLM_BOUNDS[kind])
        if key == _LLM_OVERFLOW:
            last = entry[kind] = self._new_last(kind, key, size)
            return last
        hist = self._new(kind, key, size, last=False)
        if hist is not None:
            entry[kind] = hist
            return hist
        # The store is full: count in the overflow series (looked up again next time rather
        # than aliased here, which would count the values twice).
        self._warn_overflow()
        overflow = self._llm.get(_LLM_OVERFLOW)
        if overflow is None:
            overflow = self._llm[_LLM_OVERFLOW] = [None] * 7
        found = overflow[kind]
        if found is None:
            found = overflow[kind] = self._new_last(kind, _LLM_OVERFLOW, size)
        return found

    def _new(self, kind: int, key: tuple[str | int, ...], size: int, last: bool) -> Hist | None:
        store = self._store
        if store is None:
            return [0.0] * size
        return store.allocate(kind, key, size, last)

    def record_guardrail(self, phase: str, action: str) -> None:
        """One guard check (agentgateway's `guardrail_checks`). Label values are fixed
        words: 2 phases times 4 actions at most."""
        key = (phase, action)
        hist = self._guardrails.get(key)
        if hist is None:
            hist = self._guardrails[key] = self._new_last(GUARDRAILS, key, 1)
        hist[0] += 1

    def _new_last(self, kind: int, key: tuple[str | int, ...], size: int) -> Hist:
        # The store keeps room back for the overflow series; should even that be gone, they
        # count here rather than fail a request.
        return self._new(kind, key, size, last=True) or [0.0] * size

    def _warn_overflow(self) -> None:
        if not self._warned:
            self._warned = True
            _log.warning("metrics: too many label sets; new ones are counted as %s", OVERFLOW)

    def snapshot(self) -> Snapshot:
        """An independent copy of the current totals."""
        return Snapshot(
            {key: list(hist) for key, hist in self._requests.items()},
            {
                key: [None if h is None else list(h) for h in entry]
                for key, entry in self._llm.items()
            },
            {key: hist[0] for key, hist in self._retries.items()},
            {key: list(hist) for key, hist in self._extras.items()},
            {
                cast(ConnectionKey, key): list(hist)
                for (kind, key), hist in self._fixed.items()
                if kind == CONNECTION
            },
            {key[0]: list(hist) for (kind, key), hist in self._fixed.items() if kind == CONNECT},
            {
                cast(CallKey, key): list(hist)
                for (kind, key), hist in self._fixed.items()
                if kind == CALL
            },
            {key: hist[0] for key, hist in self._guardrails.items()},
            {key: hist[0] for key, hist in self._cost.items()},
            {key: hist[0] for key, hist in self._lookups.items()},
        )


_REQUEST_OVERFLOW: RequestKey = (OVERFLOW,) * 8 + (0, OVERFLOW)
_LLM_OVERFLOW: LLMKey = (OVERFLOW,) * 9
_LOOKUP_OVERFLOW: LookupKey = (OVERFLOW,) * 10


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Totals of one worker (or several summed): what `/metrics` renders.

    `llm` maps a key to 7 entries indexed by series kind (index 0 unused); `retries` a
    request key to its `retries_total`; `extras` a request key to its REQUEST_EXTRA
    values; `connections`, `connects` (by transport) and `calls` hold those records."""

    requests: dict[RequestKey, list[float]]
    llm: dict[LLMKey, list[list[float] | None]]
    retries: dict[RequestKey, float] = field(default_factory=dict)
    extras: dict[RequestKey, list[float]] = field(default_factory=dict)
    connections: dict[ConnectionKey, list[float]] = field(default_factory=dict)
    connects: dict[str, list[float]] = field(default_factory=dict)
    calls: dict[CallKey, list[float]] = field(default_factory=dict)
    guardrails: dict[GuardrailKey, float] = field(default_factory=dict)
    cost: dict[LLMKey, float] = field(default_factory=dict)  # USD
    cost_lookups: dict[LookupKey, float] = field(default_factory=dict)

    @classmethod
    def merge(cls, snapshots: Iterable[Snapshot]) -> Snapshot:
        """The sum of several workers' snapshots."""
        requests: dict[RequestKey, list[float]] = {}
        llm: dict[LLMKey, list[list[float] | None]] = {}
        retries: dict[RequestKey, float] = {}
        extras: dict[RequestKey, list[float]] = {}
        connections: dict[ConnectionKey, list[float]] = {}
        connects: dict[str, list[float]] = {}
        calls: dict[CallKey, list[float]] = {}
        guardrails: dict[GuardrailKey, float] = {}
        cost: dict[LLMKey, float] = {}
        lookups: dict[LookupKey, float] = {}
        for snapshot in snapshots:
            for cost_key, usd in snapshot.cost.items():
                cost[cost_key] = cost.get(cost_key, 0.0) + usd
            for lookup, count in snapshot.cost_lookups.items():
                lookups[lookup] = lookups.get(lookup, 0.0) + count
            for gkey, count in snapshot.guardrails.items():
                guardrails[gkey] = guardrails.get(gkey, 0.0) + count
            for key, count in snapshot.retries.items():
                retries[key] = retries.get(key, 0.0) + count
            for key, values in snapshot.extras.items():
                extras[key] = _sum_into(extras.get(key), values)
            for ckey, values in snapshot.connections.items():
                connections[ckey] = _sum_into(connections.get(ckey), values)
            for transport, values in snapshot.connects.items():
                connects[transport] = _sum_into(connects.get(transport), values)
            for call, values in snapshot.calls.items():
                calls[call] = _sum_into(calls.get(call), values)
            for key, hist in snapshot.requests.items():
                requests[key] = _sum_into(requests.get(key), hist)
            for lkey, entry in snapshot.llm.items():
                mine = llm.get(lkey)
                if mine is None:
                    mine = llm[lkey] = [None] * 7
                for kind, lhist in enumerate(entry):
                    if lhist is not None:
                        mine[kind] = _sum_into(mine[kind], lhist)
        return cls(
            requests, llm, retries, extras, connections, connects, calls, guardrails, cost,
            lookups,
        )


def _sum_into(mine: list[float] | None, hist: list[float]) -> list[float]:
    if mine is None:
        return list(hist)
    for i, value in enumerate(hist):
        mine[i] += value
    return mine
