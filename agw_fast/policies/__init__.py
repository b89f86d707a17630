"""Route policies that act on a request before it goes upstream: one pipeline of steps.

Each policy module turns its part of a route's config, at load, into a `RequestStep`: a
callable that looks at a `PolicyRequest` and returns None (go on) or a `PolicyAnswer` (a
complete local response and its `Reason`). `compile_request_steps` builds a route's steps
in agentgateway's order; a route gets a step only for a policy it configures, so a route
without policies pays one empty-tuple check per request.

A step that must hold the request for a while (`delay`) never waits itself: it sets
`request.delay` and returns `DEFER`; `run_steps` records the steps after it in
`request.resume`, and the client connection runs those, and proxies the request, from a
timer (`DownstreamProtocol._defer`), serving other connections meanwhile.

Adding a policy: parse its config in `config/load_policies.py`, write one module here with a
`build(policies) -> RequestStep | None`, and add that function to `STEP_BUILDERS`.

State shared by all workers: `build` runs when the config is compiled, which `serve()` does in
the supervisor before it forks, so memory a builder maps MAP_SHARED (an anonymous mmap or a
memfd) is the same pages in every worker and in any worker forked again later
(see `localratelimit`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from agw_fast.config.model import GatewayPolicies, RoutePolicies
from agw_fast.policies import (
    api_key,
    authorization,
    basic_auth,
    cors,
    delay,
    direct_response,
    jwt,
    localratelimit,
    redirect,
    retry,
)
from agw_fast.policies.request import DEFER, PolicyAnswer, PolicyRequest, RequestStep

__all__ = [
    "DEFER",
    "GATEWAY_STEP_BUILDERS",
    "STEP_BUILDERS",
    "PolicyAnswer",
    "PolicyRequest",
    "RequestStep",
    "compile_gateway_steps",
    "compile_request_steps",
    "run_steps",
]

StepBuilder = Callable[[RoutePolicies], RequestStep | None]

# The order agentgateway applies them in (proxy/httpproxy.rs): cors, the authentication
# policies (jwtAuth, basicAuth, apiKey), extAuthz, authorization, the retry precondition,
# rate limits, csrf, requestRedirect, delay, directResponse. The first step that answers ends
# the request. CORS comes first: a preflight is answered before any other policy, and its
# fields reach later steps' answers too.
STEP_BUILDERS: tuple[StepBuilder, ...] = (
    cors.build,
    jwt.build,
    basic_auth.build,
    api_key.build,
    authorization.build,
    retry.build,
    localratelimit.build,
    redirect.build,
    delay.build,
    direct_response.build,
)


# A listener's `policies` (agentgateway's gateway phase, `apply_gateway_policies` in
# proxy/httpproxy.rs), run before route selection in the same order as a route's; the
# route's own steps run after them on the same request, so both must let it through.
GATEWAY_STEP_BUILDERS: tuple[Callable[[GatewayPolicies], RequestStep | None], ...] = (
    cors.build,
    jwt.build,
    basic_auth.build,
    api_key.build,
    authorization.build,
)


def compile_gateway_steps(policies: GatewayPolicies | None) -> tuple[RequestStep, ...]:
    """The steps a listener runs on each request before choosing a route."""
    if policies is None:
        return ()
    steps = (build(policies) for build in GATEWAY_STEP_BUILDERS)
    return tuple(step for step in steps if step is not None)


def compile_request_steps(policies: RoutePolicies | None) -> tuple[RequestStep, ...]:
    """The steps a route runs on each request, in order (empty for a route without any)."""
    if policies is None:
        return ()
    steps = (build(policies) for build in STEP_BUILDERS)
    return tuple(step for step in steps if step is not None)


def run_steps(steps: Sequence[RequestStep], request: PolicyRequest) -> PolicyAnswer | None:
    """The answer of the first step that answers, or None to proxy the request. `DEFER`
    means: wait `request.delay` seconds, then run `request.resume` the same way."""
    for step in steps:
        answer = step(request)
        if answer is not None:
            if answer is DEFER:
                # Only on the (rare) deferring path: where to pick up when the time is up.
                request.resume = steps[steps.index(step) + 1 :]
            return answer
    return None
