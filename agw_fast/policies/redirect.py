"""`requestRedirect` on a route: answer with a Location built from the client's request."""

from __future__ import annotations

from agw_fast.config.model import RoutePolicies
from agw_fast.core.rewrite import local_response, redirect_response
from agw_fast.errors import ProxyError
from agw_fast.policies.request import PolicyRequest, RequestStep

__all__ = ["build"]


def build(policies: RoutePolicies) -> RequestStep | None:
    redirect = policies.request_redirect
    if redirect is None:
        return None

    def answer(request: PolicyRequest) -> bytes:
        try:
            return redirect_response(
                redirect, request.host, request.path, request.query, request.matched_prefix
            )
        except ProxyError as error:
            return local_response(error.status, error.body.encode())

    return answer
