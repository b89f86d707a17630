"""`delay`: hold a request for a while before it goes on (fault injection).

agentgateway (crates/agentgateway/src/http/delay.rs): `duration` is a duration string
(`2s`), fixed, or a CEL expression evaluated per request whose value is a duration or a
number of milliseconds; a non-positive result, an error or any other type injects no
delay. It runs after the authentication, authorization, rate-limit and redirect policies
and before `directResponse` (proxy/httpproxy.rs), and counts against the route's request
timeout (`RequestDeadline`).

The step itself never waits: it records the seconds on the request and answers `DEFER`;
the connection then runs the steps after it, and proxies the request, from a timer.
"""

from __future__ import annotations

import math
from datetime import timedelta

from agw_fast.config.model import RoutePolicies
from agw_fast.core.cel import CelCompileError, activation, compile_expression
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import DEFER, PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build", "delay_seconds"]


def delay_seconds(value: object) -> float:
    """Seconds to wait for a CEL result: a duration as is, a number as milliseconds;
    0.0 (no delay) for a non-positive or non-finite one and for any other value."""
    if isinstance(value, timedelta):
        seconds = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000.0
    else:
        return 0.0
    return seconds if seconds > 0.0 and math.isfinite(seconds) else 0.0


def build(policies: RoutePolicies) -> RequestStep | None:
    policy = policies.delay
    if policy is None:
        return None
    expression = policy.expression
    if expression is None:
        fixed = policy.seconds
        if fixed <= 0.0:
            return None  # `0s`: nothing to do, at no cost

        def hold(request: PolicyRequest) -> PolicyAnswer:
            request.delay = fixed
            return DEFER

        return hold
    try:
        program = compile_expression(expression)
    except CelCompileError as error:
        raise ConfigError(policy.path, f"invalid CEL expression: {error}") from None
    uses = program.uses

    def hold_for(request: PolicyRequest) -> PolicyAnswer | None:
        seconds = delay_seconds(program.evaluate(activation(cel_variables(request, uses))))
        if not seconds:
            return None
        request.delay = seconds
        return DEFER

    return hold_for
