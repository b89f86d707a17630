"""`jwtAuth`: verify a bearer JWT against the issuers' key sets, as agentgateway does.

agentgateway's semantics (crates/agentgateway/src/http/jwt.rs, http/auth/mod.rs):

* The token is read where `location` says, by the mechanism apiKey/basicAuth share
  (policies/credentials.py): the first field of one header (default `Authorization`, prefix
  `Bearer `, compared without regard to case; a value that is not visible ASCII, or lacks the
  prefix, counts as no token), a query parameter, a cookie, or a CEL expression's string.
  `strict` answers a request without one; `optional` (the default) and `permissive` let it
  through unauthenticated.
* A token is checked against the provider owning its header `kid` (providers in order):
  no `kid` and an unknown `kid` are failures, and the key's algorithms (the JWK's `alg`, or
  its family: RS*/PS* for RSA, ES256/ES384 for EC, EdDSA for Ed25519) must include the
  header's `alg`. Then the signature, then the claims in jsonwebtoken's order: the required
  claims present (`requiredClaims`, default `exp`; `iss` always, `aud` when audiences are
  set), `exp` with 60 s leeway, `iss`, `aud`. `nbf` is not checked (jsonwebtoken's default).
* `strict` and `optional` answer an invalid token with 401; `permissive` lets it through
  unauthenticated (claims unset, token left in place). A verified token is removed before
  the request goes upstream (every field of its header, every pair of its query parameter,
  the cookie from every `Cookie`; an expression's source stays: `AuthorizationLocation::remove`),
  and its claims are kept on the request for later policies.

Nothing is cached between requests: every token is verified, so an expired one never
passes. A JWKS URL's set is fetched by the server (agw_fast/server/jwks.py) into a
`KeySetHolder` that the step reads on each request.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

from agw_fast.config.model import (
    CredentialLocation,
    GatewayPolicies,
    JwtAuth,
    JwtProvider,
    RoutePolicies,
)
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.errors import ConfigError
from agw_fast.policies.credentials import compile_location
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = [
    "INSTALL_HINT",
    "KeySetHolder",
    "TokenError",
    "Verifier",
    "build",
    "parse_jwks",
    "remote_key_sets",
]

INSTALL_HINT = "pip install 'agw-fast[jwt]'"
# jsonwebtoken's default leeway for `exp`, in seconds.
LEEWAY = 60
# jsonwebtoken's algorithm names (its `Algorithm` enum) and their key families.
_FAMILY = {
    "HS256": "HMAC", "HS384": "HMAC", "HS512": "HMAC",
    "ES256": "EC", "ES384": "EC",
    "RS256": "RSA", "RS384": "RSA", "RS512": "RSA",
    "PS256": "RSA", "PS384": "RSA", "PS512": "RSA",
    "EdDSA": "OKP",
}  # fmt: skip
_INFERRED = {
    "EC": ("ES256", "ES384"),
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "OKP": ("EdDSA",),
}
_ALG_LIST = ", ".join(f"`{name}`" for name in _FAMILY)
_SUPPORTED_REQUIRED = ("aud", "exp", "iss", "nbf", "sub")
_U64 = 1 << 64
_B64URL = re.compile(r"[A-Za-z0-9_-]*")


class TokenError(Exception):
    """Why a token was refused; str() is agentgateway's text after `authentication failure: `."""


def _kind(text: str) -> TokenError:
    """`the token is invalid or malformed: Error(<ErrorKind>)` (jsonwebtoken's Debug form)."""
    return TokenError(f"the token is invalid or malformed: Error({text})")


def _rust_str(text: str) -> str:
    """A string as Rust's `{:?}` prints it."""
    return json.dumps(text, ensure_ascii=False)


# -- keys -----------------------------------------------------------------------------------


class ProviderRules(NamedTuple):
    issuer: str
    audiences: frozenset[str]  # empty: `aud` is not checked
    required: tuple[str, ...]


class VerifyKey(NamedTuple):
    key: Any  # a `cryptography` public key
    family: str
    algorithms: tuple[str, ...]
    rules: ProviderRules


def _algorithms() -> dict[str, Any]:
    try:
        from jwt.algorithms import get_default_algorithms
    except ImportError:
        raise ConfigError("jwtAuth", f"needs PyJWT with cryptography: {INSTALL_HINT}") from None
    algorithms = get_default_algorithms()
    if "RS256" not in algorithms:  # PyJWT without `cryptography`
        raise ConfigError("jwtAuth", f"needs PyJWT with cryptography: {INSTALL_HINT}")
    return algorithms


def _rules(provider: JwtProvider) -> ProviderRules:
    required = set(provider.required_claims) & set(_SUPPORTED_REQUIRED)
    required.add("iss")
    if provider.audiences:
        required.add("aud")
    return ProviderRules(
        provider.issuer, frozenset(provider.audiences), tuple(sorted(required))
    )


def parse_jwks(text: str, rules: ProviderRules) -> dict[str, VerifyKey]:
    """A JWKS document as `kid -> key`; ValueError names what agentgateway would refuse."""
    algorithms = _algorithms()
    try:
        document = json.loads(text)
    except ValueError as error:
        raise ValueError(f"failed to load JWKS: {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("failed to load JWKS: expected an object with a `keys` list")
    keys: dict[str, VerifyKey] = {}
    for jwk in document["keys"]:
        if not isinstance(jwk, dict):
            raise ValueError("failed to load JWKS: a key is not an object")
        kty = jwk.get("kty")
        if kty not in ("RSA", "EC", "OKP", "oct"):
            raise ValueError(f"failed to load JWKS: unknown key type {kty!r}")
        kid = jwk.get("kid")
        if not isinstance(kid, str):
            raise ValueError("the key is missing the `kid` attribute")
        if kty == "oct":
            # Symmetric keys are refused: a shared secret in a JWKS is a misconfiguration.
            raise ValueError(
                f"the key {_rust_str(kid)} uses an unsupported algorithm OctetKey "
                "(supported: RSA, EC, OKP[Ed25519])"
            )
        if kty == "OKP" and jwk.get("crv") != "Ed25519":
            raise ValueError(
                f"the key {_rust_str(kid)} uses unsupported OKP curve {jwk.get('crv')} "
                "(supported: Ed25519)"
            )
        # Only the public parameters: jsonwebtoken builds keys from them alone.
        public = {k: v for k, v in jwk.items() if k in ("kty", "crv", "n", "e", "x", "y")}
        try:
            key = algorithms[{"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}[kty]].from_jwk(public)
        except Exception as error:  # PyJWT raises InvalidKeyError, ValueError, KeyError...
            raise ValueError(
                f"could not construct a decoding key for {_rust_str(kid)}: {error}"
            ) from None
        alg = jwk.get("alg")
        # An `alg` jsonwebtoken knows pins the key to it; anything else means "infer".
        allowed = (alg,) if isinstance(alg, str) and alg in _FAMILY else _INFERRED[kty]
        keys[kid] = VerifyKey(key, kty, allowed, rules)
    return keys


class KeySetHolder:
    """The current key set of one provider; a JWKS URL's refresher replaces `keys`."""

    __slots__ = ("keys", "path", "rules", "url")

    def __init__(
        self,
        rules: ProviderRules,
        keys: dict[str, VerifyKey] | None,
        url: str | None = None,
        path: str = "jwtAuth",
    ) -> None:
        self.rules = rules
        self.url = url
        self.path = path  # the provider's config path, for load errors
        self.keys = keys  # None until a remote set is first loaded

    def update(self, text: str) -> None:
        """Take a freshly fetched document; a bad one raises ValueError and changes nothing."""
        self.keys = parse_jwks(text, self.rules)


# Every remote set of the compiled config, by URL (one fetch serves all its providers).
_REMOTE: dict[str, list[KeySetHolder]] = {}


def remote_key_sets() -> dict[str, list[KeySetHolder]]:
    """The key sets that come from a JWKS URL, for the server to fetch and refresh."""
    return _REMOTE


def _holder(provider: JwtProvider) -> KeySetHolder:
    rules = _rules(provider)
    if provider.jwks_url is not None:
        _algorithms()
        url = provider.jwks_url
        for existing in _REMOTE.get(url, ()):
            if existing.rules == rules:
                return existing
        holder = KeySetHolder(rules, None, url, provider.path or "jwtAuth")
        _REMOTE.setdefault(url, []).append(holder)
        return holder
    assert provider.jwks_text is not None
    try:
        keys = parse_jwks(provider.jwks_text, rules)
    except ValueError as error:
        where = f"{provider.path}.jwks" if provider.path else "jwks"
        raise ConfigError(where, str(error)) from None
    return KeySetHolder(rules, keys, None)


# -- tokens ---------------------------------------------------------------------------------


def _b64(part: str) -> bytes:
    """base64url without padding, as the `base64` crate decodes it (errors in its words)."""
    match = _B64URL.match(part)
    end = match.end() if match else 0
    if end < len(part):
        bad = part[end]
        if bad == "=":
            raise _kind("Base64(InvalidPadding)")
        raise _kind(f"Base64(InvalidByte({end}, {ord(bad) if ord(bad) < 256 else 0}))")
    if len(part) % 4 == 1:
        raise _kind(f"Base64(InvalidLength({len(part)}))")
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _kind(f"Base64(InvalidLength({len(part)}))") from None


def _json(data: bytes) -> object:
    try:
        return json.loads(data, parse_constant=_no_constant)
    except ValueError as error:
        if isinstance(error, json.JSONDecodeError):
            where = f"line: {error.lineno}, column: {error.colno}"
            raise _kind(f"Json(Error({_rust_str(error.msg)}, {where}))") from None
        raise _kind(f"Json(Error({_rust_str(str(error))}, line: 1, column: 1))") from None


def _no_constant(name: str) -> object:
    raise ValueError(f"expected value ({name})")


def _header_error(error: TokenError) -> TokenError:
    text = str(error).removeprefix("the token is invalid or malformed: ")
    return TokenError(f"the token header is malformed: {text}")


def _number(value: object) -> int | None:
    """A u64 claim as serde reads it: an integer in range, else "not parsed"."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < _U64:
        return value
    return None


def _strings(value: object) -> tuple[str, ...] | None:
    """A string-or-array claim (`iss`, `aud`); None when it is neither."""
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    return None


def _check_claims(claims: dict[str, Any], rules: ProviderRules) -> None:
    for name in rules.required:
        value = claims.get(name)
        present = _number(value) is not None if name in ("exp", "nbf") else (
            isinstance(value, str) if name == "sub" else _strings(value) is not None
        )
        if not present:
            raise _kind(f"MissingRequiredClaim({_rust_str(name)})")
    exp = _number(claims.get("exp"))
    if exp is not None and exp < int(time.time()) - LEEWAY:
        raise _kind("ExpiredSignature")
    issuers = _strings(claims.get("iss"))
    if issuers is not None and any(iss != rules.issuer for iss in issuers):
        raise _kind("InvalidIssuer")
    if rules.audiences:
        audiences = _strings(claims.get("aud"))
        if audiences is not None and rules.audiences.isdisjoint(audiences):
            raise _kind("InvalidAudience")


class Verifier:
    """Checks a token against the providers' current key sets, in provider order."""

    __slots__ = ("algorithms", "holders")

    def __init__(self, holders: Sequence[KeySetHolder]) -> None:
        self.holders = tuple(holders)
        self.algorithms = _algorithms()

    def verify(self, token: str) -> dict[str, Any]:
        """The token's claims, or TokenError with agentgateway's message."""
        # jsonwebtoken splits from the right: signature, then payload, then the header.
        message, dot, signature = token.rpartition(".")
        header_part, dot2, payload = message.rpartition(".")
        if not dot or not dot2:
            raise TokenError("the token header is malformed: Error(InvalidToken)")
        try:
            header = _json(_b64(header_part))
        except TokenError as error:
            raise _header_error(error) from None
        if not isinstance(header, dict):  # serde's words, not its positions
            raise TokenError(
                'the token header is malformed: Error(Json(Error("invalid type: expected '
                'struct Header", line: 1, column: 0)))'
            )
        alg = header.get("alg")
        if alg not in _FAMILY:
            if alg is None:
                what = "missing field `alg`"
            else:
                what = f"unknown variant `{alg}`, expected one of {_ALG_LIST}"
            raise TokenError(
                f"the token header is malformed: Error(Json(Error({_rust_str(what)}, "
                "line: 1, column: 0)))"
            )
        kid = header.get("kid")
        if kid is None:
            raise TokenError("the token header does not specify a `kid`")
        if not isinstance(kid, str):
            raise TokenError(
                'the token header is malformed: Error(Json(Error("invalid type: expected a '
                'string", line: 1, column: 0)))'
            )
        key = None
        for holder in self.holders:
            keys = holder.keys
            if keys is not None:
                key = keys.get(kid)
                if key is not None:
                    break
        if key is None:
            raise TokenError(f"token uses the unknown key {_rust_str(kid)}")
        if alg not in key.algorithms or any(_FAMILY[a] != key.family for a in key.algorithms):
            raise _kind("InvalidAlgorithm")
        raw_signature = _b64(signature)
        try:
            valid = self.algorithms[alg].verify(message.encode(), key.key, raw_signature)
        except Exception:  # a signature of the wrong shape for the key
            valid = False
        if not valid:
            raise _kind("InvalidSignature")
        claims = _json(_b64(payload))
        if not isinstance(claims, dict):
            raise _kind(
                'Json(Error("invalid type: expected a map", line: 1, column: 0))'
            )
        _check_claims(claims, key.rules)
        return claims


# -- the step -------------------------------------------------------------------------------


def _answer(error: TokenError) -> PolicyAnswer:
    body = f"authentication failure: {error}".encode()
    return PolicyAnswer(local_response(401, body), Reason.JWT_AUTH)


_MISSING = _answer(TokenError("no bearer token found"))


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    auth: JwtAuth | None = policies.jwt_auth
    if auth is None:
        return None
    verifier = Verifier([_holder(p) for p in auth.providers])
    location = auth.location or CredentialLocation("header", auth.header_name, auth.prefix)
    extract, remove = compile_location(location)
    strict = auth.mode == "strict"
    permissive = auth.mode == "permissive"

    def step(request: PolicyRequest) -> PolicyAnswer | None:
        token = extract(request)
        if token is None:
            return _MISSING if strict else None
        try:
            claims = verifier.verify(token)
        except TokenError as error:
            return None if permissive else _answer(error)
        remove(request)  # only once verified; an expression's source stays
        request.jwt_claims = claims
        request.jwt_token = token
        request.set_claims("jwt", claims)
        return None

    return step
