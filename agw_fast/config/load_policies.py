"""Route and backend `policies` blocks: raw YAML values to the model's policy dataclasses."""

from __future__ import annotations

import os
from pathlib import Path

from agw_fast.config.model import (
    AIPolicy,
    AuthorityRewrite,
    BackendAuth,
    BackendPolicies,
    BackendTLS,
    DirectResponse,
    HeaderModifier,
    LocalRateLimit,
    PathRewrite,
    RequestRedirect,
    RoutePolicies,
    TimeoutPolicy,
    UrlRewrite,
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
    check_url_path,
    choice,
    join,
    kind,
    not_supported,
)
from agw_fast.errors import ConfigError

__all__ = ["ROUTE_TYPES", "SERVED_ROUTE_TYPES", "parse_backend_policies", "parse_route_policies"]

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
# The route types agw-fast serves: the OpenAI JSON endpoints, `detect`, `passthrough`, and
# `models`, which agentgateway itself answers with a 501. The others need a translation or
# a protocol (Anthropic messages, Gemini, websockets) agw-fast does not have yet.
SERVED_ROUTE_TYPES = frozenset(
    {"completions", "responses", "embeddings", "detect", "passthrough", "models"}
)
# http_serde's spellings of http::Version; agw-fast speaks HTTP/1.1 to every backend.
_LIMIT_TYPES = ("requests", "tokens")
_HTTP_VERSIONS = ("HTTP/0.9", "HTTP/1.0", "HTTP/1.1", "HTTP/2.0", "HTTP/3.0")
_ALPN_HTTP11 = "http/1.1"
# Offering h2 next to http/1.1 only states a preference: the server still settles on
# http/1.1 when that is all agw-fast offers, so such lists keep their meaning.
_ALPN_DROPPABLE = frozenset({"h2"})


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


def _direct_response(raw: object, path: str) -> DirectResponse:
    o = Obj(raw, path, "LocalExplicitOrConditional_DirectResponse")
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
    o.close()
    return DirectResponse(status=status, body=body)


def _local_rate_limits(raw: object, path: str) -> tuple[LocalRateLimit, ...]:
    """`localRateLimit`: a list of buckets, or `{conditional: [...]}` (needs CEL: refused)."""
    if isinstance(raw, dict):
        Obj(raw, path, "LocalConditionalPolicies_RateLimitSpec").close()
        raise ConfigError(path, 'expected a list of rate limits or {"conditional": [...]}')
    items = as_list(raw, path)
    return tuple(_rate_limit(item, f"{path}[{i}]") for i, item in enumerate(items))


def _rate_limit(raw: object, path: str) -> LocalRateLimit:
    o = Obj(raw, path, "RateLimitSpec")
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


def _secret(raw: object, path: str, base_dir: Path) -> str:
    """A FileOrInline secret; agentgateway trims surrounding whitespace from both forms."""
    if isinstance(raw, str):
        secret = raw
    else:
        o = Obj(raw, path, "FileOrInline")
        file_path = o.child("file")
        resolved = _readable_file(o.require("file"), file_path, base_dir)
        o.close()
        try:
            secret = Path(resolved).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            # The decoder's own message quotes bytes of the secret: keep it out.
            raise ConfigError(file_path, f"{resolved} is not valid UTF-8") from None
        except OSError as exc:
            raise ConfigError(file_path, f"cannot read {resolved}: {exc.strerror}") from None
    secret = secret.strip()
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
    header = Obj(loc.require("header"), loc.child("header"), "AuthorizationLocation/header")
    loc.close()
    name = check_header_name(header.require("name"), header.child("name")).lower()
    prefix = header.opt_str("prefix") or ""
    check_header_value(prefix, header.child("prefix"))
    header.close()
    return name, prefix


def _timeout(raw: object, path: str) -> TimeoutPolicy | None:
    o = Obj(raw, path, "TimeoutPolicy")
    result = TimeoutPolicy(
        request_timeout=o.opt_duration("requestTimeout"),
        backend_request_timeout=o.opt_duration("backendRequestTimeout"),
    )
    o.close()
    return None if result == TimeoutPolicy() else result


def _ai_policy(raw: object, path: str) -> AIPolicy:
    o = Obj(raw, path, "Policy")
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
    o.close()
    return AIPolicy(routes=tuple(routes))


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
    rate_limit, p10 = sub("localRateLimit")
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
        ai=None if ai is None else _ai_policy(ai, p9),
        local_rate_limit=() if rate_limit is None else _local_rate_limits(rate_limit, p10),
    )
    return None if result == RoutePolicies() else result


def parse_backend_policies(raw: object, path: str, base_dir: Path) -> BackendPolicies | None:
    """A backend's `policies` (LocalBackendPolicies); None when nothing is set."""
    o = Obj(raw, path, "LocalBackendPolicies")
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
        ai=None if ai is None else _ai_policy(ai, p7),
    )
    return None if result == BackendPolicies() else result
