"""`authorization`: CEL rules that let a request through or answer 403.

The rules are evaluated as agentgateway does (core/authorization.py, `RuleSet`). A denied
request gets 403 `authorization failed` (text/plain; `ProxyError::AuthorizationFailed`,
proxy/mod.rs) with reason `Authorization`.
"""

from __future__ import annotations

from agw_fast.config.model import GatewayPolicies, RoutePolicies
from agw_fast.core.authorization import RuleSet
from agw_fast.core.cel import activation
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["DENIED", "build"]

DENIED = PolicyAnswer(local_response(403, b"authorization failed"), Reason.AUTHORIZATION)


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    rules = RuleSet.compile(policies.authorization)
    if rules is None:
        return None  # no rules: everyone has access, at no cost
    uses = rules.uses
    allows = rules.allows

    def authorize(request: PolicyRequest) -> PolicyAnswer | None:
        return None if allows(activation(cel_variables(request, uses))) else DENIED

    return authorize
