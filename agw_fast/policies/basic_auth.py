"""`basicAuth`: authenticate a request against an htpasswd user list (agentgateway
http/basicauth.rs and its htpasswd-verify-fork crate).

The schemes that crate tells apart: bcrypt (`$2a$`/`$2b$`/`$2x$`/`$2y$`, the `bcrypt` package),
Apache MD5 (`$apr1$`, passlib), `{SHA}` (base64 of SHA-1, hashlib) and anything else as
traditional crypt(3) DES (passlib). The loader refuses a file that needs a missing package.

Modes: `strict` refuses a request without credentials, `optional` (the default) lets it
through; credentials that are present must be valid in both. A failure is a 401 with
`WWW-Authenticate: Basic realm="..."` (407 with `Proxy-Authenticate` when the credentials
are read from `Proxy-Authorization`); a success takes the credentials out of the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable

from agw_fast.config.model import GatewayPolicies, HtpasswdEntry, RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.credentials import compile_location
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build", "check_password", "decode_credentials"]

# bcrypt reads at most 72 bytes of a password; the bcrypt package refuses longer ones where
# Rust's crate (agentgateway's) truncates, so truncate first to agree.
_BCRYPT_MAX = 72


def _sha1(password: bytes, hash_: str) -> bool:
    computed = base64.b64encode(hashlib.sha1(password).digest())
    return hmac.compare_digest(computed, hash_[5:].encode())


def _bcrypt(password: bytes, hash_: str) -> bool:
    import bcrypt

    try:
        return bcrypt.checkpw(password[:_BCRYPT_MAX], hash_.encode())
    except ValueError:
        return False


def _apr1(password: bytes, hash_: str) -> bool:
    from passlib.hash import apr_md5_crypt  # type: ignore[import-untyped]

    try:
        return bool(apr_md5_crypt.verify(password, hash_))
    except ValueError:  # a salt or digest passlib cannot read never matches
        return False


def _crypt(password: bytes, hash_: str) -> bool:
    from passlib.hash import des_crypt

    try:
        return bool(des_crypt.verify(password, hash_))
    except ValueError:  # not a DES crypt hash (a plaintext line, say): never matches
        return False


_CHECKS: dict[str, Callable[[bytes, str], bool]] = {
    "sha1": _sha1,
    "bcrypt": _bcrypt,
    "apr1": _apr1,
    "crypt": _crypt,
}


def check_password(entry: HtpasswdEntry, password: str) -> bool:
    return _CHECKS[entry.scheme](password.encode(), entry.hash)


def decode_credentials(encoded: str) -> tuple[str, str] | None:
    """(username, password) of a Basic credential (RFC 7617 §2): canonical padded base64 of
    UTF-8 `user:password`, split at the first colon; None for anything else."""
    try:
        raw = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Rust's base64 STANDARD engine also refuses non-zero trailing bits: only the one
    # canonical spelling of the bytes decodes.
    if base64.b64encode(raw) != encoded.encode():
        return None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    username, sep, password = text.partition(":")
    return (username, password) if sep else None


def _failure(status: int, challenge: bytes, message: bytes) -> PolicyAnswer:
    body = b"basic authentication failure: " + message
    return PolicyAnswer(
        local_response(status, body, extra_headers=challenge), Reason.BASIC_AUTH
    )


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    config = policies.basic_auth
    if config is None:
        return None
    users = {entry.username: entry for entry in config.htpasswd}
    extract, remove = compile_location(config.location)
    # RFC 9110 §11.7.1: credentials addressed to a proxy are challenged with 407.
    proxy = config.location.kind == "header" and config.location.name == "proxy-authorization"
    field = b"proxy-authenticate" if proxy else b"www-authenticate"
    challenge = b'%s: Basic realm="%s"\r\n' % (field, config.realm.encode())
    status = 407 if proxy else 401
    missing = _failure(status, challenge, b"no basic authentication credentials found")
    invalid = _failure(status, challenge, b"invalid credentials")
    strict = config.mode == "strict"

    def authenticate(request: PolicyRequest) -> PolicyAnswer | None:
        encoded = extract(request)
        if encoded is None:
            return missing if strict else None
        credentials = decode_credentials(encoded)
        if credentials is None:
            return invalid
        username, password = credentials
        entry = users.get(username)
        if entry is None or not check_password(entry, password):
            return invalid
        remove(request)
        request.basic_auth_user = username
        request.set_claims("basicAuth", {"username": username})
        return None

    return authenticate
