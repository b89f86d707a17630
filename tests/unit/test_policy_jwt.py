"""jwtAuth: key sets, token verification and the request step (agentgateway's http/jwt.rs)."""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path
from typing import Any

import jwt as pyjwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from agw_fast.config import load_config
from agw_fast.config.model import CredentialLocation, JwtAuth, JwtProvider, RoutePolicies
from agw_fast.core import cel
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_request_steps
from agw_fast.policies.jwt import (
    KeySetHolder,
    ProviderRules,
    TokenError,
    Verifier,
    build,
    parse_jwks,
)
from agw_fast.server.jwks import _ttl

ISS = "https://issuer.example"
AUD = "api"
R = "binds[0].listeners[0].routes[0].policies.jwtAuth"

_RSA = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_RSA_OTHER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
_P256 = ec.generate_private_key(ec.SECP256R1())
_P384 = ec.generate_private_key(ec.SECP384R1())
_ED = ed25519.Ed25519PrivateKey.generate()


def jwk(kid: str, key: Any, **extra: str) -> dict[str, Any]:
    algorithm: Any = {
        rsa.RSAPrivateKey: RSAAlgorithm, ec.EllipticCurvePrivateKey: ECAlgorithm,
        ed25519.Ed25519PrivateKey: OKPAlgorithm,
    }[next(t for t in (rsa.RSAPrivateKey, ec.EllipticCurvePrivateKey,
                       ed25519.Ed25519PrivateKey) if isinstance(key, t))]  # fmt: skip
    doc: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**doc, "kid": kid, **extra}


JWKS = json.dumps(
    {"keys": [jwk("rsa", _RSA), jwk("p256", _P256), jwk("p384", _P384), jwk("ed", _ED)]}
)
RULES = ProviderRules(ISS, frozenset({AUD}), ("aud", "exp", "iss"))


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"iss": ISS, "aud": AUD, "sub": "alice", "exp": int(time.time()) + 300}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def token(kid: str | None = "rsa", key: Any = _RSA, alg: str = "RS256", **overrides: Any) -> str:
    headers = {} if kid is None else {"kid": kid}
    return pyjwt.encode(claims(**overrides), key, algorithm=alg, headers=headers)


def verifier(jwks: str = JWKS, rules: ProviderRules = RULES) -> Verifier:
    return Verifier([KeySetHolder(rules, parse_jwks(jwks, rules))])


def error(tok: str, v: Verifier | None = None) -> str:
    with pytest.raises(TokenError) as info:
        (v or verifier()).verify(tok)
    return str(info.value)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


INVALID = "the token is invalid or malformed: Error({})"


@pytest.mark.parametrize(
    ("kid", "key", "alg"),
    [
        ("rsa", _RSA, "RS256"), ("rsa", _RSA, "RS384"), ("rsa", _RSA, "RS512"),
        ("rsa", _RSA, "PS256"), ("rsa", _RSA, "PS512"),
        ("p256", _P256, "ES256"), ("p384", _P384, "ES384"), ("ed", _ED, "EdDSA"),
    ],
)  # fmt: skip
def test_a_valid_token_gives_its_claims(kid: str, key: Any, alg: str) -> None:
    assert verifier().verify(token(kid, key, alg))["sub"] == "alice"


def test_expiry_has_sixty_seconds_of_leeway() -> None:
    now = int(time.time())
    assert verifier().verify(token(exp=now - 30))["sub"] == "alice"
    assert error(token(exp=now - 120)) == INVALID.format("ExpiredSignature")


def test_nbf_is_not_checked_as_jsonwebtoken_defaults() -> None:
    assert verifier().verify(token(nbf=int(time.time()) + 3600))["sub"] == "alice"


def test_a_forged_signature_is_refused() -> None:
    assert error(token("rsa", _RSA_OTHER)) == INVALID.format("InvalidSignature")
    head, payload, sig = token().split(".")
    tampered = json.loads(base64.urlsafe_b64decode(payload + "=="))
    tampered["sub"] = "mallory"
    forged = f"{head}.{b64(json.dumps(tampered).encode())}.{sig}"
    assert error(forged) == INVALID.format("InvalidSignature")


def test_issuer_audience_and_required_claims() -> None:
    assert error(token(iss="https://evil")) == INVALID.format("InvalidIssuer")
    assert error(token(aud="other")) == INVALID.format("InvalidAudience")
    assert verifier().verify(token(aud=["other", AUD]))["sub"] == "alice"
    assert error(token(exp=None)) == INVALID.format('MissingRequiredClaim("exp")')
    assert error(token(iss=None)) == INVALID.format('MissingRequiredClaim("iss")')
    assert error(token(aud=None)) == INVALID.format('MissingRequiredClaim("aud")')
    # A non-integer exp is not a parsed claim: it counts as missing.
    assert error(token(exp="soon")) == INVALID.format('MissingRequiredClaim("exp")')


def test_required_claims_can_be_emptied_but_not_iss() -> None:
    rules = ProviderRules(ISS, frozenset(), ("iss",))
    v = verifier(rules=rules)
    assert v.verify(token(exp=None, aud=None))["sub"] == "alice"
    assert error(token(iss=None), v) == INVALID.format('MissingRequiredClaim("iss")')


def test_unknown_and_missing_kid() -> None:
    assert error(token("nope")) == 'token uses the unknown key "nope"'
    assert error(token(None)) == "the token header does not specify a `kid`"


def test_alg_none_and_wrong_algorithms_are_refused() -> None:
    header = b64(json.dumps({"alg": "none", "kid": "rsa"}).encode())
    unsigned = f"{header}.{b64(json.dumps(claims()).encode())}."
    assert error(unsigned).startswith(
        'the token header is malformed: Error(Json(Error("unknown variant `none`, expected '
    )
    # An EC token naming an RSA key, and an HMAC token made with the RSA public key.
    assert error(token("rsa", _P256, "ES256")) == INVALID.format("InvalidAlgorithm")
    header = b64(json.dumps({"alg": "HS256", "kid": "rsa", "typ": "JWT"}).encode())
    assert error(f"{header}.{b64(b'{}')}.{b64(b'x')}") == INVALID.format("InvalidAlgorithm")


def test_a_jwk_alg_pins_the_key() -> None:
    jwks = json.dumps({"keys": [jwk("rsa", _RSA, alg="RS256")]})
    assert verifier(jwks).verify(token())["sub"] == "alice"
    assert error(token(alg="PS256"), verifier(jwks)) == INVALID.format("InvalidAlgorithm")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a", "the token header is malformed: Error(InvalidToken)"),
        ("a.b", "the token header is malformed: Error(InvalidToken)"),
        ("", "the token header is malformed: Error(InvalidToken)"),
        ("!!.a.b", "the token header is malformed: Error(Base64(InvalidByte(0, 33)))"),
        (f"{b64(b'[1]')}.a.b", "the token header is malformed: Error(Json("),
        (f"{b64(b'nope')}.a.b", "the token header is malformed: Error(Json("),
    ],
)
def test_malformed_tokens(text: str, message: str) -> None:
    assert error(text).startswith(message)


def test_key_set_errors() -> None:
    def fails(keys: list[dict[str, Any]]) -> str:
        with pytest.raises(ValueError) as info:
            parse_jwks(json.dumps({"keys": keys}), RULES)
        return str(info.value)

    assert fails([{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}]) == (
        'the key "s" uses an unsupported algorithm OctetKey (supported: RSA, EC, OKP[Ed25519])'
    )
    assert "c2VjcmV0" not in fails([{"kty": "oct", "kid": "s", "k": "c2VjcmV0"}])
    no_kid = jwk("x", _RSA)
    del no_kid["kid"]
    assert fails([no_kid]) == "the key is missing the `kid` attribute"
    assert fails([{"kty": "OKP", "kid": "x", "crv": "X25519", "x": "AA"}]) == (
        'the key "x" uses unsupported OKP curve X25519 (supported: Ed25519)'
    )
    assert fails([{"kty": "RSA", "kid": "r"}]).startswith('could not construct a decoding key')
    with pytest.raises(ValueError, match="failed to load JWKS"):
        parse_jwks("{", RULES)


def test_providers_are_searched_in_order_with_their_own_rules() -> None:
    other = ProviderRules("https://other", frozenset(), ("iss",))
    v = Verifier([
        KeySetHolder(RULES, parse_jwks(json.dumps({"keys": [jwk("rsa", _RSA)]}), RULES)),
        KeySetHolder(other, parse_jwks(json.dumps({"keys": [jwk("ed", _ED)]}), other)),
    ])  # fmt: skip
    assert v.verify(token("ed", _ED, "EdDSA", iss="https://other", aud=None))["sub"] == "alice"
    assert error(token("ed", _ED, "EdDSA"), v) == INVALID.format("InvalidIssuer")
    assert v.verify(token())["sub"] == "alice"


def test_a_remote_set_not_loaded_yet_knows_no_key() -> None:
    holder = KeySetHolder(RULES, None, "http://idp/jwks")
    assert error(token(), Verifier([holder])) == 'token uses the unknown key "rsa"'
    holder.update(JWKS)
    assert Verifier([holder]).verify(token())["sub"] == "alice"
    with pytest.raises(ValueError):
        holder.update("not json")
    assert Verifier([holder]).verify(token())["sub"] == "alice"  # the last good set stays


# -- the step -------------------------------------------------------------------------------


def step_for(mode: str, **location: str) -> Any:
    provider = JwtProvider(ISS, "inline", JWKS, (AUD,))
    auth = JwtAuth((provider,), mode, **location)  # type: ignore[arg-type]
    step = build(RoutePolicies(jwt_auth=auth))
    assert step is not None
    return step


def request(*headers: tuple[bytes, bytes]) -> PolicyRequest:
    return PolicyRequest(b"GET", b"h", b"/", b"", list(headers), None)


def answer_text(answer: Any) -> tuple[int, str]:
    assert answer.reason == Reason.JWT_AUTH
    head, _, body = answer.response.partition(b"\r\n\r\n")
    assert b"content-type: text/plain\r\n" in head
    return int(head[9:12]), body.decode()


AUTH = b"authorization"


@pytest.mark.parametrize("mode", ["strict", "optional", "permissive"])
def test_a_valid_token_is_taken_off_the_request_and_its_claims_kept(mode: str) -> None:
    tok = token()
    req = request((b"x", b"1"), (AUTH, b"bearer " + tok.encode()), (AUTH, b"Bearer other"))
    assert step_for(mode)(req) is None
    assert req.headers == [(b"x", b"1")]
    assert req.jwt_claims is not None and req.jwt_claims["sub"] == "alice"
    assert req.jwt_token == tok


@pytest.mark.parametrize(
    "value", [None, b"Basic dXNlcjpwdw==", b"Bearer", b"Bearer caf\xc3\xa9"]
)
def test_no_token(value: bytes | None) -> None:
    headers = [] if value is None else [(AUTH, value)]
    status, body = answer_text(step_for("strict")(request(*headers)))
    assert (status, body) == (401, "authentication failure: no bearer token found")
    for mode in ("optional", "permissive"):
        req = request(*headers)
        assert step_for(mode)(req) is None
        assert req.headers == headers and req.jwt_claims is None


def test_an_invalid_token() -> None:
    expired = token(exp=int(time.time()) - 3600).encode()
    for mode in ("strict", "optional"):
        status, body = answer_text(step_for(mode)(request((AUTH, b"Bearer " + expired))))
        assert status == 401
        assert body == "authentication failure: " + INVALID.format("ExpiredSignature")
    req = request((AUTH, b"Bearer " + expired))
    assert step_for("permissive")(req) is None
    assert req.headers == [(AUTH, b"Bearer " + expired)] and req.jwt_claims is None
    status, body = answer_text(step_for("strict")(request((AUTH, b"Bearer "))))
    assert body == "authentication failure: the token header is malformed: Error(InvalidToken)"


def test_a_custom_header_location() -> None:
    step = step_for("strict", header_name="x-token", prefix="")
    req = request((AUTH, b"Bearer keep"), (b"x-token", token().encode()))
    assert step(req) is None
    assert req.headers == [(AUTH, b"Bearer keep")]


@pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")
def test_an_expression_location() -> None:
    location = CredentialLocation("expression", 'request.headers["x-jwt"]', path="p")
    step = step_for("strict", location=location)  # type: ignore[arg-type]
    tok = token()
    req = request((b"x-jwt", tok.encode()))
    assert step(req) is None
    assert req.jwt_token == tok and req.headers == [(b"x-jwt", tok.encode())]
    status, body = answer_text(step(request((AUTH, b"Bearer " + tok.encode()))))
    assert (status, body) == (401, "authentication failure: no bearer token found")
    assert load_jwt(
        {"issuer": ISS, "jwks": JWKS, "location": {"expression": 'request.headers["x-jwt"]'}}
    ).location == CredentialLocation(
        "expression", 'request.headers["x-jwt"]', path=f"{R}.location.expression"
    )


def test_a_cookie_location() -> None:
    location = CredentialLocation("cookie", "jwt")
    tok = token()
    cookies = b"a=1; jwt=" + tok.encode() + b"; b=2"
    for mode in ("strict", "optional", "permissive"):
        req = request((b"cookie", cookies), (AUTH, b"Bearer keep"), (b"cookie", b"jwt=x; c=3"))
        assert step_for(mode, location=location)(req) is None  # type: ignore[arg-type]
        assert req.jwt_token == tok and req.jwt_claims is not None
        # The first `jwt` cookie is the token; every one is taken out, the others kept.
        assert req.headers == [(AUTH, b"Bearer keep"), (b"cookie", b"a=1; b=2; c=3")]
    strict = step_for("strict", location=location)  # type: ignore[arg-type]
    missing = request((b"cookie", b"a=1"), (AUTH, b"Bearer " + tok.encode()))
    assert answer_text(strict(missing)) == (401, "authentication failure: no bearer token found")
    expired = token(exp=int(time.time()) - 3600).encode()
    bad = request((b"cookie", b"jwt=" + expired))
    assert answer_text(strict(bad)) == (
        401, "authentication failure: " + INVALID.format("ExpiredSignature")
    )
    kept = request((b"cookie", b"jwt=" + expired))
    assert step_for("permissive", location=location)(kept) is None  # type: ignore[arg-type]
    assert kept.headers == [(b"cookie", b"jwt=" + expired)] and kept.jwt_claims is None


def test_a_query_parameter_location() -> None:
    location = CredentialLocation("queryParameter", "access_token")
    tok = token()
    step = step_for("strict", location=location)  # type: ignore[arg-type]
    req = PolicyRequest(
        b"GET", b"h", b"/v1", b"?a=x+y&access_token=" + tok.encode() + b"&access_token=z",
        [(AUTH, b"Bearer keep")], None,
    )  # fmt: skip
    assert step(req) is None
    assert req.jwt_token == tok and req.jwt_claims is not None
    assert req.query == b"?a=x+y" and req.headers == [(AUTH, b"Bearer keep")]
    only = PolicyRequest(b"GET", b"h", b"/", b"?access_token=" + tok.encode(), [], None)
    assert step(only) is None and only.query == b""
    bad = PolicyRequest(b"GET", b"h", b"/", b"?access_token=no", [], None)
    assert answer_text(step(bad)) == (
        401, "authentication failure: the token header is malformed: Error(InvalidToken)"
    )
    assert answer_text(step(request((AUTH, b"Bearer " + tok.encode()))))[0] == 401


def test_config_cookie_and_query_locations() -> None:
    cookie = load_jwt({"issuer": ISS, "jwks": JWKS, "location": {"cookie": {"name": "t"}}})
    assert cookie.location == CredentialLocation("cookie", "t")
    query = load_jwt({
        "providers": [{"issuer": ISS, "jwks": JWKS}],
        "location": {"queryParameter": {"name": "token"}},
    })  # fmt: skip
    assert query.location == CredentialLocation("queryParameter", "token")
    assert load_error(
        {"issuer": ISS, "jwks": JWKS, "location": {"cookie": {"name": "t", "x": 1}}}
    ).startswith(f"{R}.location.cookie.x: unknown field")


def test_jwt_runs_before_direct_response() -> None:
    from agw_fast.config.model import DirectResponse

    provider = JwtProvider(ISS, "inline", JWKS, (AUD,))
    policies = RoutePolicies(
        jwt_auth=JwtAuth((provider,), "strict"), direct_response=DirectResponse(200, b"hi")
    )
    steps = compile_request_steps(policies)
    answer = steps[0](request())
    assert answer is not None and answer.reason == Reason.JWT_AUTH


# -- config ---------------------------------------------------------------------------------


def load_jwt(jwt_auth: object, base_dir: Path = Path("/nonexistent")) -> JwtAuth:
    doc = {"binds": [{"port": 3000, "listeners": [{"routes": [
        {"policies": {"jwtAuth": jwt_auth}, "backends": [{"host": "h:1"}]}]}]}]}  # fmt: skip
    config = load_config(json.dumps(doc), {}, base_dir=base_dir)
    policies = config.binds[0].listeners[0].routes[0].policies
    assert policies is not None and policies.jwt_auth is not None
    return policies.jwt_auth


def load_error(jwt_auth: object, base_dir: Path = Path("/nonexistent")) -> str:
    with pytest.raises(ConfigError) as info:
        load_jwt(jwt_auth, base_dir)
    return str(info.value)


def test_config_single_and_multi_forms(tmp_path: Path) -> None:
    single = load_jwt({"issuer": ISS, "audiences": [AUD], "jwks": JWKS})
    assert single.mode == "optional" and single.header_name == "authorization"
    assert single.prefix == "Bearer "
    (provider,) = single.providers
    assert provider.audiences == (AUD,) and provider.required_claims == {"exp"}
    (tmp_path / "keys.json").write_text(JWKS)
    multi = load_jwt({
        "mode": "strict",
        "location": {"header": {"name": "X-Token"}},
        "providers": [
            {"issuer": "a", "jwks": {"file": "keys.json"},
             "jwtValidationOptions": {"requiredClaims": []}},
            {"issuer": "b", "jwks": {"url": "https://idp.example/jwks"}},
        ],
    }, tmp_path)  # fmt: skip
    assert multi.mode == "strict" and (multi.header_name, multi.prefix) == ("x-token", "")
    assert multi.providers[0].jwks_text == JWKS and multi.providers[0].required_claims == set()
    assert multi.providers[1].jwks_url == "https://idp.example/jwks"


def test_config_errors() -> None:
    assert load_error({"issuer": ISS, "jwks": JWKS, "mode": "lax"}).startswith(f"{R}.mode: ")
    assert load_error({"jwks": JWKS}) == f'{R}.issuer: missing required field "issuer"'
    assert load_error({"providers": [], "issuer": ISS}).startswith(f"{R}.issuer: ")
    assert load_error({"issuer": ISS, "jwks": {"url": "ftp://x"}}).startswith(f"{R}.jwks.url: ")
    both = {"cookie": {"name": "t"}, "queryParameter": {"name": "t"}}
    assert load_error({"issuer": ISS, "jwks": JWKS, "location": both}) == (
        f"{R}.location: expected exactly one of: header, queryParameter, cookie, expression"
    )
    assert load_error({"issuer": ISS, "jwks": JWKS, "validationOptions": {}}).startswith(
        f'{R}.validationOptions: unknown field'
    )


def test_a_bad_key_set_fails_the_compile() -> None:
    auth = load_jwt({"issuer": ISS, "jwks": json.dumps({"keys": [{"kty": "oct", "kid": "s"}]})})
    with pytest.raises(ConfigError) as info:
        build(RoutePolicies(jwt_auth=auth))
    assert str(info.value).startswith(f"{R}.jwks: the key \"s\" uses an unsupported algorithm")


def test_without_pyjwt_the_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "jwt.algorithms", None)
    auth = load_jwt({"issuer": ISS, "jwks": JWKS})
    with pytest.raises(ConfigError, match=r"pip install 'agw-fast\[jwt\]'"):
        build(RoutePolicies(jwt_auth=auth))


def test_jwks_cache_lifetime() -> None:
    assert _ttl([]) == 900
    assert _ttl([(b"cache-control", b"public, max-age=3600")]) == 3600
    assert _ttl([(b"cache-control", b"max-age=5")]) == 60
    assert _ttl([(b"cache-control", b"no-store, max-age=3600")]) == 900
    assert _ttl([(b"expires", b"Thu, 01 Jan 1970 00:00:00 GMT")]) == 900
