"""`directResponse`: answer the route's requests with a response the gateway makes.

A response without `bodyExpression` and `headers` is prebuilt at load. With them
(agentgateway's `DirectResponse::apply`, crates/agentgateway/src/http/filters.rs) each
request evaluates the CEL expressions against its variables: `bodyExpression` gives the
body (a string or bytes as is, any other value as compact JSON; an evaluation error answers
500 "failed to apply filters: invalid filter configuration: ..."), and each `headers`
expression a field value (a string or bytes that is a valid field value; anything else,
an error included, leaves the field out).

The `conditional` form (agentgateway's `LocalConditionalPolicies`, types/local.rs, selected
as `RequestPolicy::select` does in store/policy.rs): the first entry whose CEL `condition`
is true answers, an entry without a condition (only last) always does, and when none does
the request goes on to the backend. A condition that fails to evaluate is false.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
from collections.abc import Callable

from agw_fast.config.model import ConditionalDirectResponse, DirectResponse, RoutePolicies
from agw_fast.config.validate import join
from agw_fast.core.cel import (
    Activation,
    CelCompileError,
    CelProgram,
    EvaluationError,
    activation,
    compile_expression,
)
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]

# Builds one answer from the request's converted CEL variables.
_Dynamic = Callable[[Activation], PolicyAnswer]

# A field value: visible ASCII, obs-text, SP and HTAB (RFC 9110 §5.5), as http's HeaderValue.
_INVALID_FIELD_VALUE = re.compile(rb"[^\t\x20-\x7e\x80-\xff]")
# agw-fast does not buffer the request body for CEL (agentgateway does for `request.body`).
_REQUEST_BODY = re.compile(r"\brequest\s*\.\s*body\b|\brequest\s*\[\s*['\"]body['\"]\s*\]")
_FILTER_ERROR = "failed to apply filters: invalid filter configuration: "


def _compile(text: str, path: str) -> CelProgram:
    if _REQUEST_BODY.search(text):
        raise ConfigError(path, "not supported: request.body in a CEL expression")
    try:
        return compile_expression(text)
    except CelCompileError as error:
        raise ConfigError(path, f"invalid CEL expression: {error}") from None


def _prebuilt(response: DirectResponse) -> PolicyAnswer:
    # local_response leaves the body out for 204/304, which end at the head.
    return PolicyAnswer(
        local_response(response.status, response.body, content_type=None),
        Reason.DIRECT_RESPONSE,
    )


def _as_body(value: object) -> bytes:
    """agentgateway's `value_as_byte_or_json` (cel/helpers.rs): a string or bytes as is,
    anything else as compact JSON in the shape of cel-fork's `json()` (json.rs)."""
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return json.dumps(_json_ready(value), separators=(",", ":"), ensure_ascii=False).encode()


def _json_ready(value: object) -> object:
    # Nested bytes as base64, a timestamp as RFC 3339, a duration as "1.5s", a non-finite
    # float as null (serde_json's Value has no NaN).
    if isinstance(value, dict):
        return {_json_key(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_ready(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime.datetime):
        return value.isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.timedelta):
        seconds = f"{value.total_seconds():.9f}".rstrip("0").rstrip(".")
        return f"{seconds}s"
    return value


def _json_key(key: object) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return str(key)


def _as_field_value(value: object) -> bytes | None:
    if isinstance(value, str):
        value = value.encode()
    if not isinstance(value, (bytes, bytearray)) or _INVALID_FIELD_VALUE.search(value):
        return None
    return bytes(value)


def _dynamic(response: DirectResponse) -> tuple[_Dynamic, frozenset[str]] | None:
    """The per-request builder of a response with expressions, and the variables they
    read; None for a static response."""
    if response.body_expression is None and not response.headers:
        return None
    status, static_body = response.status, response.body
    body_program = (
        None
        if response.body_expression is None
        else _compile(response.body_expression, join(response.path, "bodyExpression"))
    )
    header_programs = tuple(
        (name.encode(), _compile(text, join(join(response.path, "headers"), name)))
        for name, text in response.headers
    )
    programs = [program for _, program in header_programs]
    if body_program is not None:
        programs.append(body_program)
    uses = frozenset().union(*(program.uses for program in programs))

    def answer(variables: Activation) -> PolicyAnswer:
        body = static_body
        if body_program is not None:
            value = body_program.evaluate(variables)
            try:
                if isinstance(value, EvaluationError):
                    raise ValueError(value.message)
                body = _as_body(value)
            except (ValueError, TypeError) as error:
                message = (_FILTER_ERROR + str(error)).encode()
                return PolicyAnswer(local_response(500, message), Reason.INTERNAL)
        # Evaluated in order; a later field of the same name replaces an earlier one.
        fields: dict[bytes, bytes] = {}
        for name, program in header_programs:
            field_value = _as_field_value(program.evaluate(variables))
            if field_value is not None:
                fields[name] = field_value
        extra = b"".join(name + b": " + v + b"\r\n" for name, v in fields.items())
        return PolicyAnswer(
            local_response(status, body, content_type=None, extra_headers=extra),
            Reason.DIRECT_RESPONSE,
        )

    return answer, uses


def build(policies: RoutePolicies) -> RequestStep | None:
    response = policies.direct_response
    if response is None:
        return None
    if isinstance(response, ConditionalDirectResponse):
        return _conditional(response)
    dynamic = _dynamic(response)
    if dynamic is None:
        prebuilt = _prebuilt(response)

        def answer(request: PolicyRequest) -> PolicyAnswer:
            return prebuilt

        return answer
    make, uses = dynamic

    def answer_dynamic(request: PolicyRequest) -> PolicyAnswer:
        return make(activation(cel_variables(request, uses)))

    return answer_dynamic


def _choice(response: DirectResponse) -> tuple[PolicyAnswer | _Dynamic, frozenset[str]]:
    dynamic = _dynamic(response)
    return (_prebuilt(response), frozenset()) if dynamic is None else dynamic


def _conditional(policy: ConditionalDirectResponse) -> RequestStep:
    entries: list[tuple[CelProgram, PolicyAnswer | _Dynamic]] = []
    fallback: PolicyAnswer | _Dynamic | None = None
    uses: frozenset[str] = frozenset()
    for condition, response, path in policy.entries:
        chosen, reads = _choice(response)
        uses |= reads
        if condition is None:
            fallback = chosen  # the loader keeps it last
            continue
        program = _compile(condition, path)
        uses |= program.uses
        entries.append((program, chosen))
    conditions = tuple(entries)

    def answer_if(request: PolicyRequest) -> PolicyAnswer | None:
        variables = activation(cel_variables(request, uses))
        chosen = fallback
        for program, candidate in conditions:
            if program.evaluate_bool(variables):
                chosen = candidate
                break
        if chosen is None or isinstance(chosen, PolicyAnswer):
            return chosen
        return chosen(variables)

    return answer_if
