"""The worker's `RequestRecorder`: metrics and the access line of each finished request.

Field names, order and values follow agentgateway's request log (`DropOnLog` in
crates/agentgateway/src/telemetry/log.rs): `gateway listener route_rule route endpoint
src.addr http.method http.host http.path http.version http.status protocol gen_ai.* error
reason duration`, a field left out when it has no value, `reason` only when the response
did not come from the upstream. Secrets never reach a line: no header value but Host is
logged, and the path is logged without its query (unless the operator's
`frontendPolicies.accessLog.add` asks for one: see policies/access_log.py for its filter,
added and removed fields).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from agw_fast.core.cel import LOG_VARIABLES, activation
from agw_fast.core.reason import Reason
from agw_fast.llm.cost import format_amount, price
from agw_fast.log import logger, text_value
from agw_fast.plan import UNKNOWN
from agw_fast.policies.cel_context import cel_variables, source_variable
from agw_fast.telemetry.metrics import (
    CALL,
    CONNECT,
    CONNECT_DURATION_BUCKETS,
    CONNECTION,
    PROCESSING_BUCKETS,
    REQUEST_DURATION_BUCKETS,
    REQUEST_PROCESSING,
    RESPONSE_BYTES,
    RESPONSE_PROCESSING,
    Hist,
    LLMKey,
    MetricsRegistry,
    RequestKey,
    observe,
    observe_request,
)
from agw_fast.telemetry.record import RequestRecord

if TYPE_CHECKING:
    from decimal import Decimal

    from agw_fast.config.model_catalog import ModelCatalog
    from agw_fast.llm.exchange import LLMOutcome
    from agw_fast.plan import RouteLabels
    from agw_fast.policies.access_log import CompiledAccessLog
    from agw_fast.telemetry.access_log import AccessLog

__all__ = ["Recorder", "log_variables"]

# The methods nearly every request uses, decoded once.
_METHODS = {
    m.encode(): m for m in ("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH")
}


def _method(raw: bytes) -> str:
    return _METHODS.get(raw) or raw.decode("ascii", "replace")


# Hosts, paths, provider and model names as logged: a gateway sees few of each, so most lines
# take a dict probe instead of a decode and a quoting check. Bounded: clients choose these.
_LOGGED: dict[bytes | str, str] = {}
LOGGED_LIMIT = 1024


def _logged(value: bytes | str) -> str:
    """`text_value` of a name or of raw (latin-1) bytes, cached."""
    text = _LOGGED.get(value)
    if text is None:
        text = text_value(value.decode("latin-1") if type(value) is bytes else value)
        if len(_LOGGED) >= LOGGED_LIMIT:
            _LOGGED.clear()
        _LOGGED[value] = text
    return text


def _millis(seconds: float) -> str:
    return f"{int(seconds * 1000)}ms"  # whole milliseconds, truncated (Rust's `as_millis`)


def _time_per_output_token(llm: LLMOutcome, duration: float) -> float | None:
    """First token to the end, spread over the output tokens (agentgateway's
    `set_token_timing`): only known for streams, where the first token was seen."""
    ttft, tokens = llm.time_to_first_token, llm.output_tokens
    if ttft is None or not tokens or tokens <= 0 or duration < ttft:
        return None
    return (duration - ttft) / tokens


# Series looked up by the record's own fields: (labels, backend, protocol, raw method,
# status, reason) -> histogram. Bounded: past this many entries (client-chosen methods) the
# cache starts over; the registry itself caps the series.
_SeriesCacheKey = tuple["RouteLabels", str | None, str, bytes, int, str | None]
SERIES_CACHE_LIMIT = 4096
FAILURE_LOG_INTERVAL = 60.0  # seconds between two logged telemetry failures


_CALL_KEYS = {
    (False, False): ("Primary", "Http"),
    (True, False): ("Primary", "Llm"),
    (False, True): ("Mirror", "Http"),
    (True, True): ("Mirror", "Llm"),
}


class Recorder:
    """Counts every finished request and, when the access log is on, logs it."""

    __slots__ = (
        "_calls", "_connections", "_connects", "_last_failure_log", "_prefixes", "_series",
        "access_log", "catalog", "policy", "registry",
    )  # fmt: skip

    def __init__(
        self,
        registry: MetricsRegistry,
        access_log: AccessLog | None,
        policy: CompiledAccessLog | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.registry = registry
        self.access_log = access_log
        self.policy = policy  # frontendPolicies.accessLog (filter, add, remove), compiled
        # config.modelCatalog: LLM calls are priced when set. One immutable object, read per
        # call: a reload replaces it here and the next call is priced with the new one.
        self.catalog = catalog
        # Each request label set's REQUEST histogram and its REQUEST_EXTRA record.
        self._series: dict[_SeriesCacheKey, tuple[Hist, Hist]] = {}
        self._connections: dict[tuple[RouteLabels, str], Hist] = {}
        self._connects: dict[bool, Hist] = {}
        self._calls: dict[tuple[bool, bool], Hist] = {}
        # Text-line starts ("gateway=… listener=… route=… "), one per RouteLabels object.
        self._prefixes: dict[RouteLabels, str] = {}
        self._last_failure_log = -FAILURE_LOG_INTERVAL

    def record(self, record: RequestRecord) -> None:
        try:
            (labels, backend, _, protocol, method, _, _, _, _, status, reason, _, duration, llm,
             retries, _, body_bytes, request_processing, response_processing) = record  # fmt: skip
            # The common case: one dict probe on the record's fields (RouteLabels hashes by
            # identity), no label strings built.
            cache_key = (labels, backend, protocol, method, status, reason)
            series = self._series.get(cache_key)
            if series is None:
                series = self._request_series(cache_key)
            hist, extra = series
            observe_request(hist, duration)
            if body_bytes:
                extra[RESPONSE_BYTES] += body_bytes
            if request_processing is not None:
                observe(extra, REQUEST_PROCESSING, PROCESSING_BUCKETS, request_processing)
            if response_processing is not None:
                observe(extra, RESPONSE_PROCESSING, PROCESSING_BUCKETS, response_processing)
            if retries:
                self._record_retries(cache_key, retries)
            cost = None
            if llm is not None:
                self._record_llm(labels, llm, duration)
                if self.catalog is not None:
                    cost = self._record_cost(labels, llm, self.catalog)
            access_log = self.access_log
            if access_log is not None:
                if self.policy is not None:
                    self._log_with_policy(access_log, self.policy, record, cost)
                elif access_log.json:
                    access_log.emit(_fields(record, cost))
                else:
                    access_log.emit_line(self._line(record, cost))
        except Exception:
            # Telemetry must never cost the connection its next request: log, go on.
            self._failed()

    def guardrail_checks(self, checks: Sequence[tuple[str, str]]) -> None:
        try:
            for phase, action in checks:
                self.registry.record_guardrail(phase, action)
        except Exception:
            self._failed()

    def _failed(self) -> None:
        now = time.monotonic()
        if now - self._last_failure_log >= FAILURE_LOG_INTERVAL:
            self._last_failure_log = now
            logger.exception("internal error recording a request (logged once a minute)")

    def _request_series(self, cache_key: _SeriesCacheKey) -> tuple[Hist, Hist]:
        labels, backend, protocol, method, status, reason = cache_key
        key: RequestKey = labels.values + (
            backend or UNKNOWN,
            protocol,
            _method(method),
            status,
            reason or UNKNOWN,
        )
        series = (self.registry.request_series(key), self.registry.request_extra(key))
        if len(self._series) >= SERIES_CACHE_LIMIT:
            self._series.clear()
        self._series[cache_key] = series
        return series

    # -- per connection and per upstream call (RequestRecorder) ----------------------------

    def connection_series(self, labels: RouteLabels, protocol: str) -> Hist:
        series = self._connections.get((labels, protocol))
        if series is None:
            bind, gateway, listener = labels.values[:3]
            series = self.registry.fixed_series(CONNECTION, (bind, gateway, listener, protocol))
            if len(self._connections) >= SERIES_CACHE_LIMIT:
                self._connections.clear()  # reloads make new label objects
            self._connections[labels, protocol] = series
        return series

    def upstream_connect(self, tls: bool, seconds: float) -> None:
        hist = self._connects.get(tls)
        if hist is None:
            hist = self._connects[tls] = self.registry.fixed_series(
                CONNECT, ("tls" if tls else "plaintext",)
            )
        observe(hist, 0, CONNECT_DURATION_BUCKETS, seconds)

    def upstream_call(self, llm: bool, seconds: float, mirror: bool = False) -> None:
        hist = self._calls.get((llm, mirror))
        if hist is None:
            hist = self._calls[llm, mirror] = self.registry.fixed_series(
                CALL, _CALL_KEYS[llm, mirror]
            )
        observe(hist, 0, REQUEST_DURATION_BUCKETS, seconds)

    def _record_retries(self, cache_key: _SeriesCacheKey, retries: int) -> None:
        labels, backend, protocol, method, status, reason = cache_key
        key: RequestKey = labels.values + (
            backend or UNKNOWN, protocol, _method(method), status, reason or UNKNOWN,
        )
        self.registry.record_retries(key, retries)

    def _record_llm(self, labels: RouteLabels, llm: LLMOutcome, duration: float) -> None:
        # agentgateway's metric operation is always "chat" (`add_llm_metrics`).
        key: LLMKey = labels.values + (
            "chat",
            llm.provider,
            llm.request_model or UNKNOWN,
            llm.response_model or UNKNOWN,
        )
        self.registry.record_llm(
            key,
            input_tokens=llm.input_tokens,
            output_tokens=llm.output_tokens,
            cached_input_tokens=llm.cached_input_tokens,
            duration_s=duration,
            ttft_s=llm.time_to_first_token,
            tpot_s=_time_per_output_token(llm, duration),
        )

    def _record_cost(
        self, labels: RouteLabels, llm: LLMOutcome, catalog: ModelCatalog
    ) -> Decimal | None:
        """The call's cost from the catalog (None when unpriced), counted under the labels of
        its token usage; every lookup is counted by status (agentgateway's `add_llm_metrics`)."""
        status, breakdown = price(catalog, llm)
        total = breakdown.total() if breakdown is not None else None
        key: LLMKey = labels.values + (
            "chat", llm.provider, llm.request_model or UNKNOWN, llm.response_model or UNKNOWN,
        )  # fmt: skip
        self.registry.record_cost(key, status, float(total) if total is not None else None)
        return total

    # -- the access line ------------------------------------------------------------------

    def _log_with_policy(
        self,
        access_log: AccessLog,
        policy: CompiledAccessLog,
        record: RequestRecord,
        cost: Decimal | None = None,
    ) -> None:
        """agentgateway's order (telemetry/log.rs `DropOnLog::drop`): the filter, then the
        built-in fields less the removed and replaced ones, then the added ones."""
        bound = None
        if policy.filter is not None or policy.additions_programs:
            bound = activation(log_variables(record, policy.uses), LOG_VARIABLES)
            if not policy.keep(bound):
                return
        as_json = access_log.json
        if not policy.hidden:  # a filter alone: the default line
            if as_json:
                access_log.emit(_fields(record, cost))
            else:
                access_log.emit_line(self._line(record, cost))
            return
        fields = _fields(record, cost)
        for name in policy.hidden:
            fields.pop(name, None)
        if bound is not None:
            for name, value in policy.additions(bound):
                fields[name] = _added_value(value, as_json)
        access_log.emit(fields)

    def _prefix(self, labels: RouteLabels) -> str:
        prefix = self._prefixes.get(labels)
        if prefix is None:
            names = (
                ("gateway", labels.gateway),
                ("listener", labels.listener),
                ("route_rule", labels.route_rule),
                ("route", labels.route),
            )
            prefix = "".join(f"{k}={text_value(v)} " for k, v in names if v)
            self._prefixes[labels] = prefix
        return prefix

    def _line(self, record: RequestRecord, cost: Decimal | None = None) -> str:
        """The text line; the common case is one f-string."""
        (labels, _, endpoint, protocol, method, host, path, version, peer, status, reason,
         error, duration, llm, retries, _, _, _, _) = record  # fmt: skip
        line = (
            f"info request {self._prefix(labels)}"
            f"{f'endpoint={endpoint} ' if endpoint else ''}src.addr={peer} "
            f"http.method={_method(method)} http.host={_logged(host)} "
            f"http.path={_logged(path)} http.version={version}"
            f"{f' http.status={status}' if status else ''} protocol={protocol}"
        )
        if llm is not None:
            line += _llm_text(llm, duration, cost)
        if retries:
            line += f" retry.attempt={retries}"  # agentgateway's field, in its place
        if error is not None:
            line += " error=" + text_value(error)
        if reason is not None and reason != Reason.UPSTREAM:
            line += " reason=" + reason
        return f"{line} duration={_millis(duration)}"


def _fields(record: RequestRecord, cost: Decimal | None = None) -> dict[str, object]:
    """The JSON line's fields, in the text line's order."""
    (labels, _, endpoint, protocol, method, host, path, version, peer, status, reason,
     error, duration, llm, retries, _, _, _, _) = record  # fmt: skip
    fields: dict[str, object] = {
        "gateway": labels.gateway,
        "listener": labels.listener,
        "route_rule": labels.route_rule,
        "route": labels.route,
        "endpoint": endpoint,
        "src.addr": peer,
        "http.method": _method(method),
        "http.host": host.decode("latin-1"),
        "http.path": path.decode("latin-1"),
        "http.version": version,
        "http.status": status or None,
        "protocol": protocol,
    }
    if llm is not None:
        fields.update(_llm_fields(llm, duration, cost))
    fields["retry.attempt"] = retries or None
    fields["error"] = error
    fields["reason"] = reason if reason != Reason.UPSTREAM else None
    fields["duration"] = _millis(duration)
    return {k: v for k, v in fields.items() if v is not None}


def _llm_fields(
    llm: LLMOutcome, duration: float, cost: Decimal | None = None
) -> dict[str, object]:
    """The `gen_ai.*` fields; times in seconds, as agentgateway logs them; the cost total as
    its decimal string (only the total: agentgateway logs the breakdown in traces)."""
    return {
        "gen_ai.operation.name": "embeddings" if llm.route_type == "embeddings" else "chat",
        "gen_ai.provider.name": llm.provider,
        "gen_ai.request.model": llm.request_model,
        "gen_ai.response.model": llm.response_model,
        "gen_ai.usage.input_tokens": llm.input_tokens,
        "gen_ai.usage.cache_read.input_tokens": llm.cached_input_tokens,
        "gen_ai.usage.output_tokens": llm.output_tokens,
        "agw.ai.time_to_first_token": llm.time_to_first_token,
        "agw.ai.time_per_output_token": _time_per_output_token(llm, duration),
        "agw.ai.usage.cost.total": format_amount(cost) if cost is not None else None,
        "gen_ai.request.temperature": llm.temperature,
        "gen_ai.request.max_tokens": llm.max_tokens,
    }


def _llm_text(llm: LLMOutcome, duration: float, cost: Decimal | None) -> str:
    """`_llm_fields` as text-line fields, each after a space (one f-string per field that
    has a value: the generic `format_fields` cost ~4x more on every LLM call)."""
    text = (
        " gen_ai.operation.name=embeddings"
        if llm.route_type == "embeddings"
        else " gen_ai.operation.name=chat"
    ) + f" gen_ai.provider.name={_logged(llm.provider)}"
    if llm.request_model is not None:
        text += f" gen_ai.request.model={_logged(llm.request_model)}"
    if llm.response_model is not None:
        text += f" gen_ai.response.model={_logged(llm.response_model)}"
    # Token counts are ints and times floats: their text never needs quotes.
    if llm.input_tokens is not None:
        text += f" gen_ai.usage.input_tokens={llm.input_tokens}"
    if llm.cached_input_tokens is not None:
        text += f" gen_ai.usage.cache_read.input_tokens={llm.cached_input_tokens}"
    if llm.output_tokens is not None:
        text += f" gen_ai.usage.output_tokens={llm.output_tokens}"
    if llm.time_to_first_token is not None:
        text += f" agw.ai.time_to_first_token={llm.time_to_first_token}"
        per_token = _time_per_output_token(llm, duration)
        if per_token is not None:
            text += f" agw.ai.time_per_output_token={per_token}"
    if cost is not None:
        text += f" agw.ai.usage.cost.total={text_value(format_amount(cost))}"
    if llm.temperature is not None:
        text += f" gen_ai.request.temperature={llm.temperature}"
    if llm.max_tokens is not None:
        text += f" gen_ai.request.max_tokens={llm.max_tokens}"
    return text


def log_variables(record: RequestRecord, uses: frozenset[str]) -> dict[str, object]:
    """The CEL variables the policy's expressions name, from the record."""
    variables: dict[str, object] = {}
    request = record[15]
    for name in uses:
        if name == "source":
            variables[name] = source_variable(record[8])
        elif name == "response":
            status = record[9]
            variables[name] = {"code": status} if status else {}
        elif name == "llm":
            llm = record[13]
            variables[name] = {} if llm is None else _llm_variable(llm)
        elif request is not None:
            variables.update(cel_variables(request, frozenset((name,))))
        else:
            variables[name] = {}  # no step saw the request (rejected before routing)
    return variables


def _llm_variable(llm: LLMOutcome) -> dict[str, object]:
    """`llm` as agentgateway's LLMContext names its fields; unknown values are absent
    (`prompt` and `completion` are not captured)."""
    total = None
    if llm.input_tokens is not None and llm.output_tokens is not None:
        total = llm.input_tokens + llm.output_tokens
    values: dict[str, object | None] = {
        "provider": llm.provider,
        "requestModel": llm.request_model,
        "responseModel": llm.response_model,
        "inputTokens": llm.input_tokens,
        "cachedInputTokens": llm.cached_input_tokens,
        "outputTokens": llm.output_tokens,
        "totalTokens": total,
        "streaming": llm.streaming,
    }
    return {k: v for k, v in values.items() if v is not None}


def _added_value(value: object, as_json: bool) -> object:
    """An `add` value as agentgateway writes it: a JSON value in the JSON line; in the text
    line a string as itself, a boolean as true/false, a map or list as compact JSON."""
    if isinstance(value, bytes | bytearray):  # the engine yields bytearray
        return base64.b64encode(value).decode("ascii")  # CEL bytes in JSON
    if isinstance(value, dict | list):
        # A CEL map has no order (agentgateway's is a hash map's): keys are sorted here so
        # the same value always logs the same way.
        value = json.loads(json.dumps(value, sort_keys=True, default=_json_default))
        return value if as_json else json.dumps(value, separators=(",", ":"))
    if isinstance(value, bool):
        return value if as_json else ("true" if value else "false")
    return value if isinstance(value, str | int | float) else str(value)


def _json_default(value: object) -> object:
    if isinstance(value, bytes | bytearray):  # the engine yields bytearray
        return base64.b64encode(value).decode("ascii")
    return str(value)
