"""`apiKey` and `basicAuth`: config parsing and its errors, hash checks, credential decoding,
where a credential is read from and how it is taken out, each mode's answer."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config import load_config
from agw_fast.config.model import (
    ApiKeyAuth,
    ApiKeyEntry,
    BasicAuth,
    CredentialLocation,
    HtpasswdEntry,
    RoutePolicies,
)
from agw_fast.core import cel
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_request_steps, run_steps
from agw_fast.policies.basic_auth import check_password, decode_credentials
from agw_fast.policies.request import ApiKeyClaims

R = "binds[0].listeners[0].routes[0].policies"
KEY = "test-api-key"
# sha256("test-api-key"), as agentgateway's tests spell it (upper case is accepted).
KEY_HASH = "sha256:4C806362B613F7496ABF284146EFD31DA90E4B16169FE001841CA17290F427C4"


def load_policies(policies: dict[str, Any], base_dir: Path = Path("/nonexistent")) -> RoutePolicies:
    doc = {"binds": [{"port": 3000, "listeners": [{"routes": [
        {"policies": policies, "backends": [{"host": "h:1"}]}
    ]}]}]}  # fmt: skip
    config = load_config(json.dumps(doc), {}, base_dir=base_dir)
    route_policies = config.binds[0].listeners[0].routes[0].policies
    assert route_policies is not None
    return route_policies


def load_error(policies: dict[str, Any], base_dir: Path = Path("/nonexistent")) -> str:
    with pytest.raises(ConfigError) as info:
        load_policies(policies, base_dir)
    return str(info.value)


def request(
    headers: list[tuple[bytes, bytes]] | None = None, query: bytes = b""
) -> PolicyRequest:
    return PolicyRequest(b"GET", b"h", b"/p", query, headers or [], None, "127.0.0.1:1")


# -- config -----------------------------------------------------------------------------------


def test_api_key_config_hashes_keys_and_keeps_metadata() -> None:
    parsed = load_policies({"apiKey": {"keys": [
        {"key": KEY, "metadata": {"group": "eng"}},
        {"keyHash": KEY_HASH.lower()},  # the same key again: the later entry wins
        {"key": "other"},
    ]}})  # fmt: skip
    digest = hashlib.sha256(KEY.encode()).digest()
    assert parsed.api_key == ApiKeyAuth(
        keys=(ApiKeyEntry(digest, None), ApiKeyEntry(hashlib.sha256(b"other").digest())),
        mode="optional",
        location=CredentialLocation("header", "authorization", "Bearer "),
    )
    assert KEY not in repr(parsed)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ({"header": {"name": "X-Key"}}, CredentialLocation("header", "x-key", None)),
        ({"header": {"name": "x", "prefix": "K "}}, CredentialLocation("header", "x", "K ")),
        ({"queryParameter": {"name": "k"}}, CredentialLocation("queryParameter", "k")),
        ({"cookie": {"name": "c"}}, CredentialLocation("cookie", "c")),
    ],
)
def test_credential_locations(location: dict[str, Any], expected: CredentialLocation) -> None:
    parsed = load_policies({"apiKey": {"keys": [], "mode": "strict", "location": location}})
    assert parsed.api_key is not None
    assert parsed.api_key.location == expected
    assert parsed.api_key.mode == "strict"


@pytest.mark.parametrize(
    ("policies", "message"),
    [
        ({"apiKey": {}}, f'{R}.apiKey.keys: missing required field "keys"'),
        ({"apiKey": {"keys": [{}]}}, f"{R}.apiKey.keys[0]: expected exactly one of: key, keyHash"),
        (
            {"apiKey": {"keys": [{"key": "a", "keyHash": KEY_HASH}]}},
            f"{R}.apiKey.keys[0]: expected exactly one of: key, keyHash",
        ),
        (
            {"apiKey": {"keys": [{"keyHash": KEY_HASH[7:]}]}},
            f"{R}.apiKey.keys[0].keyHash: keyHash must use the sha256:<hex> format",
        ),
        (
            {"apiKey": {"keys": [{"keyHash": "sha256:zz"}]}},
            f"{R}.apiKey.keys[0].keyHash: keyHash is not valid hex",
        ),
        (
            {"apiKey": {"keys": [{"keyHash": "sha256:abcd"}]}},
            f"{R}.apiKey.keys[0].keyHash: sha256 keyHash must decode to 32 bytes",
        ),
        (
            {"apiKey": {"keys": [{"key": "a", "allowedModels": ["gpt-4o"]}]}},
            f"{R}.apiKey.keys[0].allowedModels: not supported: {R}.apiKey.keys[0].allowedModels",
        ),
        ({"apiKey": {"keys": [], "mode": "lax"}}, f"{R}.apiKey.mode"),
        (
            {"apiKey": {"keys": [], "location": {"expression": 1}}},
            f"{R}.apiKey.location.expression: expected a string",
        ),
        (
            {"apiKey": {"keys": [], "location": {"expression": "x", "cookie": {"name": "c"}}}},
            f"{R}.apiKey.location: expected exactly one of: header, queryParameter, cookie, "
            "expression",
        ),
        (
            {"backendAuth": {"key": {"value": "k", "location": {"expression": "x"}}}},
            f"{R}.backendAuth.key.location.expression: an expression location can only read "
            "a credential, not send one",
        ),
        ({"apiKey": {"keys": [], "location": {}}}, "expected exactly one of"),
        (
            {"apiKey": {"keys": [{"key": "a", "extra": 1}]}},
            f'{R}.apiKey.keys[0].extra: unknown field "extra"',
        ),
        ({"basicAuth": {}}, f'{R}.basicAuth.htpasswd: missing required field "htpasswd"'),
        ({"basicAuth": {"htpasswd": "", "mode": "permissive"}}, f"{R}.basicAuth.mode"),
        ({"basicAuth": {"htpasswd": {"file": "nope"}}}, "file not found"),
        ({"basicAuth": {"htpasswd": "", "realm": "a\nb"}}, f"{R}.basicAuth.realm"),
    ],
)
def test_config_errors(policies: dict[str, Any], message: str) -> None:
    assert message in load_error(policies)


def test_a_key_never_appears_in_an_error() -> None:
    assert "s3cret" not in load_error({"apiKey": {"keys": [{"key": "s3cret", "bad": 1}]}})
    assert "s3cret" not in load_error({"apiKey": {"keys": [{"keyHash": "sha256:s3cret"}]}})


def test_htpasswd_is_read_as_agentgateway_reads_it(tmp_path: Path) -> None:
    (tmp_path / "users").write_text(
        "a:{SHA}x\nno-colon-line\nb:$apr1$\nc:$2y$05$short\nd:plain\na:{SHA}y\n\t\n"
    )
    parsed = load_policies({"basicAuth": {"htpasswd": {"file": "users"}}}, tmp_path)
    assert parsed.basic_auth == BasicAuth(
        htpasswd=(
            HtpasswdEntry("a", "{SHA}y", "sha1"),  # the later line for a user wins
            HtpasswdEntry("d", "plain", "crypt"),  # anything else is crypt(3): never matches
        ),
    )
    assert parsed.basic_auth.realm == "Restricted" and parsed.basic_auth.mode == "optional"


@pytest.mark.parametrize(("scheme", "module"), [("$2y$05$" + "a" * 53, "bcrypt"),
                                                ("$apr1$salt$digest", "passlib")])
def test_a_missing_extra_is_named_at_load(
    monkeypatch: pytest.MonkeyPatch, scheme: str, module: str
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == module else real(name, *a)
    )
    inline = f"u:{scheme}\n".replace("$", "$$")  # the config text is env-expanded
    message = load_error({"basicAuth": {"htpasswd": inline}})
    assert message.startswith(f"{R}.basicAuth.htpasswd: ")
    assert "pip install 'agw-fast[basicauth]'" in message
    # {SHA} needs no extra.
    load_policies({"basicAuth": {"htpasswd": "u:{SHA}x\n"}})


# -- hashes and decoding ----------------------------------------------------------------------

# Vectors from Apache's htpasswd: each is the hash of "password".
VECTORS = [
    ("bcrypt", "$2y$05$nC6nErr9XZJuMJ57WyCob.EuZEjylDt2KaHfbfOtyb.EgL1I2jCVa"),
    ("bcrypt", "$2a$04$UuTkLRZZ6QofpDOlMz32MuuxEHA43WOemOYHPz6.SjsVsyO1tDU96"),
    ("apr1", "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00"),
    ("sha1", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g="),
    ("crypt", "bGVh02xkuGli2"),
]


@pytest.mark.parametrize(("scheme", "hash_"), VECTORS)
def test_hash_schemes(scheme: str, hash_: str) -> None:
    entry = HtpasswdEntry("u", hash_, scheme)  # type: ignore[arg-type]
    assert check_password(entry, "password")
    assert not check_password(entry, "passwort")
    assert not check_password(entry, "")


def test_apr1_long_password_and_bcrypt_truncation() -> None:
    apr1 = HtpasswdEntry("u", "$apr1$5jJtzRYw$xQlupJ3AHTXrqQiCyLBwY1", "apr1")
    assert check_password(apr1, "password-longer-than-16-chars")
    assert not check_password(apr1, "passwort-longer-than-16-chars")
    import bcrypt

    long = "x" * 72
    entry = HtpasswdEntry("u", bcrypt.hashpw(long.encode(), bcrypt.gensalt(4)).decode(), "bcrypt")
    # bcrypt reads 72 bytes; a longer password is not an error (Rust's crate truncates).
    assert check_password(entry, long + "ignored")


def test_an_unreadable_hash_never_matches() -> None:
    assert not check_password(HtpasswdEntry("u", "password", "crypt"), "password")
    assert not check_password(HtpasswdEntry("u", "$apr1$bad salt$x", "apr1"), "password")


@pytest.mark.parametrize(
    ("encoded", "expected"),
    [
        (base64.b64encode(b"user:pa:ss").decode(), ("user", "pa:ss")),
        (base64.b64encode(b":").decode(), ("", "")),
        (base64.b64encode(b"no-colon").decode(), None),
        ("dXNlcjpwYXNz", ("user", "pass")),
        ("dXNlcjpwYXM", None),  # unpadded
        ("dXNlcjpwYXN=", None),  # non-zero trailing bits
        ("dXNl cjpwYXNz", None),
        ("!!!!", None),
        (base64.b64encode(b"\xff:x").decode(), None),  # not UTF-8
        ("", None),
    ],
)
def test_decode_credentials(encoded: str, expected: tuple[str, str] | None) -> None:
    assert decode_credentials(encoded) == expected


# -- steps ------------------------------------------------------------------------------------


def api_key_steps(mode: str, location: CredentialLocation | None = None) -> Any:
    policies = RoutePolicies(api_key=ApiKeyAuth(
        keys=(ApiKeyEntry(hashlib.sha256(KEY.encode()).digest(), {"group": "eng"}),),
        mode=mode,  # type: ignore[arg-type]
        **({"location": location} if location else {}),
    ))  # fmt: skip
    return compile_request_steps(policies)


MISSING = b"api key authentication failure: no API Key found"
INVALID = b"api key authentication failure: invalid credentials"


@pytest.mark.parametrize(
    ("mode", "authorization", "body"),
    [
        ("strict", None, MISSING),
        ("strict", b"Bearer nope", INVALID),
        ("strict", b"Basic " + KEY.encode(), MISSING),
        ("strict", b"Bearer caf\xc3\xa9", MISSING),  # not visible ASCII: no key at all
        ("optional", None, None),
        ("optional", b"Bearer nope", INVALID),
        ("permissive", None, None),
        ("permissive", b"Bearer nope", None),
    ],
)
def test_api_key_modes(mode: str, authorization: bytes | None, body: bytes | None) -> None:
    headers = [] if authorization is None else [(b"authorization", authorization)]
    req = request(headers)
    answer = run_steps(api_key_steps(mode), req)
    if body is None:
        assert answer is None
        assert req.headers == headers and req.api_key is None
    else:
        assert answer is not None and answer.reason == Reason.API_KEY_AUTH
        assert answer.response == (
            b"HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


@pytest.mark.parametrize("mode", ["strict", "optional", "permissive"])
def test_a_right_key_is_consumed_and_its_metadata_kept(mode: str) -> None:
    req = request([(b"authorization", b"bearer " + KEY.encode()), (b"authorization", b"x"),
                   (b"x-other", b"1")])  # fmt: skip
    assert run_steps(api_key_steps(mode), req) is None
    assert req.headers == [(b"x-other", b"1")]  # every field of that name goes
    assert req.api_key == ApiKeyClaims(KEY, {"group": "eng"})


def test_query_parameter_key_is_taken_out_and_the_rest_reencoded() -> None:
    steps = api_key_steps("strict", CredentialLocation("queryParameter", "api_key"))
    req = request(query=b"?a=x%20y~&api_key=" + KEY.encode() + b"&api_key=dup&b&c=%E2%9C%93*")
    assert run_steps(steps, req) is None
    assert req.query == b"?a=x+y%7E&b=&c=%E2%9C%93*"
    only = request(query=b"?api_key=" + KEY.encode())
    assert run_steps(steps, only) is None
    assert only.query == b""
    plus = request(query=b"?api_key=test%2Dapi+key")  # `+` is a space: not the key
    answer = run_steps(steps, plus)
    assert answer is not None and answer.response.endswith(INVALID)


def test_cookie_key_is_taken_out_of_every_cookie_field() -> None:
    steps = api_key_steps("strict", CredentialLocation("cookie", "s"))
    req = request([(b"cookie", b"a=1; s=" + KEY.encode()), (b"x", b"y"), (b"cookie", b"b=2;junk")])
    assert run_steps(steps, req) is None
    assert req.headers == [(b"x", b"y"), (b"cookie", b"a=1; b=2")]


def test_basic_auth_answers_with_the_challenge() -> None:
    policies = RoutePolicies(basic_auth=BasicAuth(
        htpasswd=(HtpasswdEntry("u", "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=", "sha1"),),
        realm="r", mode="strict",
    ))  # fmt: skip
    steps = compile_request_steps(policies)
    answer = run_steps(steps, request())
    assert answer is not None and answer.reason == Reason.BASIC_AUTH
    body = b"basic authentication failure: no basic authentication credentials found"
    assert answer.response == (
        b"HTTP/1.1 401 Unauthorized\r\ncontent-type: text/plain\r\n"
        b'www-authenticate: Basic realm="r"\r\n'
        b"content-length: %d\r\n\r\n%s" % (len(body), body)
    )
    good = request([(b"authorization", b"Basic " + base64.b64encode(b"u:password"))])
    assert run_steps(steps, good) is None
    assert good.headers == [] and good.basic_auth_user == "u"


def test_basic_auth_runs_before_api_key() -> None:
    policies = RoutePolicies(
        basic_auth=BasicAuth(htpasswd=(), mode="strict"),
        api_key=ApiKeyAuth(keys=(), mode="strict"),
    )
    answer = run_steps(compile_request_steps(policies), request())
    assert answer is not None and answer.reason == Reason.BASIC_AUTH


# -- an `expression` location (AuthorizationLocation::Expression, http/auth/mod.rs) ----------

needs_cel = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")


@needs_cel
def test_expression_location_config() -> None:
    policies = load_policies(
        {"apiKey": {"keys": [], "location": {"expression": 'request.headers["x-k"]'}}}
    )
    assert policies.api_key is not None
    assert policies.api_key.location == CredentialLocation(
        "expression", 'request.headers["x-k"]', path=f"{R}.apiKey.location.expression"
    )


@needs_cel
def test_api_key_from_an_expression_is_not_taken_out() -> None:
    expression = 'request.headers["x-auth"].stripPrefix("Key ")'
    steps = compile_request_steps(
        load_policies(
            {"apiKey": {"mode": "strict", "keys": [{"key": KEY, "metadata": {"t": 1}}],
                        "location": {"expression": expression}}}
        )
    )  # fmt: skip
    headers = [(b"x-auth", b"Key " + KEY.encode())]
    req = request(list(headers))
    assert run_steps(steps, req) is None
    assert req.api_key == ApiKeyClaims(KEY, {"t": 1})
    assert req.headers == headers  # remove() does nothing for an expression
    wrong = run_steps(steps, request([(b"x-auth", b"Key nope")]))
    assert wrong is not None and wrong.response.endswith(b"invalid credentials")
    # A failed evaluation (no such header) is no credential at all.
    missing = run_steps(steps, request())
    assert missing is not None and missing.response.endswith(b"no API Key found")


@needs_cel
def test_a_non_string_value_is_no_credential() -> None:
    steps = compile_request_steps(
        load_policies({"apiKey": {"mode": "strict", "keys": [{"key": KEY}],
                                  "location": {"expression": "size(request.headers)"}}})
    )  # fmt: skip
    answer = run_steps(steps, request([(b"x", b"1")]))
    assert answer is not None and answer.response.endswith(b"no API Key found")


@needs_cel
def test_basic_auth_from_an_expression() -> None:
    # The credential is still base64 `user:password`, here read from another header.
    steps = compile_request_steps(
        load_policies({"basicAuth": {"mode": "strict",
                                     "htpasswd": "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=",
                                     "authorizationLocation": {
                                         "expression": 'request.headers["x-basic"]'}}})
    )  # fmt: skip
    encoded = base64.b64encode(b"alice:test")
    req = request([(b"x-basic", encoded)])
    assert run_steps(steps, req) is None
    assert req.basic_auth_user == "alice" and req.headers == [(b"x-basic", encoded)]
    refused = run_steps(steps, request())
    assert refused is not None and refused.reason == Reason.BASIC_AUTH


@needs_cel
def test_a_bad_location_expression_fails_when_the_plan_is_built() -> None:
    policies = load_policies(
        {"apiKey": {"keys": [], "location": {"expression": "request.headers["}}}
    )
    with pytest.raises(ConfigError) as info:
        compile_request_steps(policies)
    assert str(info.value).startswith(
        f"{R}.apiKey.location.expression: invalid CEL expression: "
    )
