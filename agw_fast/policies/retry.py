"""`retry.precondition` and `retry.condition`, compiled at load; the retries themselves live in
the proxy's exchange.

`precondition`: a CEL expression on the request; when it is not true, the request is sent
once only (agentgateway's httpproxy.rs evaluates it after `authorization`, before the rate
limits, and drops the route's retry policy for that request). A failed evaluation counts as
false (`eval_bool`).

`condition`: a CEL expression on each response (and the request) deciding whether it is
retried. agentgateway's `should_retry` (proxy/httpproxy.rs) retries a response whose status
is in `codes`, and otherwise evaluates `condition`: a listed code is retried whatever the
condition says, and a condition that fails to evaluate, or yields anything but `true`, does
not retry (`eval_bool`). Connection errors are retried without it, as before.

agw-fast decides on the response head, before any byte of it is relayed, and never buffers
the body for that: the condition reads `response.code`, `response.headers` (every field the
upstream sent: as in agentgateway, it is asked before the response policies, such as a header
modifier, change them) and the request's variables (`request`, `source`,
`jwt`, `apiKey`, `basicAuth`). An expression reading any other part of `response` (`body`,
`bodyPrefix`, `grpcStatus`...) or another variable (`llm`...) is refused at load.
"""

from __future__ import annotations

import re

from agw_fast.config.model import RetryPolicy, RoutePolicies
from agw_fast.core.cel import (
    RETRY_VARIABLES,
    CelCompileError,
    CelProgram,
    activation,
    compile_expression,
)
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables, response_variable
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["RetryCondition", "build", "compile_condition"]

# The fields of `response` known on its head, before the body is read.
_RESPONSE_FIELDS = ("code", "headers")
_STRING = re.compile(r"""[rRbB]*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_RESPONSE = re.compile(r"(?<![.\w])response\b")
# What follows `response`: `.field`, `.?field` or `["field"]`.
_SELECT = re.compile(
    r"""\s*\.\s*\??\s*([A-Za-z_][A-Za-z0-9_]*)|\s*\[\s*\??\s*("[^"]*"|'[^']*')\s*\]"""
)


def build(policies: RoutePolicies) -> RequestStep | None:
    retry = policies.retry
    if retry is None:
        return None
    if retry.precondition is None:
        condition = compile_condition(retry)
        # A condition reading the request needs the request as the steps saw it: a step
        # makes the client connection build a `PolicyRequest` and hand it to the exchange.
        return _capture if condition is not None and condition.request_uses else None
    try:
        program = compile_expression(retry.precondition)
    except CelCompileError as error:
        raise ConfigError(retry.path, f"invalid CEL expression: {error}") from None
    uses = program.uses

    def precondition(request: PolicyRequest) -> PolicyAnswer | None:
        if not program.evaluate_bool(activation(cel_variables(request, uses))):
            request.no_retry = True
        return None

    return precondition


def _capture(request: PolicyRequest) -> PolicyAnswer | None:
    return None


class RetryCondition:
    """A compiled `retry.condition`; `holds` is asked on a response head whose status is not
    in `codes`."""

    __slots__ = ("program", "request_uses", "headers")

    def __init__(self, program: CelProgram, headers: bool) -> None:
        self.program = program
        self.request_uses = program.uses - {"response"}
        self.headers = headers  # whether `response.headers` is read (else only the code)

    def holds(self, status: int, lines: list[bytes], request: PolicyRequest | None) -> bool:
        """Whether the response (status, field lines) is retried; false when the
        expression fails to evaluate or is not a boolean, as agentgateway's `eval_bool`.
        `request` is None only when the route ran no step (then nothing reads it)."""
        program = self.program
        variables: dict[str, object] = {}
        if request is not None and self.request_uses:
            variables = cel_variables(request, self.request_uses)
        if "response" in program.uses:
            variables["response"] = response_variable(status, lines if self.headers else None)
        return program.evaluate_bool(activation(variables, RETRY_VARIABLES))


def compile_condition(retry: RetryPolicy | None) -> RetryCondition | None:
    """The route's compiled `retry.condition`, or None; a `ConfigError` naming
    `…retry.condition` when it does not compile or reads what the head cannot offer."""
    if retry is None or retry.condition is None:
        return None
    text = retry.condition
    path = retry.condition_path
    try:
        program = compile_expression(text, RETRY_VARIABLES)
    except CelCompileError as error:
        raise ConfigError(path, f"invalid CEL expression: {error}") from None
    headers = False
    for field in _response_fields(text):
        if field not in _RESPONSE_FIELDS:
            what = f"the CEL field `response.{field}`" if field else "`response` as a whole"
            raise ConfigError(
                path,
                f"not supported: {what} (a retry condition is "
                "evaluated on the response head, before its body: agw-fast has "
                "response.code, response.headers)",
            )
        headers = headers or field == "headers"
    return RetryCondition(program, headers)


def _response_fields(text: str) -> list[str]:
    """The field each use of `response` in `text` selects; "" for a use that selects none
    (the whole map: refused, since it would hold less than agentgateway's)."""
    # String literals blanked out at the same length, so positions match `text`.
    blank = _STRING.sub(lambda m: '"' + " " * (len(m.group(0)) - 2) + '"', text)
    fields = []
    for use in _RESPONSE.finditer(blank):
        select = _SELECT.match(text, use.end())
        if select is None:
            fields.append("")
        elif select.group(1) is not None:
            fields.append(select.group(1))
        else:
            fields.append(select.group(2)[1:-1])
    return fields
