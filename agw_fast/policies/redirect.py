"""`requestRedirect` on a route: answer with a Location built from the client's request."""

from __future__ import annotations

from agw_fast.config.model import RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response, redirect_response
from agw_fast.errors import ProxyError
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]


def build(policies: RoutePolicies) -> RequestStep | None:
    redirect = policies.request_redirect
    if redirect is None:
        return None

    # agentgateway answers a redirect as a direct response; one it cannot build is a filter
    # error (Internal).
    def answer(request: PolicyRequest) -> PolicyAnswer:
        try:
            response = redirect_response(
                redirect, request.host, request.path, request.query, request.matched_prefix
            )
        except ProxyError as error:
            return PolicyAnswer(local_response(error.status, error.body.encode()), Reason.INTERNAL)
        return PolicyAnswer(response, Reason.DIRECT_RESPONSE)

    return answer
