"""`directResponse`: answer every request of the route with a fixed, prebuilt response."""

from __future__ import annotations

from agw_fast.config.model import RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]


def build(policies: RoutePolicies) -> RequestStep | None:
    response = policies.direct_response
    if response is None:
        return None
    # local_response leaves the body out for 204/304, which end at the head.
    prebuilt = PolicyAnswer(
        local_response(response.status, response.body, content_type=None),
        Reason.DIRECT_RESPONSE,
    )

    def answer(request: PolicyRequest) -> PolicyAnswer:
        return prebuilt

    return answer
