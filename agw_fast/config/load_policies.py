"""Route and backend `policies` blocks: raw YAML values to the model's policy dataclasses."""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Literal, cast

from agw_fast.config.durations import parse_duration
from agw_fast.config.load_ai import shaped_ai_policy
from agw_fast.config.load_guardrails import GuardParsers, parse_prompt_guard
from agw_fast.config.model import (
    BASIC_LOCATION,
    BEARER_LOCATION,
    AIPolicy,
    ApiKeyAuth,
    ApiKeyEntry,
    AuthorityRewrite,
    Authorization,
    AuthorizationRule,
    BackendAuth,
    BackendPolicies,
    BackendTLS,
    BasicAuth,
    ConditionalDirectResponse,
    CorsPolicy,
    CredentialLocation,
    DelayPolicy,
    DirectResponse,
    Eviction,
    GatewayPolicies,
    HeaderModifier,
    HealthPolicy,
    HtpasswdEntry,
    JwtAuth,
    JwtMode,
    JwtProvider,
    LocalRateLimit,
    PathRewrite,
    PromptGuard,
    RequestMirror,
    RequestRedirect,
    RetryPolicy,
    RoutePolicies,
    TimeoutPolicy,
    UrlRewrite,
    ValueMatch,
)
from agw_fast.config.validate import (
    Obj,
    as_duration,
    as_int,
    as_list,
    as_str,
    as_str_map,
    check_authority,
    check_header_name,
    check_header_value,
    check_hostname_pattern,
    check_regex,
    check_url_path,
    choice,
    join,
    kind,
    not_supported,
    parse_host_port,
)
from agw_fast.errors import ConfigError

__all__ = [
    "ROUTE_TYPES",
    "parse_authorization",
    "SERVED_ROUTE_TYPES",
    "parse_backend_auth",
    "parse_backend_policies",
    "parse_backend_tls",
    "parse_gateway_policies",
    "parse_guardrails",
    "parse_header_modifier",
    "parse_health",
    "parse_route_policies",
    "parse_secret",
    "parse_value_match",
    "one_key",
]

# `$defs.RouteType` in agentgateway's schema.
ROUTE_TYPES = (
    "completions",
    "messages",
    "models",
    "passthrough",
    "detect",
    "responses",
    "embeddings",
    "realtime",
    "anthropicTokenCount",
    "generateContent",
    "geminiCountTokens",
    "rerank",
)
# The route types agw-fast serves: all but `realtime` (websockets). `models` is agentgateway's
# own 501 answer.
SERVED_ROUTE_TYPES = frozenset(ROUTE_TYPES) - {"realtime"}
# http_serde's spellings of http::Version; agw-fast speaks HTTP/1.1 to every backend.
_LIMIT_TYPES = ("requests", "tokens")
_HTTP_VERSIONS = ("HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0")
_ALPN_HTTP11 = "http/1.1"
# Offering h2 next to http/1.1 only states a preference: the server still settles on
# http/1.1 when that is all agw-fast offers, so such lists keep their meaning.
_ALPN_DROPPABLE = frozenset({"h2"})
_METHOD = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")


def _header_modifier(raw: object, path: str) -> HeaderModifier:
    o = Obj(raw, path, "HeaderModifier")

    def pairs(key: str) -> tuple[tuple[str, str], ...]:
        value = o.get(key)
        if value is None:
            return ()
        base = o.child(key)
        return tuple(
            (check_header_name(k, join(base, k)), check_header_value(v, join(base, k)))
            for k, v in as_str_map(value, base)
        )

    add, set_ = pairs("add"), pairs("set")
    remove = tuple(check_header_name(item, p) for p, item in o.items("remove"))
    o.close()
    return HeaderModifier(add=add, set=set_, remove=remove)


def _authority(raw: object, path: str) -> AuthorityRewrite:
    if isinstance(raw, str):
        if raw == "auto":
            return AuthorityRewrite("auto")
        if raw == "none":
            return AuthorityRewrite("none")
        expected = '"auto", "none" or a map with full, host or port'
        raise ConfigError(path, f"expected {expected}, got {raw!r}")
    o = Obj(raw, path, "HostRedirect")
    _exactly_one(o, ("full", "host", "port"))
    result: AuthorityRewrite
    if o.has("full"):
        result = AuthorityRewrite("full", check_authority(o.get("full"), o.child("full")))
    elif o.has("host"):
        host = check_hostname_pattern(o.get("host"), o.child("host"))
        if host.startswith("*."):
            raise ConfigError(o.child("host"), f"invalid host {host!r}")
        result = AuthorityRewrite("host", host)
    else:
        port = as_int(o.get("port"), o.child("port"), 1, 65535)
        result = AuthorityRewrite("port", str(port))
    o.close()
    return result


def _path_rewrite(raw: object, path: str) -> PathRewrite:
    o = Obj(raw, path, "PathRedirect")
    _exactly_one(o, ("full", "prefix"))
    if o.has("full"):
        result = PathRewrite("full", check_url_path(o.get("full"), o.child("full")))
    else:
        result = PathRewrite("prefix", check_url_path(o.get("prefix"), o.child("prefix")))
    o.close()
    return result


def _exactly_one(o: Obj, options: tuple[str, ...]) -> None:
    present = [k for k in options if o.has(k)]
    if len(present) != 1:
        listed = ", ".join(options)
        found = f" (found {', '.join(present)})" if present else ""
        raise ConfigError(o.path, f"expected exactly one of: {listed}{found}")


def _url_rewrite(raw: object, path: str) -> UrlRewrite:
    o = Obj(raw, path, "UrlRewrite")
    authority = o.get("authority")
    rewrite_path = o.get("path")
    result = UrlRewrite(
        authority=None if authority is None else _authority(authority, o.child("authority")),
        path=None if rewrite_path is None else _path_rewrite(rewrite_path, o.child("path")),
    )
    o.close()
    return result


def _redirect(raw: object, path: str) -> RequestRedirect:
    o = Obj(raw, path, "RequestRedirect")
    scheme = o.get("scheme")
    authority = o.get("authority")
    redirect_path = o.get("path")
    status = o.opt_int("status")
    if status is not None and not 300 <= status <= 399:
        raise ConfigError(o.child("status"), f"redirect status must be in 300..399, got {status}")
    result = RequestRedirect(
        scheme=None if scheme is None else choice(scheme, o.child("scheme"), ("http", "https")),
        authority=None if authority is None else _authority(authority, o.child("authority")),
        path=None if redirect_path is None else _path_rewrite(redirect_path, o.child("path")),
        status=302 if status is None else status,
    )
    o.close()
    return result


def _direct_response(raw: object, path: str) -> DirectResponse | ConditionalDirectResponse:
    if isinstance(raw, dict) and "conditional" in raw:
        return _conditional_direct_response(raw, path)
    return _direct_answer(Obj(raw, path, "LocalExplicitOrConditional_DirectResponse"))


def _direct_answer(o: Obj) -> DirectResponse:
    status = as_int(o.require("status"), o.child("status"))
    # A 1xx is an interim response (RFC 9110 §15.2): it cannot be the final answer.
    if not 200 <= status <= 599:
        raise ConfigError(o.child("status"), f"status must be in 200..599, got {status}")
    body_raw = o.get("body")
    body = b""
    if isinstance(body_raw, str):
        body = body_raw.encode()
    elif body_raw is not None:
        body_path = o.child("body")
        if not isinstance(body_raw, list):
            expected = "a string or a list of byte values"
            raise ConfigError(body_path, f"expected {expected}, got {kind(body_raw)}")
        body = bytes(as_int(b, f"{body_path}[{i}]", 0, 255) for i, b in enumerate(body_raw))
    body_expression = o.opt_str("bodyExpression")
    if body_expression is not None and body:
        # agentgateway fails every request of such a route (filters.rs DirectResponse::apply).
        raise ConfigError(o.child("bodyExpression"), "body and bodyExpression may not both be set")
    headers_path = o.child("headers")
    headers = []
    for name, expression in as_str_map(o.get("headers") or {}, headers_path):
        name_path = join(headers_path, name)
        lowered = check_header_name(name, name_path).lower()
        if lowered in _DIRECT_RESPONSE_OWN_HEADERS:
            raise ConfigError(name_path, f"{lowered} is set by the gateway itself")
        headers.append((lowered, expression))
    o.close()
    return DirectResponse(status, body, body_expression, tuple(headers), o.path)


# Framing and connection fields are the gateway's to write (RFC 9112 §6, RFC 9110 §7.6.1).
_DIRECT_RESPONSE_OWN_HEADERS = frozenset(
    "content-length transfer-encoding connection keep-alive proxy-connection te trailer upgrade"
    .split()
)


def _conditional_direct_response(raw: dict[str, object], path: str) -> ConditionalDirectResponse:
    """agentgateway's `LocalConditionalPolicies` (types/local.rs): 1..64 entries, an entry
    without `condition` only last."""
    o = Obj(raw, path, "LocalConditionalPolicies_DirectResponse")
    items = o.items("conditional")
    o.close()
    if not items:
        raise ConfigError(join(path, "conditional"), "conditional policies need at least one entry")
    if len(items) > 64:
        raise ConfigError(join(path, "conditional"), "conditional policies take at most 64 entries")
    entries = []
    for index, (item_path, item) in enumerate(items):
        entry = Obj(item, item_path, "LocalConditionalPolicy_DirectResponse")
        condition = entry.opt_str("condition")
        if condition is None and index + 1 != len(items):
            raise ConfigError(item_path, "an entry without condition must be the last")
        entries.append((condition, _direct_answer(entry), entry.child("condition")))
    return ConditionalDirectResponse(tuple(entries))


def _delay(raw: object, path: str) -> DelayPolicy:
    """`delay.duration`: a duration string (`2s`) is fixed, anything else a CEL expression,
    as agentgateway's `de_duration_or_expression` (cel/helpers.rs)."""
    o = Obj(raw, path, "DelayPolicy")
    text = o.req_str("duration")
    where = o.child("duration")
    o.close()
    try:
        seconds = parse_duration(text, where)
    except ConfigError:
        seconds = -1.0
    if seconds < 0:
        # Not a duration (agentgateway's durfmt refuses negative ones too): CEL, which
        # `-1s` is not, so such a value fails at load there and here alike.
        return DelayPolicy(expression=text, path=where)
    return DelayPolicy(seconds=seconds, path=where)


def _request_mirror(raw: object, path: str) -> RequestMirror:
    o = Obj(raw, path, "RequestMirror")
    backend = Obj(o.require("backend"), o.child("backend"), "SimpleLocalBackendSerde")
    target = parse_host_port(backend.require("host"), backend.child("host"))
    backend.close()
    percentage_path = o.child("percentage")
    percentage = o.require("percentage")
    if isinstance(percentage, bool) or not isinstance(percentage, int | float):
        raise ConfigError(percentage_path, f"expected a number, got {kind(percentage)}")
    if not 0.0 <= percentage <= 1.0:
        raise ConfigError(percentage_path, f"percentage must be in 0.0..1.0, got {percentage}")
    o.close()
    return RequestMirror(target, float(percentage))


def _local_rate_limits(raw: object, path: str) -> tuple[LocalRateLimit, ...]:
    """`localRateLimit`: a list of buckets, or `{conditional: [...]}` (types/local.rs
    `LocalRateLimitPolicy`): entries each one bucket with a CEL `condition`, the first whose
    condition holds applying; an entry without one is the fallback and must be last."""
    if not isinstance(raw, dict):
        items = as_list(raw, path)
        return tuple(_rate_limit(item, f"{path}[{i}]") for i, item in enumerate(items))
    o = Obj(raw, path, "LocalConditionalPolicies_RateLimitSpec")
    entries_path = o.child("conditional")
    entries = as_list(o.require("conditional"), entries_path)
    o.close()
    # agentgateway's validate_local_conditional_policies.
    if not entries:
        raise ConfigError(entries_path, "conditional policies must have at least one entry")
    if len(entries) > 64:
        raise ConfigError(entries_path, "conditional policies may have at most 64 entries")
    limits = []
    for i, item in enumerate(entries):
        item_path = f"{entries_path}[{i}]"
        limit = _rate_limit(item, item_path, "LocalConditionalPolicy_RateLimitSpec")
        condition = cast(dict[str, object], item).get("condition")  # _rate_limit checked it
        if condition is not None:
            condition = as_str(condition, join(item_path, "condition"))
        elif i + 1 != len(entries):
            message = "conditional policy entries without condition must be last"
            raise ConfigError(item_path, message)
        limits.append(replace(limit, condition=condition, path=item_path))
    return tuple(limits)


def _rate_limit(raw: object, path: str, spec: str = "RateLimitSpec") -> LocalRateLimit:
    o = Obj(raw, path, spec)
    o.get("condition")  # read by the caller (conditional entries only)
    u64 = 2**64 - 1
    max_tokens = o.opt_int("maxTokens", 0, u64) or 0
    per_fill = o.opt_int("tokensPerFill", 0, u64) or 0
    interval = as_duration(o.require("fillInterval"), o.child("fillInterval"))
    kind_ = o.get("type")
    limit_type = "requests" if kind_ is None else choice(kind_, o.child("type"), _LIMIT_TYPES)
    o.close()
    # agentgateway's bucket builder refuses this config; a zero interval would divide by
    # zero at the first refill there, so it is refused here at load instead.
    if max_tokens < per_fill:
        raise ConfigError(path, "maxTokens cannot be less than tokensPerFill")
    fill_ns = round(interval * 1e9)
    if fill_ns <= 0:
        raise ConfigError(o.child("fillInterval"), "fillInterval must be greater than 0")
    return LocalRateLimit(max_tokens, per_fill, fill_ns, limit_type)


def _readable_file(raw: object, path: str, base_dir: Path) -> str:
    """Resolve a file path against base_dir; it must be a readable file now."""
    name = as_str(raw, path)
    if not name:
        raise ConfigError(path, "expected a file path, got an empty string")
    resolved = (base_dir / name).resolve()
    if not resolved.is_file():
        raise ConfigError(path, f"file not found: {resolved}")
    if not os.access(resolved, os.R_OK):
        raise ConfigError(path, f"file is not readable: {resolved}")
    return str(resolved)


def _backend_tls(raw: object, path: str, base_dir: Path) -> BackendTLS:
    o = Obj(raw, path, "LocalBackendTLS")
    files = {k: o.get(k) for k in ("root", "cert", "key")}
    if (files["cert"] is None) != (files["key"] is None):
        present = "cert" if files["key"] is None else "key"
        missing = "key" if present == "cert" else "cert"
        raise ConfigError(o.child(present), f"{present} requires {missing} (client mTLS)")
    resolved = {
        k: None if v is None else _readable_file(v, o.child(k), base_dir) for k, v in files.items()
    }
    hostname = o.opt_str("hostname")
    if hostname is not None:
        hostname = check_hostname_pattern(hostname, o.child("hostname"))
        if hostname.startswith("*."):
            raise ConfigError(o.child("hostname"), f"invalid hostname {hostname!r}")
    alpn: tuple[str, ...] | None = None
    if o.has("alpn"):
        alpn = _alpn(o.get("alpn"), o.child("alpn"))
    result = BackendTLS(
        root=resolved["root"],
        cert=resolved["cert"],
        key=resolved["key"],
        hostname=hostname,
        insecure=bool(o.opt_bool("insecure")),
        insecure_host=bool(o.opt_bool("insecureHost")),
        alpn=alpn,
    )
    o.close()
    return result


def _alpn(raw: object, path: str) -> tuple[str, ...]:
    protocols = [as_str(p, f"{path}[{i}]") for i, p in enumerate(as_list(raw, path))]
    for i, proto in enumerate(protocols):
        if proto != _ALPN_HTTP11 and proto not in _ALPN_DROPPABLE:
            raise not_supported(f"{path}[{i}]", f"ALPN {proto!r}: agw-fast speaks http/1.1 only")
    if protocols and _ALPN_HTTP11 not in protocols:
        raise not_supported(path, "agw-fast speaks http/1.1 only")
    return (_ALPN_HTTP11,) if protocols else ()


def _file_or_inline(raw: object, path: str, base_dir: Path) -> str:
    """A FileOrInline value: the string itself, or the UTF-8 text of `{file: path}`."""
    if isinstance(raw, str):
        return raw
    o = Obj(raw, path, "FileOrInline")
    file_path = o.child("file")
    resolved = _readable_file(o.require("file"), file_path, base_dir)
    o.close()
    try:
        return Path(resolved).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        # The decoder's own message quotes bytes of the file (a secret, maybe): keep it out.
        raise ConfigError(file_path, f"{resolved} is not valid UTF-8") from None
    except OSError as exc:
        raise ConfigError(file_path, f"cannot read {resolved}: {exc.strerror}") from None


def _secret(raw: object, path: str, base_dir: Path) -> str:
    """A FileOrInline secret; agentgateway trims surrounding whitespace from both forms."""
    secret = _file_or_inline(raw, path, base_dir).strip()
    check_header_value(secret, path, secret=True)
    return secret


def _backend_auth(raw: object, path: str, base_dir: Path) -> BackendAuth:
    if raw == "copilot":
        raise not_supported(path, "copilot")
    o = Obj(raw, path, "BackendAuthCompat")
    key_raw = o.require("key")
    key_path = o.child("key")
    o.close()
    if isinstance(key_raw, dict) and ("value" in key_raw or "location" in key_raw):
        k = Obj(key_raw, key_path, "BackendAuth/key")
        secret = _secret(k.require("value"), k.child("value"), base_dir)
        location = k.get("location")
        k.close()
        if location is None:
            return BackendAuth(key=secret)
        name, prefix = _auth_location(location, join(key_path, "location"))
        check_header_value(prefix + secret, key_path, secret=True)
        return BackendAuth(key=secret, header_name=name, prefix=prefix)
    # The older short form: the key itself, inline or {file: ...}.
    return BackendAuth(key=_secret(key_raw, key_path, base_dir))


def _auth_location(raw: object, path: str) -> tuple[str, str]:
    loc = Obj(raw, path, "AuthorizationLocation")
    for other in ("queryParameter", "cookie"):
        if loc.has(other):
            raise not_supported(loc.child(other))  # backendAuth sends the key in a header
    if loc.has("expression"):
        # agentgateway fails each request it would send this way (auth/mod.rs `insert`).
        message = "an expression location can only read a credential, not send one"
        raise ConfigError(loc.child("expression"), message)
    header = Obj(loc.require("header"), loc.child("header"), "AuthorizationLocation/header")
    loc.close()
    name = check_header_name(header.require("name"), header.child("name")).lower()
    prefix = header.opt_str("prefix") or ""
    check_header_value(prefix, header.child("prefix"))
    header.close()
    return name, prefix


def _credential_location(raw: object, path: str) -> CredentialLocation:
    """Where `apiKey`/`basicAuth` read the credential (AuthorizationLocation, http/auth/mod.rs)."""
    loc = Obj(raw, path, "AuthorizationLocation")
    present = [k for k in ("header", "queryParameter", "cookie", "expression") if loc.has(k)]
    if len(present) != 1:
        raise ConfigError(
            path, "expected exactly one of: header, queryParameter, cookie, expression"
        )
    kind_ = present[0]
    if kind_ == "expression":
        # Compiled with the policy's steps (policies/credentials.py), which name this path.
        text = as_str(loc.get("expression"), loc.child("expression"))
        loc.close()
        return CredentialLocation("expression", text, path=join(path, "expression"))
    spec = {
        "header": "AuthorizationLocation/header",
        "queryParameter": "AuthorizationLocation/queryParameter",
        "cookie": "AuthorizationLocation/cookie",
    }[kind_]
    sub = Obj(loc.get(kind_), loc.child(kind_), spec)
    loc.close()
    if kind_ == "header":
        name = check_header_name(sub.require("name"), sub.child("name")).lower()
        prefix = sub.opt_str("prefix")  # None: the whole value is the credential
        sub.close()
        return CredentialLocation("header", name, prefix)
    name = sub.req_str("name")
    sub.close()
    return CredentialLocation("queryParameter" if kind_ == "queryParameter" else "cookie", name)


_API_KEY_MODES = ("strict", "optional", "permissive")


def _api_key(raw: object, path: str) -> ApiKeyAuth:
    o = Obj(raw, path, "LocalAPIKeys")
    by_digest: dict[bytes, ApiKeyEntry] = {}
    o.require("keys")
    for item_path, item in o.items("keys"):
        e = Obj(item, item_path, "LocalAPIKey")
        if e.has("key") == e.has("keyHash"):
            raise ConfigError(item_path, "expected exactly one of: key, keyHash")
        if e.get("allowedModels") is not None:
            # agentgateway applies it in model routing, after the body is read (model_router.rs).
            raise not_supported(e.child("allowedModels"))
        if e.has("key"):
            # Never quote the key: it must not reach a log line or an error message.
            digest = hashlib.sha256(e.req_str("key").encode()).digest()
        else:
            digest = _key_hash(e.req_str("keyHash"), e.child("keyHash"))
        # Keys are a map by hash in agentgateway: a repeated key keeps its last metadata.
        by_digest[digest] = ApiKeyEntry(digest, e.get("metadata"))
        e.close()
    mode = o.get("mode")
    location = o.get("location")
    result = ApiKeyAuth(
        keys=tuple(by_digest.values()),
        mode="optional" if mode is None else choice(mode, o.child("mode"), _API_KEY_MODES),  # type: ignore[arg-type]
        location=(
            BEARER_LOCATION if location is None
            else _credential_location(location, o.child("location"))
        ),
    )
    o.close()
    return result


def _key_hash(text: str, path: str) -> bytes:
    digest = text.removeprefix("sha256:")
    if digest == text:
        raise ConfigError(path, "keyHash must use the sha256:<hex> format")
    try:
        decoded = bytes.fromhex(digest)
    except ValueError:
        raise ConfigError(path, "keyHash is not valid hex") from None
    if len(decoded) != 32:
        raise ConfigError(path, "sha256 keyHash must decode to 32 bytes")
    return decoded


# What htpasswd-verify-fork (agentgateway's crate) tells apart, in its order.
_BCRYPT = re.compile(r"\$2[abxy]\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_BASIC_AUTH_MODES = ("strict", "optional")
_EXTRA = "pip install 'agw-fast[basicauth]'"


def _htpasswd_scheme(hash_: str) -> str | None:
    """The hash scheme of an htpasswd entry, or None for an entry that can never match
    (agentgateway drops a malformed apr1 or bcrypt entry; anything else is crypt(3))."""
    if hash_.startswith("$apr1$"):
        salt, sep, digest = hash_[6:].partition("$")
        return "apr1" if sep and salt and len(salt) <= 8 and digest else None
    if hash_[:4] in ("$2a$", "$2b$", "$2x$", "$2y$"):
        return "bcrypt" if _BCRYPT.fullmatch(hash_) else None
    if hash_.startswith("{SHA}"):
        return "sha1"
    return "crypt"


def _basic_auth(raw: object, path: str, base_dir: Path) -> BasicAuth:
    o = Obj(raw, path, "LocalBasicAuth")
    source_path = o.child("htpasswd")
    text = _file_or_inline(o.require("htpasswd"), source_path, base_dir)
    users: dict[str, HtpasswdEntry] = {}
    # As htpasswd-verify-fork reads it: `user:hash` lines split on LF, a line without a colon
    # skipped, a later line for the same user replacing an earlier one.
    for line in text.split("\n"):
        username, sep, hash_ = line.partition(":")
        scheme = _htpasswd_scheme(hash_) if sep else None
        if scheme is None:
            continue
        needs = {"bcrypt": "bcrypt", "apr1": "passlib", "crypt": "passlib"}.get(scheme)
        if needs is not None and importlib.util.find_spec(needs) is None:
            raise ConfigError(
                source_path, f"{scheme} hashes (user {username!r}) need an extra: {_EXTRA}"
            )
        users[username] = HtpasswdEntry(username, hash_, scheme)  # type: ignore[arg-type]
    realm = o.opt_str("realm")
    if realm is not None:
        check_header_value(realm, o.child("realm"))
    mode = o.get("mode")
    location = o.get("authorizationLocation")
    result = BasicAuth(
        htpasswd=tuple(users.values()),
        realm="Restricted" if realm is None else realm,
        mode="optional" if mode is None else choice(mode, o.child("mode"), _BASIC_AUTH_MODES),  # type: ignore[arg-type]
        location=(
            BASIC_LOCATION if location is None
            else _credential_location(location, o.child("authorizationLocation"))
        ),
    )
    o.close()
    return result
_JWT_MODES = ("strict", "optional", "permissive")


_JWT_SHARED_LOCATIONS = frozenset({"cookie", "queryParameter", "expression"})


def _jwt_auth(raw: object, path: str, base_dir: Path) -> JwtAuth:
    """`jwtAuth`: the `providers` form when that key is there (as agentgateway decides),
    else the single-issuer form. The keys themselves are read by policies/jwt.py."""
    o = Obj(raw, path, "LocalJwtConfig")
    multi = o.has("providers")
    mode = choice(o.get("mode") or "optional", o.child("mode"), _JWT_MODES)
    name, prefix = "authorization", "Bearer "
    location = None
    raw_location = o.get("location")
    if isinstance(raw_location, dict) and raw_location.keys() & _JWT_SHARED_LOCATIONS:
        # Read and removed by policies/credentials.py, as for apiKey/basicAuth.
        location = _credential_location(raw_location, o.child("location"))
    elif raw_location is not None:
        name, prefix = _auth_location(raw_location, o.child("location"))
    if multi:
        for key in ("issuer", "audiences", "jwks", "jwtValidationOptions"):
            if o.has(key):
                raise ConfigError(o.child(key), f'unknown field "{key}" next to "providers"')
        providers = tuple(_jwt_provider(item, p, base_dir) for p, item in o.items("providers"))
    else:
        providers = (_jwt_provider_fields(o, base_dir),)
    o.close()
    return JwtAuth(providers, cast(JwtMode, mode), name, prefix, location)


def _jwt_provider(raw: object, path: str, base_dir: Path) -> JwtProvider:
    o = Obj(raw, path, "ProviderConfig")
    provider = _jwt_provider_fields(o, base_dir)
    o.close()
    return provider


def _jwt_provider_fields(o: Obj, base_dir: Path) -> JwtProvider:
    issuer = o.req_str("issuer")
    audiences = tuple(as_str(a, p) for p, a in o.items("audiences"))
    required = frozenset({"exp"})
    if o.has("jwtValidationOptions"):
        opts = Obj(o.get("jwtValidationOptions"), o.child("jwtValidationOptions"),
                   "JWTValidationOptions")  # fmt: skip
        if opts.has("requiredClaims"):
            required = frozenset(as_str(c, p) for p, c in opts.items("requiredClaims"))
        opts.close()
    jwks_path = o.child("jwks")
    jwks = o.require("jwks")
    url: str | None = None
    if isinstance(jwks, str):
        source, text = "inline", jwks
    else:
        j = Obj(jwks, jwks_path, "FileInlineOrRemote")
        if j.has("file") == j.has("url"):
            raise ConfigError(jwks_path, "expected exactly one of file, url")
        if j.has("file"):
            file_path = j.child("file")
            source = _readable_file(j.get("file"), file_path, base_dir)
            try:
                text = Path(source).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(file_path, f"cannot read {source}: {exc}") from None
        else:
            url = source = j.req_str("url")
            text = None
            if not url.startswith(("http://", "https://")):
                expected = "an http:// or https:// URL"
                raise ConfigError(j.child("url"), f"expected {expected}, got {url!r}")
        j.close()
    return JwtProvider(
        issuer=issuer, jwks_source=source, jwks_text=text, audiences=audiences,
        required_claims=required, jwks_url=url, path=o.path,
    )


def _timeout(raw: object, path: str) -> TimeoutPolicy | None:
    o = Obj(raw, path, "TimeoutPolicy")
    result = TimeoutPolicy(
        request_timeout=o.opt_duration("requestTimeout"),
        backend_request_timeout=o.opt_duration("backendRequestTimeout"),
    )
    o.close()
    return None if result == TimeoutPolicy() else result


def _retry(raw: object, path: str) -> RetryPolicy:
    """`retry` (agentgateway's http/retry: `codes` required, `attempts` 1..255, default 1)."""
    o = Obj(raw, path, "RetryPolicy")
    attempts = o.opt_int("attempts", 1, 255)
    codes = []
    for item_path, item in o.items("codes"):
        # http::StatusCode::from_u16 accepts three-digit codes only.
        codes.append(as_int(item, item_path, 100, 999))
    if not o.has("codes"):
        o.require("codes")
    backoff = o.opt_duration("backoff")
    precondition = o.opt_str("precondition")
    condition = o.opt_str("condition")
    o.close()
    return RetryPolicy(
        attempts=1 if attempts is None else attempts, codes=frozenset(codes), backoff=backoff,
        precondition=precondition, path="" if precondition is None else o.child("precondition"),
        condition=condition,
        condition_path="" if condition is None else o.child("condition"),
    )


def _cors_list(o: Obj, key: str, check: Callable[[str, str], str]) -> tuple[str, ...]:
    """agentgateway's WildcardOrList: a `*` anywhere means any (the rest is not read)."""
    items = [(where, as_str(item, where)) for where, item in o.items(key)]
    if any(text == "*" for _, text in items):
        return ("*",)
    return tuple(check(text, where) for where, text in items)


def _token_name(text: str, where: str) -> str:
    # http::HeaderName parses case-insensitively and prints lowercase.
    return check_header_name(text, where).lower()


def _method(text: str, where: str) -> str:
    # http::Method: a token (RFC 9110 §9.1), case kept (`get` is an extension method).
    if not _METHOD.match(text):
        raise ConfigError(where, f"invalid method {text!r}")
    return text


def _cors(raw: object, path: str) -> CorsPolicy:
    o = Obj(raw, path, "CorsSerde")
    max_age = o.opt_duration("maxAge")
    result = CorsPolicy(
        allow_credentials=bool(o.opt_bool("allowCredentials")),
        allow_headers=_cors_list(o, "allowHeaders", _token_name),
        allow_methods=_cors_list(o, "allowMethods", _method),
        allow_origins=_cors_list(o, "allowOrigins", lambda text, _where: text),
        expose_headers=_cors_list(o, "exposeHeaders", _token_name),
        max_age=None if max_age is None else int(max_age),
    )
    o.close()
    return result


def _ai_policy(raw: object, path: str, base_dir: Path) -> AIPolicy:
    o = Obj(raw, path, "Policy")
    guard_raw = o.get("promptGuard")
    prompt_guard = None if guard_raw is None else parse_guardrails(
        guard_raw, o.child("promptGuard"), base_dir
    )
    routes: list[tuple[str, str]] = []
    routes_raw = o.get("routes")
    if routes_raw is not None:
        base = o.child("routes")
        for suffix, kind_ in as_str_map(routes_raw, base):
            where = join(base, suffix)
            route_type = choice(kind_, where, ROUTE_TYPES)
            if route_type not in SERVED_ROUTE_TYPES:
                raise not_supported(where, f"route type {route_type}")
            routes.append((suffix, route_type))
    policy = shaped_ai_policy(o, tuple(routes))
    o.close()
    return dataclasses.replace(policy, prompt_guard=prompt_guard)


def _backend_http(raw: object, path: str) -> float | None:
    o = Obj(raw, path, "HTTP")
    version = o.get("version")
    if version is not None:
        text = choice(version, o.child("version"), _HTTP_VERSIONS)
        if text != "HTTP/1.1":
            raise not_supported(o.child("version"), f"{text}: agw-fast speaks HTTP/1.1 only")
    timeout = o.opt_duration("requestTimeout")
    o.close()
    return timeout


_RULE_MODES: dict[object, Literal["allow", "deny", "require"]] = {
    "allow": "allow",
    "deny": "deny",
    "require": "require",
}


def _authorization(raw: object, path: str) -> Authorization:
    """`authorization` (RuleSet): each rule a CEL string (an allow rule) or a one-key map
    {allow|deny|require: string}, as agentgateway's http/authorization.rs `RuleSerde`."""
    o = Obj(raw, path, "RuleSet")
    rules_path = o.child("rules")
    items = as_list(o.require("rules"), rules_path)
    o.close()
    rules = []
    for index, item in enumerate(items):
        item_path = f"{rules_path}[{index}]"
        if isinstance(item, str):
            rules.append(AuthorizationRule("allow", item, item_path))
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(
                item_path,
                "a rule is a CEL string or a map with one of allow, deny, require; "
                f"got {kind(item) if not isinstance(item, dict) else sorted(item)}",
            )
        ((key, expression),) = item.items()
        rule_path = join(item_path, str(key))
        mode = _RULE_MODES.get(key)
        if mode is None:
            raise ConfigError(rule_path, 'unknown rule kind: expected "allow", "deny" or "require"')
        rules.append(AuthorizationRule(mode, as_str(expression, rule_path), rule_path))
    return Authorization(tuple(rules))


parse_authorization = _authorization


def parse_route_policies(raw: object, path: str, base_dir: Path) -> RoutePolicies | None:
    """A route's `policies` (FilterOrPolicy); None when nothing is set."""
    o = Obj(raw, path, "FilterOrPolicy")

    def sub(key: str) -> tuple[object | None, str]:
        return o.get(key), o.child(key)

    req_hm, p1 = sub("requestHeaderModifier")
    resp_hm, p2 = sub("responseHeaderModifier")
    redirect, p3 = sub("requestRedirect")
    rewrite, p4 = sub("urlRewrite")
    direct, p5 = sub("directResponse")
    tls, p6 = sub("backendTLS")
    auth, p7 = sub("backendAuth")
    timeout, p8 = sub("timeout")
    ai, p9 = sub("ai")
    basic, p10 = sub("basicAuth")
    api_key, p11 = sub("apiKey")
    authz, p12 = sub("authorization")
    jwt, p13 = sub("jwtAuth")
    cors, p14 = sub("cors")
    rate_limit, p15 = sub("localRateLimit")
    delay, p16 = sub("delay")
    mirror, p17 = sub("requestMirror")
    retry, p18 = sub("retry")
    o.close()
    result = RoutePolicies(
        request_header_modifier=None if req_hm is None else _header_modifier(req_hm, p1),
        response_header_modifier=None if resp_hm is None else _header_modifier(resp_hm, p2),
        request_redirect=None if redirect is None else _redirect(redirect, p3),
        url_rewrite=None if rewrite is None else _url_rewrite(rewrite, p4),
        direct_response=None if direct is None else _direct_response(direct, p5),
        backend_tls=None if tls is None else _backend_tls(tls, p6, base_dir),
        backend_auth=None if auth is None else _backend_auth(auth, p7, base_dir),
        timeout=None if timeout is None else _timeout(timeout, p8),
        ai=None if ai is None else _ai_policy(ai, p9, base_dir),
        basic_auth=None if basic is None else _basic_auth(basic, p10, base_dir),
        api_key=None if api_key is None else _api_key(api_key, p11),
        authorization=None if authz is None else _authorization(authz, p12),
        jwt_auth=None if jwt is None else _jwt_auth(jwt, p13, base_dir),
        cors=None if cors is None else _cors(cors, p14),
        local_rate_limit=() if rate_limit is None else _local_rate_limits(rate_limit, p15),
        delay=None if delay is None else _delay(delay, p16),
        request_mirror=None if mirror is None else _request_mirror(mirror, p17),
        retry=None if retry is None else _retry(retry, p18),
    )
    return None if result == RoutePolicies() else result


def parse_gateway_policies(raw: object, path: str, base_dir: Path) -> GatewayPolicies | None:
    """A listener's `policies` (LocalGatewayPolicy); None when nothing is set."""
    o = Obj(raw, path, "LocalGatewayPolicy")
    cors, jwt, basic = o.get("cors"), o.get("jwtAuth"), o.get("basicAuth")
    api_key, authz = o.get("apiKey"), o.get("authorization")
    result = GatewayPolicies(
        cors=None if cors is None else _cors(cors, o.child("cors")),
        jwt_auth=None if jwt is None else _jwt_auth(jwt, o.child("jwtAuth"), base_dir),
        basic_auth=None if basic is None else _basic_auth(basic, o.child("basicAuth"), base_dir),
        api_key=None if api_key is None else _api_key(api_key, o.child("apiKey")),
        authorization=None if authz is None else _authorization(authz, o.child("authorization")),
    )
    o.close()
    return None if result == GatewayPolicies() else result


def parse_backend_policies(
    raw: object, path: str, base_dir: Path, *, provider: bool = False
) -> BackendPolicies | None:
    """A backend's `policies` (LocalBackendPolicies); None when nothing is set. `provider`: the
    policies of an `ai` backend's provider, where `health` steers failover between providers
    (a single-endpoint backend has nothing to evict to: there it is refused)."""
    o = Obj(raw, path, "LocalBackendPolicies")
    health_raw = o.get("health")
    if health_raw is not None and not provider:
        raise not_supported(o.child("health"), "health outside an ai backend's providers")
    req_hm, p1 = o.get("requestHeaderModifier"), o.child("requestHeaderModifier")
    resp_hm, p2 = o.get("responseHeaderModifier"), o.child("responseHeaderModifier")
    redirect, p3 = o.get("requestRedirect"), o.child("requestRedirect")
    tls, p4 = o.get("backendTLS"), o.child("backendTLS")
    auth, p5 = o.get("backendAuth"), o.child("backendAuth")
    http, p6 = o.get("http"), o.child("http")
    ai, p7 = o.get("ai"), o.child("ai")
    o.close()
    result = BackendPolicies(
        request_header_modifier=None if req_hm is None else _header_modifier(req_hm, p1),
        response_header_modifier=None if resp_hm is None else _header_modifier(resp_hm, p2),
        request_redirect=None if redirect is None else _redirect(redirect, p3),
        backend_tls=None if tls is None else _backend_tls(tls, p4, base_dir),
        backend_auth=None if auth is None else _backend_auth(auth, p5, base_dir),
        backend_request_timeout=None if http is None else _backend_http(http, p6),
        ai=None if ai is None else _ai_policy(ai, p7, base_dir),
        health=None if health_raw is None else parse_health(health_raw, o.child("health")),
    )
    return None if result == BackendPolicies() else result


def one_key(o: Obj, options: tuple[str, ...]) -> str:
    present = [k for k in options if o.has(k)]
    if len(present) != 1:
        found = f" (found {', '.join(present)})" if present else ""
        raise ConfigError(o.path, f"expected exactly one of: {', '.join(options)}{found}")
    return present[0]


def parse_value_match(raw: object, path: str, *, header: bool) -> ValueMatch:
    o = Obj(raw, path, "HeaderMatch" if header else "QueryMatch")
    name_path = o.child("name")
    name_raw = o.require("name")
    # Header names compare case-insensitively (RFC 9110 §5.1): stored lowercase. Query
    # parameter names are case-sensitive and kept as written.
    name = (
        check_header_name(name_raw, name_path, allow_pseudo=True).lower()
        if header
        else as_str(name_raw, name_path)
    )
    value_spec = "HeaderValueMatch" if header else "QueryValueMatch"
    v = Obj(o.require("value"), o.child("value"), value_spec)
    o.close()
    key = one_key(v, ("exact", "regex"))
    value_path = v.child(key)
    text = check_regex(v.get(key), value_path) if key == "regex" else as_str(v.get(key), value_path)
    v.close()
    return ValueMatch(name, "regex", text) if key == "regex" else ValueMatch(name, "exact", text)


def parse_health(raw: object, path: str) -> HealthPolicy | None:
    """`health` (LocalHealthPolicy): the unhealthy condition and eviction settings."""
    if raw is None:
        return None
    o = Obj(raw, path, "LocalHealthPolicy")
    expression = o.opt_str("unhealthyExpression")
    if expression is not None and not expression.strip():
        expression = None
    eviction_raw = o.get("eviction")
    eviction = None
    if eviction_raw is not None:
        e = Obj(eviction_raw, o.child("eviction"), "LocalEviction")
        scores = {}
        for key in ("restoreHealth", "healthThreshold"):
            value = e.get(key)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (0.0 <= float(value) <= 1.0)
            ):
                raise ConfigError(
                    e.child(key), f"health.eviction.{key} must be between 0.0 and 1.0"
                )
            scores[key] = float(value)
        failures = e.get("consecutiveFailures")
        eviction = Eviction(
            duration=e.opt_duration("duration"),
            restore_health=scores.get("restoreHealth"),
            consecutive_failures=(
                None
                if failures is None
                else as_int(failures, e.child("consecutiveFailures"), -(2**31), 2**31 - 1)
            ),
            health_threshold=scores.get("healthThreshold"),
        )
        e.close()
    o.close()
    return HealthPolicy(expression, eviction, f"{path}.unhealthyExpression")


def parse_guardrails(raw: object, path: str, base_dir: Path) -> PromptGuard:
    """`promptGuard` / `guardrails` (config/load_guardrails.py, with these parsers)."""
    return parse_prompt_guard(raw, path, base_dir, _GUARD_PARSERS)


_GUARD_PARSERS = GuardParsers(
    header_modifier=_header_modifier,
    value_match=lambda raw, path: parse_value_match(raw, path, header=True),
    backend_auth=_backend_auth,
    backend_tls=_backend_tls,
)

# The backend-facing parsers, shared with the `llm:` form (config/load_llm.py).
parse_backend_auth = _backend_auth
parse_backend_tls = _backend_tls
parse_header_modifier = _header_modifier
parse_secret = _secret
