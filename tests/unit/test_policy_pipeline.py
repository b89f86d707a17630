"""The request pipeline: steps in order, the first answer wins, response fields accumulate."""

from __future__ import annotations

from agw_fast.config.model import DirectResponse, RequestRedirect, RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.policies import PolicyAnswer, PolicyRequest, compile_request_steps, run_steps


def _request() -> PolicyRequest:
    return PolicyRequest(b"GET", b"example.com", b"/a", b"?q=1", [], None, "127.0.0.1:5000")


def test_a_route_without_policies_has_no_steps() -> None:
    assert compile_request_steps(None) == ()
    assert compile_request_steps(RoutePolicies()) == ()


def test_redirect_answers_before_direct_response() -> None:
    # agentgateway's order (proxy/httpproxy.rs): requestRedirect, then directResponse.
    policies = RoutePolicies(
        direct_response=DirectResponse(200, b"hi"), request_redirect=RequestRedirect(status=301)
    )
    steps = compile_request_steps(policies)
    assert len(steps) == 2
    answer = run_steps(steps, _request())
    assert answer is not None
    assert answer.response.startswith(b"HTTP/1.1 301 Moved Permanently\r\n")
    assert answer.reason == Reason.DIRECT_RESPONSE


def test_steps_run_in_order_and_collect_response_fields() -> None:
    seen: list[str] = []

    def tag(request: PolicyRequest) -> None:
        seen.append("tag")
        request.add_response_header(b"x-one", b"1")
        request.add_response_header(b"x-two", b"2")

    def deny(request: PolicyRequest) -> PolicyAnswer:
        seen.append("deny")
        return PolicyAnswer(b"HTTP/1.1 403 Forbidden\r\n\r\n", "Denied")

    def never(request: PolicyRequest) -> None:
        seen.append("never")

    request = _request()
    assert run_steps((tag, deny, never), request) == (b"HTTP/1.1 403 Forbidden\r\n\r\n", "Denied")
    assert seen == ["tag", "deny"]
    assert request.response_lines == [b"x-one: 1\r\n", b"x-two: 2\r\n"]
    assert _request().response_lines is None
