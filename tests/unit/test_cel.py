"""The CEL engine: compile errors at load (one line), agentgateway's variables and functions."""

from __future__ import annotations

import re

import pytest

from agw_fast.core import cel
from agw_fast.core.cel import CelCompileError, compile_expression
from agw_fast.policies.cel_context import cel_variables, source_variable
from agw_fast.policies.request import PolicyRequest

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")


def _request(
    headers: list[tuple[bytes, bytes]] | None = None,
    source: str = "127.0.0.1:5000",
    version: bytes = b"1.1",
) -> PolicyRequest:
    return PolicyRequest(
        b"POST", b"api.example.com:8080", b"/v1/chat", b"?a=1&b=2",
        headers if headers is not None else [(b"host", b"api.example.com:8080"), (b"x-team", b"a")],
        None, source, version,
    )  # fmt: skip


def _eval(expression: str, request: PolicyRequest | None = None) -> object:
    program = compile_expression(expression)
    return program.evaluate(cel.activation(cel_variables(request or _request(), program.uses)))


# --- compile errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1 +", "1:4: Syntax error: mismatched input '<EOF>'"),
        ('request.headers["x"] ==', "Syntax error"),
        ("foo(1)", "1:4: undeclared reference to 'foo'"),
        ("nope == 1", "undeclared reference to 'nope'"),
        ('"a".noSuchMethod()', "undeclared reference to 'noSuchMethod'"),
        ("1 + 'a'", "found no matching overload for '_+_'"),
    ],
)
def test_a_bad_expression_fails_to_compile_with_one_line(expression: str, message: str) -> None:
    with pytest.raises(CelCompileError) as caught:
        compile_expression(expression)
    text = str(caught.value)
    assert message in text
    assert "\n" not in text
    assert "INVALID_ARGUMENT" not in text and "<input>" not in text


@pytest.mark.parametrize(
    "name", ["coalesce", "regexReplace", "toJson", "fail", "unvalidatedJwtPayload"]
)
def test_agentgateway_functions_agw_fast_lacks_are_named_at_load(name: str) -> None:
    with pytest.raises(CelCompileError, match=rf"agentgateway's {name}\(\) is not supported"):
        compile_expression(f'{name}(request.path, "x") == "y"')


@pytest.mark.parametrize("name", ["response", "llm", "llmRequest", "mcp", "backend"])
def test_agentgateway_variables_agw_fast_lacks_fail_at_load(name: str) -> None:
    with pytest.raises(CelCompileError, match=rf"the CEL variable `{name}` is not supported"):
        compile_expression(f'{name}.x == "y"')


def test_a_missing_engine_is_refused_with_the_pip_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cel, "_cel", None)
    with pytest.raises(CelCompileError, match=re.escape("pip install 'agw-fast[cel]'")):
        compile_expression("true")


# --- variables ---------------------------------------------------------------------------


def test_only_the_variables_an_expression_names_are_built() -> None:
    assert compile_expression('request.path == "/"').uses == {"request"}
    assert compile_expression('source.port > 0 && jwt.sub == "x"').uses == {"source", "jwt"}
    # a name inside a string literal is not a use
    assert compile_expression('"request" == "source"').uses == frozenset()
    assert cel_variables(_request(), frozenset()) == {}


def test_request_variable() -> None:
    assert _eval("request.method") == "POST"
    assert _eval("request.path") == "/v1/chat"
    assert _eval("request.pathAndQuery") == "/v1/chat?a=1&b=2"
    assert _eval("request.host") == "api.example.com:8080"
    assert _eval("request.uri") == "http://api.example.com:8080/v1/chat?a=1&b=2"
    assert _eval("request.scheme") == "http"
    assert _eval("request.version") == "HTTP/1.1"
    assert _eval("request.version", _request(version=b"1.0")) == "HTTP/1.0"
    assert _eval('request.headers["x-team"]') == "a"
    assert _eval('"x-team" in request.headers && !("x-other" in request.headers)') is True


def test_header_names_in_literal_keys_match_case_insensitively_as_in_agentgateway() -> None:
    assert _eval('request.headers["X-Team"] == "a" && request.headers[\'X-TEAM\'] == "a"') is True
    assert _eval('{"X-Team": 1}["X-Team"]') == 1  # only request.headers keys are names
    assert _eval('"request.headers[\\"X\\"]"') == 'request.headers["X"]'


def test_headers_sent_twice_are_a_list_and_non_utf8_ones_are_absent() -> None:
    request = _request([(b"x-a", b"1"), (b"x-a", b"2"), (b"x-b", b"\xff"), (b"x-c", b"\xc3\xa9")])
    assert _eval('request.headers["x-a"]', request) == ["1", "2"]
    assert _eval('"x-b" in request.headers', request) is False
    assert _eval('request.headers["x-c"]', request) == "é"


def test_a_missing_header_is_an_error_that_a_rule_reads_as_false() -> None:
    program = compile_expression('request.headers["x-missing"] == "a"')
    variables = cel.activation(cel_variables(_request(), program.uses))
    assert isinstance(program.evaluate(variables), cel.EvaluationError)
    assert program.evaluate_bool(variables) is False
    assert _eval('has(request.headers.x) ? "yes" : "no"') == "no"
    assert _eval('request.headers[?"x-missing"].orValue("none")') == "none"


@pytest.mark.parametrize(
    ("peer", "address", "port"),
    [
        ("127.0.0.1:5000", "127.0.0.1", 5000),
        ("[::1]:443", "::1", 443),
        ("[::ffff:10.1.2.3]:80", "10.1.2.3", 80),  # canonical, as agentgateway
        ("-", "", 0),
    ],
)
def test_source_variable(peer: str, address: str, port: int) -> None:
    assert source_variable(peer) == {"address": address, "port": port}


def test_jwt_and_api_key_are_empty_until_an_authentication_step_fills_them() -> None:
    request = _request()
    assert _eval('jwt.sub == "alice"', request) != True  # noqa: E712 - an error value
    assert _eval("has(jwt.sub)", request) is False
    assert _eval("size(apiKey)", request) == 0
    request.set_claims("jwt", {"sub": "alice", "groups": ["admin", "dev"]})
    request.set_claims("apiKey", {"key": "k1"})
    assert _eval('jwt.sub == "alice" && "admin" in jwt.groups', request) is True
    assert _eval('apiKey.key == "k1"', request) is True
    assert _eval("size(basicAuth)", request) == 0


# --- functions ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        # standard library and the cel-go strings/math extensions
        ('request.path.startsWith("/v1") && request.path.endsWith("chat")', True),
        ('request.path.matches("^/v[0-9]+/")', True),
        ('request.path.split("/")', ["", "v1", "chat"]),
        ('"AbC".lowerAscii() + "x".upperAscii()', "abcX"),
        ('"a-b".replace("-", "+")', "a+b"),
        ("math.greatest(1, 5, 3)", 5),
        ("int(source.port) + 1", 5001),
        # agentgateway's extensions (crates/celx)
        ('request.path.stripPrefix("/v1")', "/chat"),
        ('request.path.stripSuffix("/chat")', "/v1"),
        ('cidr("127.0.0.0/8").containsIP(source.address)', True),
        ('cidr("10.0.0.0/8").containsIP(source.address)', False),
        ('cidr("::/0").containsIP(source.address)', False),  # an IPv4 address is not in ::/0
        ('isIP(source.address) && !isIP("example.com")', True),
        ('json("{\\"a\\": [1, 2]}").a[1]', 2),
        ('json(b"{\\"k\\": \\"v\\"}").k', "v"),
        ('base64.encode("hi") == "aGk=" && base64Encode(b"hi") == "aGk="', True),
        ('string(base64.decode("aGk=")) == "hi" && base64Decode("aGk=") == b"hi"', True),
        ("random() >= 0.0 && random() < 1.0", True),
        ("uuid().size() == 36 && uuid() != uuid()", True),
    ],
)
def test_functions(expression: str, expected: object) -> None:
    assert _eval(expression) == expected


@pytest.mark.parametrize(
    "expression",
    ['cidr("10.0.0/x").containsIP(source.address)', 'json("{").a == 1', 'base64.decode("*")'],
)
def test_a_function_failing_at_request_time_is_an_error_value(expression: str) -> None:
    assert isinstance(_eval(expression), cel.EvaluationError)


@pytest.mark.parametrize(
    ("text", "variables", "expected"),
    [
        ('default(llmRequest.metadata.tier, "none")', {"llmRequest": {}}, "none"),
        ('default(llmRequest.metadata.tier, "none")',
         {"llmRequest": {"metadata": {"tier": "gold"}}}, "gold"),
        ('default(llmRequest["max_tokens"], 1024) <= 1024', {"llmRequest": {}}, True),
        ('default(llmRequest.max_tokens, 1024) <= 1024', {"llmRequest": {"max_tokens": 9}}, True),
        # Nested, and `default(` inside a string is left alone.
        ('default(llmRequest.a, default(llmRequest.b, "x")) + "default(y, z)"',
         {"llmRequest": {}}, "xdefault(y, z)"),
    ],
)
def test_agentgateway_default_picks_the_fallback_for_a_missing_field(
    text: str, variables: dict[str, object], expected: object
) -> None:
    program = cel.compile_expression(text, cel.LLM_VARIABLES)
    assert program.evaluate(cel.activation(variables, cel.LLM_VARIABLES)) == expected


@pytest.mark.parametrize(
    "text", ['default(1 + 2, 3)', 'default(llmRequest.a)', 'default(llmRequest.a, 1'],
)
def test_default_forms_agw_fast_cannot_express_are_refused(text: str) -> None:
    with pytest.raises(cel.CelCompileError, match="default"):
        cel.compile_expression(text, cel.LLM_VARIABLES)
