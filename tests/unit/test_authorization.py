"""`authorization`: rule parsing, compile errors at load, agentgateway's evaluation order."""

from __future__ import annotations

from pathlib import Path

import pytest

from agw_fast.config.load_policies import parse_route_policies
from agw_fast.config.model import Authorization, AuthorizationRule, RoutePolicies
from agw_fast.core import cel
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_request_steps, run_steps
from agw_fast.policies.authorization import DENIED

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

P = "routes[0].policies"


def _parse(raw: object) -> RoutePolicies | None:
    return parse_route_policies({"authorization": raw}, P, Path("."))


def _request(
    path: bytes = b"/", team: bytes | None = b"a", peer: str = "127.0.0.1:5000"
) -> PolicyRequest:
    headers = [(b"host", b"x")] + ([(b"x-team", team)] if team is not None else [])
    return PolicyRequest(b"GET", b"x", path, b"", headers, None, peer)


def _allowed(rules: list[object], request: PolicyRequest | None = None) -> bool:
    policies = _parse({"rules": rules})
    steps = compile_request_steps(policies)
    answer = run_steps(steps, request or _request())
    assert answer in (None, DENIED)
    return answer is None


def test_rules_parse_as_agentgateway_writes_them() -> None:
    policies = _parse({"rules": ["true", {"allow": "a"}, {"deny": "b"}, {"require": "c"}]})
    assert policies is not None
    p = f"{P}.authorization.rules"
    assert policies.authorization == Authorization(
        (
            AuthorizationRule("allow", "true", f"{p}[0]"),
            AuthorizationRule("allow", "a", f"{p}[1].allow"),
            AuthorizationRule("deny", "b", f"{p}[2].deny"),
            AuthorizationRule("require", "c", f"{p}[3].require"),
        )
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({}, f"{P}.authorization.rules: "),
        ({"rules": "true"}, f"{P}.authorization.rules: "),
        ({"rules": [1]}, f"{P}.authorization.rules[0]: a rule is a CEL string or a map"),
        (
            {"rules": [{"allow": "a", "deny": "b"}]},
            f"{P}.authorization.rules[0]: a rule is a CEL string or a map",
        ),
        ({"rules": [{"permit": "a"}]}, f"{P}.authorization.rules[0].permit: unknown rule kind"),
        ({"rules": [{"deny": 1}]}, f"{P}.authorization.rules[0].deny: "),
        ({"rules": [], "mode": "x"}, f"{P}.authorization.mode"),
    ],
)
def test_malformed_rules_fail_at_load(raw: object, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _parse(raw)
    assert str(caught.value).startswith(message)


def test_a_bad_expression_fails_when_the_plan_is_built_naming_its_field() -> None:
    policies = _parse({"rules": ["true", {"deny": 'request.path.startsWith("/a"'}]})
    with pytest.raises(ConfigError) as caught:
        compile_request_steps(policies)
    text = str(caught.value)
    assert text.startswith(f"{P}.authorization.rules[1].deny: invalid CEL expression: 1:")
    assert "Syntax error" in text and "\n" not in text


def test_an_unknown_function_fails_at_load_not_at_request_time() -> None:
    policies = _parse({"rules": [{"require": 'coalesce(jwt.sub, "") == "x"'}]})
    with pytest.raises(
        ConfigError, match=r"rules\[0\]\.require: invalid CEL expression: .*coalesce"
    ):
        compile_request_steps(policies)


def test_a_missing_engine_is_refused_with_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cel, "_cel", None)
    with pytest.raises(ConfigError) as caught:
        compile_request_steps(_parse({"rules": ["true"]}))
    assert str(caught.value) == (
        f"{P}.authorization.rules[0]: invalid CEL expression: "
        "CEL expressions need the `cel` extra: pip install 'agw-fast[cel]'"
    )


def test_no_rules_is_no_step() -> None:
    assert compile_request_steps(_parse({"rules": []})) == ()


def test_the_denial_is_agentgateways() -> None:
    assert DENIED.response == (
        b"HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 20\r\n\r\n"
        b"authorization failed"
    )
    assert DENIED.reason == Reason.AUTHORIZATION == "Authorization"


TEAM_A = 'request.headers["x-team"] == "a"'
ADMIN = 'request.path.startsWith("/admin")'


def test_allow_rules_are_an_allowlist() -> None:
    assert _allowed([TEAM_A])
    assert not _allowed([TEAM_A], _request(team=b"b"))
    assert not _allowed([TEAM_A], _request(team=None))  # the missing header is an error: false
    assert _allowed([TEAM_A, 'request.headers["x-team"] == "b"'], _request(team=b"b"))  # any


def test_deny_only_rules_are_a_denylist() -> None:
    assert _allowed([{"deny": ADMIN}])
    assert not _allowed([{"deny": ADMIN}], _request(b"/admin/x"))
    # a deny that fails to evaluate does not deny (agentgateway warns about this mode)
    assert _allowed([{"deny": 'request.headers["x-missing"] == "1"'}])


def test_deny_takes_precedence_over_allow() -> None:
    rules: list[object] = [TEAM_A, {"deny": ADMIN}]
    assert _allowed(rules)
    assert not _allowed(rules, _request(b"/admin"))


def test_every_require_must_hold_and_a_failing_one_denies() -> None:
    rules: list[object] = [{"require": TEAM_A}, {"require": 'source.address.startsWith("127.")'}]
    assert _allowed(rules)
    assert not _allowed(rules, _request(team=b"b"))
    assert not _allowed(rules, _request(peer="10.0.0.1:1"))
    assert not _allowed(rules, _request(team=None))  # an error is not true


def test_require_only_allows_when_all_hold_and_require_does_not_replace_allow() -> None:
    assert _allowed([{"require": "true"}])
    # requires hold, but allow rules exist and none matched: allowlist semantics deny
    assert not _allowed([{"require": "true"}, {"allow": "false"}])
    assert _allowed([{"require": "true"}, {"allow": "true"}])


def test_a_non_boolean_result_is_false() -> None:
    assert not _allowed(["request.path"])
    assert not _allowed([{"require": "1"}])
    assert _allowed([{"deny": '"yes"'}])


def test_source_cidr_rules() -> None:
    rules: list[object] = [
        'cidr("10.0.0.0/8").containsIP(source.address)',
        {"deny": 'cidr("10.1.0.0/16").containsIP(source.address)'},
    ]
    assert _allowed(rules, _request(peer="10.2.3.4:1"))
    assert not _allowed(rules, _request(peer="10.1.2.3:1"))
    assert not _allowed(rules, _request(peer="[::1]:1"))


def test_claims_from_an_authentication_step() -> None:
    rules: list[object] = ['jwt.sub == "alice"']
    request = _request()
    assert not _allowed(rules, request)
    request.set_claims("jwt", {"sub": "alice"})
    assert _allowed(rules, request)


def test_authorization_runs_before_direct_response() -> None:
    with_direct = parse_route_policies(
        {"authorization": {"rules": ["false"]}, "directResponse": {"status": 200}}, P, Path(".")
    )
    assert run_steps(compile_request_steps(with_direct), _request()) == DENIED
