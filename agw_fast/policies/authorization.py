"""`authorization`: CEL rules that let a request through or answer 403.

agentgateway's evaluation (crates/agentgateway/src/http/authorization.rs, `RuleSets::validate`):
no rules allow everything; any true `deny` denies; then every `require` must be true; then
any true `allow` allows; otherwise the request is allowed only when there are no `allow`
rules (a deny-only list is a denylist, an allow list an allowlist). A rule whose evaluation
fails (a missing header, a wrong type) counts as false (`eval_bool`): a failed `deny` does
not deny, a failed `require` denies. A denied request gets 403 `authorization failed`
(text/plain; `ProxyError::AuthorizationFailed`, proxy/mod.rs) with reason `Authorization`.
"""

from __future__ import annotations

from agw_fast.config.model import GatewayPolicies, RoutePolicies
from agw_fast.core.cel import CelCompileError, CelProgram, activation, compile_expression
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["DENIED", "build"]

DENIED = PolicyAnswer(local_response(403, b"authorization failed"), Reason.AUTHORIZATION)


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    authorization = policies.authorization
    if authorization is None or not authorization.rules:
        return None  # no rules: everyone has access, at no cost
    allow: list[CelProgram] = []
    deny: list[CelProgram] = []
    require: list[CelProgram] = []
    for rule in authorization.rules:
        try:
            program = compile_expression(rule.expression)
        except CelCompileError as error:
            raise ConfigError(rule.path, f"invalid CEL expression: {error}") from None
        {"allow": allow, "deny": deny, "require": require}[rule.mode].append(program)
    uses = frozenset().union(*(p.uses for p in (*allow, *deny, *require)))
    allow_rules, deny_rules, require_rules = tuple(allow), tuple(deny), tuple(require)
    allow_by_default = not allow_rules

    def authorize(request: PolicyRequest) -> PolicyAnswer | None:
        variables = activation(cel_variables(request, uses))
        for program in deny_rules:
            if program.evaluate_bool(variables):
                return DENIED
        for program in require_rules:
            if not program.evaluate_bool(variables):
                return DENIED
        for program in allow_rules:
            if program.evaluate_bool(variables):
                return None
        return None if allow_by_default else DENIED

    return authorize
