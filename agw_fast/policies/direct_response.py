"""`directResponse`: answer the route's requests with a fixed, prebuilt response.

The `conditional` form (agentgateway's `LocalConditionalPolicies`, types/local.rs, selected
as `RequestPolicy::select` does in store/policy.rs): the first entry whose CEL `condition`
is true answers, an entry without a condition (only last) always does, and when none does
the request goes on to the backend. A condition that fails to evaluate is false.
"""

from __future__ import annotations

from agw_fast.config.model import ConditionalDirectResponse, DirectResponse, RoutePolicies
from agw_fast.core.cel import CelCompileError, CelProgram, activation, compile_expression
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]


def _prebuilt(response: DirectResponse) -> PolicyAnswer:
    # local_response leaves the body out for 204/304, which end at the head.
    return PolicyAnswer(
        local_response(response.status, response.body, content_type=None),
        Reason.DIRECT_RESPONSE,
    )


def build(policies: RoutePolicies) -> RequestStep | None:
    response = policies.direct_response
    if response is None:
        return None
    if isinstance(response, ConditionalDirectResponse):
        return _conditional(response)
    prebuilt = _prebuilt(response)

    def answer(request: PolicyRequest) -> PolicyAnswer:
        return prebuilt

    return answer


def _conditional(policy: ConditionalDirectResponse) -> RequestStep:
    entries: list[tuple[CelProgram, PolicyAnswer]] = []
    fallback: PolicyAnswer | None = None
    for condition, response, path in policy.entries:
        if condition is None:
            fallback = _prebuilt(response)  # the loader keeps it last
            continue
        try:
            program = compile_expression(condition)
        except CelCompileError as error:
            raise ConfigError(path, f"invalid CEL expression: {error}") from None
        entries.append((program, _prebuilt(response)))
    conditions = tuple(entries)
    uses = frozenset().union(*(program.uses for program, _ in conditions))

    def answer_if(request: PolicyRequest) -> PolicyAnswer | None:
        variables = activation(cel_variables(request, uses))
        for program, prebuilt in conditions:
            if program.evaluate_bool(variables):
                return prebuilt
        return fallback

    return answer_if
