"""`retry.precondition`: a CEL expression on the request; when it is not true, the request is
sent once only (agentgateway's httpproxy.rs evaluates it after `authorization`, before the
rate limits, and drops the route's retry policy for that request). A failed evaluation counts
as false (`eval_bool`). The retries themselves live in the proxy's exchange.
"""

from __future__ import annotations

from agw_fast.config.model import RoutePolicies
from agw_fast.core.cel import CelCompileError, activation, compile_expression
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]


def build(policies: RoutePolicies) -> RequestStep | None:
    retry = policies.retry
    if retry is None or retry.precondition is None:
        return None
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
