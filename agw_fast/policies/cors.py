"""`cors` on a route: answer preflights locally, add CORS fields to allowed origins' responses.

agentgateway's semantics (crates/agentgateway/src/http/cors.rs, Envoy's with
forwardNotMatchingPreflights=false):
- no `Origin`: nothing happens;
- origin not allowed: a preflight (OPTIONS with a non-empty Access-Control-Request-Method)
  is answered 200 with an empty body and no CORS fields; anything else goes on untouched;
- origin allowed and method OPTIONS (with or without Access-Control-Request-Method): a local
  200 with Allow-Origin (the client's Origin echoed, even for `*`), Allow-Methods,
  Allow-Headers, Max-Age, Allow-Credentials and Expose-Headers;
- origin allowed, other methods: whatever response the request gets carries Allow-Origin,
  Allow-Credentials and Expose-Headers, replacing the upstream's fields of those names.
agentgateway sends no `Vary: Origin`, so neither does this.

Every field except the echoed Origin (and the echoed request method/headers of a `*`
preflight) is built at load; per request the work is finding `Origin` and matching it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import NamedTuple

from agw_fast.config.model import CorsPolicy, GatewayPolicies, RoutePolicies
from agw_fast.core.http1 import status_line
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["OriginMatcher", "ParsedOrigin", "build", "parse_origin"]

_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"
_ALLOW_ORIGIN = b"access-control-allow-origin"
_ALLOW_CREDENTIALS = b"access-control-allow-credentials"
_EXPOSE_HEADERS = b"access-control-expose-headers"
Headers = Sequence[tuple[bytes, bytes]]
_DEFAULT_PORTS = {"http": 80, "https": 443}
# `HeaderValue::to_str` succeeds only for visible ASCII and HTAB.
_NOT_VISIBLE_ASCII = re.compile(rb"[^\t\x20-\x7e]")
_OWS = b" \t"
_SEEN_LIMIT = 1024


class ParsedOrigin(NamedTuple):
    scheme: str  # "http" or "https"
    host: str  # lowercase; may hold `*` only in an allowed-origin pattern
    port: int


def parse_origin(value: str, allow_wildcard_host: bool = False) -> ParsedOrigin | None:
    """`scheme://host[:port]` as agentgateway reads it, or None.

    Only http and https (case-insensitive); no path, query or fragment; the port, when
    given, is 1-65535 in digits (default 80/443); a host with `:` (so a bracketed IPv6
    literal) is refused, as agentgateway refuses it.
    """
    scheme, sep, host_port = value.partition("://")
    if not sep:
        return None
    scheme = _ascii_lower(scheme)
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None or not host_port or any(c in host_port for c in "/?#"):
        return None
    host, colon, port_text = host_port.rpartition(":")
    if colon:
        if not host or ":" in host or not port_text.isascii() or not port_text.isdigit():
            return None
        port = int(port_text)
        if not 0 < port <= 0xFFFF:
            return None
    else:
        host, port = host_port, default_port
    if not host or (not allow_wildcard_host and "*" in host):
        return None
    return ParsedOrigin(scheme, _ascii_lower(host), port)


def _ascii_lower(text: str) -> str:
    # Rust's to_ascii_lowercase leaves non-ASCII letters alone; str.lower() would not.
    return text.lower() if text.isascii() else text.translate(_ASCII_LOWER)


_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}


class OriginMatcher:
    """The `allowOrigins` list compiled: exact origins in a set, host patterns as regexes.

    A pattern's `*` matches any run of characters, dots included (`http://*.com` allows
    `http://foo.bar.com`); scheme and port must be equal. An entry that is no valid origin
    never matches, as in agentgateway.
    """

    __slots__ = ("exact", "patterns", "_seen")

    def __init__(self, allowed: tuple[str, ...]) -> None:
        exact: set[ParsedOrigin] = set()
        patterns: list[tuple[str, int, re.Pattern[str]]] = []
        for entry in allowed:
            parsed = parse_origin(entry, allow_wildcard_host=True)
            if parsed is None:
                continue
            if "*" in parsed.host:
                glob = ".*".join(re.escape(part) for part in parsed.host.split("*"))
                patterns.append((parsed.scheme, parsed.port, re.compile(glob, re.DOTALL)))
            else:
                exact.add(parsed)
        self.exact = frozenset(exact)
        self.patterns = tuple(patterns)
        # Verdicts by Origin value: a site's traffic comes from a handful of origins, so
        # most requests cost one dict lookup. Bounded (cleared when full) against clients
        # sending endless distinct values.
        self._seen: dict[bytes, bool] = {}

    def allows(self, origin: bytes) -> bool:
        verdict = self._seen.get(origin)
        if verdict is None:
            verdict = self._match(origin)
            if len(self._seen) >= _SEEN_LIMIT:
                self._seen.clear()
            self._seen[origin] = verdict
        return verdict

    def _match(self, origin: bytes) -> bool:
        if _NOT_VISIBLE_ASCII.search(origin):
            return False
        parsed = parse_origin(origin.decode("ascii"))
        if parsed is None:
            return False
        if parsed in self.exact:
            return True
        return any(
            scheme == parsed.scheme and port == parsed.port and regex.fullmatch(parsed.host)
            for scheme, port, regex in self.patterns
        )


def _first(headers: Headers, name: bytes) -> bytes | None:
    # agentgateway reads the first field of a name (`HeaderMap::get`).
    for field, value in headers:
        if field == name:
            return value
    return None


def _list_value(items: tuple[str, ...]) -> bytes | None:
    """WildcardOrList::to_header_value: `*`, or the entries joined by a bare comma."""
    return ",".join(items).encode("latin-1") if items else None


def _echo_token(value: bytes | None) -> bytes | None:
    """normalize_token_header_value: the trimmed value, None if empty or not visible ASCII."""
    if value is None or _NOT_VISIBLE_ASCII.search(value):
        return None
    return value.strip(_OWS) or None


def _echo_list(value: bytes | None) -> bytes | None:
    """normalize_csv_header_value: the non-empty trimmed items joined with `, `."""
    if value is None or _NOT_VISIBLE_ASCII.search(value):
        return None
    items = [item.strip(_OWS) for item in value.split(b",")]
    return b", ".join(item for item in items if item) or None


class _Cors:
    __slots__ = (
        "any_origin", "origins", "methods_line", "echo_methods", "headers_line",
        "echo_headers", "preflight_tail", "actual_lines", "replaces", "star",
        "refused_preflight",
    )  # fmt: skip

    def __init__(self, policy: CorsPolicy) -> None:
        self.any_origin = policy.allow_origins == ("*",)
        self.origins = None if self.any_origin else OriginMatcher(policy.allow_origins)
        # A `*` list echoes the preflight's request; without one it answers `*`, except
        # with credentials, where browsers refuse `*` (then the field is left out).
        self.echo_methods = policy.allow_methods == ("*",)
        self.echo_headers = policy.allow_headers == ("*",)
        self.star = None if policy.allow_credentials else b"*"
        methods = _list_value(policy.allow_methods)
        headers = _list_value(policy.allow_headers)
        self.methods_line = b"" if methods is None or self.echo_methods else methods
        self.headers_line = b"" if headers is None or self.echo_headers else headers
        credentials = b"%s: true\r\n" % _ALLOW_CREDENTIALS if policy.allow_credentials else b""
        expose = _list_value(policy.expose_headers)
        expose_line = b"" if expose is None else b"%s: %s\r\n" % (_EXPOSE_HEADERS, expose)
        max_age = policy.max_age
        age_line = b"" if max_age is None else b"access-control-max-age: %d\r\n" % max_age
        # The preflight answer's fields after Allow-Methods/Allow-Headers, in agentgateway's
        # order, then the framing of an empty body.
        self.preflight_tail = age_line + credentials + expose_line + b"content-length: 0\r\n\r\n"
        self.actual_lines = tuple(line for line in (credentials, expose_line) if line)
        replaces = {_ALLOW_ORIGIN}
        if credentials:
            replaces.add(_ALLOW_CREDENTIALS)
        if expose_line:
            replaces.add(_EXPOSE_HEADERS)
        self.replaces = frozenset(replaces)
        self.refused_preflight = PolicyAnswer(local_response(200), Reason.DIRECT_RESPONSE)

    def __call__(self, request: PolicyRequest) -> PolicyAnswer | None:
        headers = request.headers
        origin = _first(headers, _ORIGIN)
        if origin is None:
            return None
        origins = self.origins
        if origins is not None and not origins.allows(origin):
            if request.method == b"OPTIONS" and _first(headers, _REQUEST_METHOD):
                return self.refused_preflight
            return None
        if request.method == b"OPTIONS":
            return PolicyAnswer(self._preflight(origin, headers), Reason.DIRECT_RESPONSE)
        request.replace_response_fields(self.replaces)
        request.add_response_lines(b"".join((_ALLOW_ORIGIN_FIELD, origin, b"\r\n")))
        for line in self.actual_lines:
            request.add_response_lines(line)
        return None

    def _preflight(self, origin: bytes, headers: Headers) -> bytes:
        methods = self.methods_line
        if self.echo_methods:
            methods = _echo_token(_first(headers, _REQUEST_METHOD)) or self.star or b""
        allowed_headers = self.headers_line
        if self.echo_headers:
            allowed_headers = _echo_list(_first(headers, _REQUEST_HEADERS)) or self.star or b""
        parts = [_PREFLIGHT_HEAD, origin, b"\r\n"]
        if methods:
            parts += (b"access-control-allow-methods: ", methods, b"\r\n")
        if allowed_headers:
            parts += (b"access-control-allow-headers: ", allowed_headers, b"\r\n")
        parts.append(self.preflight_tail)
        return b"".join(parts)


_ALLOW_ORIGIN_FIELD = _ALLOW_ORIGIN + b": "
_PREFLIGHT_HEAD = status_line(200) + _ALLOW_ORIGIN_FIELD


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    """The step of a route's or a listener's `cors` (agentgateway runs both, the
    listener's before route selection)."""
    policy = policies.cors
    if policy is None:
        return None
    return _Cors(policy)
