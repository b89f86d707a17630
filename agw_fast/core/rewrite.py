"""Request and response rewriting: pure functions over bytes, planned at load time.

A `RequestHeaderPlan` is everything a route+backend does to request headers, folded into one
set of names to drop and one block of bytes to append, so the hot path is a single pass over
the client's headers and one `b"".join`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from agw_fast.config.model import (
    AuthorityRewrite,
    BackendAuth,
    HeaderModifier,
    PathRewrite,
    RequestRedirect,
)
from agw_fast.core.authority import split_authority
from agw_fast.core.http1 import connection_tokens, status_line
from agw_fast.errors import ProxyError

__all__ = [
    "HOP_BY_HOP",
    "RESPONSE_HOP_BY_HOP",
    "RequestHeaderPlan",
    "ResponseHeaderPlan",
    "apply_authority_rewrite",
    "apply_path_rewrite",
    "build_upstream_head",
    "local_response",
    "without_body",
    "redirect_response",
    "split_target",
]

# RFC 9110 §7.6.1 hop-by-hop fields, plus the fields we always re-create ourselves: framing
# (we re-frame every body, which also defeats CL/TE smuggling), Host (set from the rewrite)
# and Expect (we answer 100-continue downstream ourselves).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"host",
        b"content-length",
        b"expect",
    }
)

# Response fields we never relay as-is: the connection is ours to manage; framing headers
# (content-length / transfer-encoding) are relayed only with the body they frame.
RESPONSE_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"upgrade"}
)


def _header_line(name: str, value: str) -> bytes:
    return name.lower().encode("latin-1") + b": " + value.encode("latin-1") + b"\r\n"


def _fold(
    modifiers: Iterable[HeaderModifier | None], drop: set[bytes]
) -> tuple[dict[bytes, bytes], list[bytes], bool]:
    """Fold header modifiers in order into `drop` (names never forwarded as received), the
    lines that replace them (`set`) and the lines appended (`add`); and whether any applied."""
    set_lines: dict[bytes, bytes] = {}
    add_lines: list[bytes] = []
    touched = False
    for modifier in modifiers:
        if modifier is None:
            continue
        touched = True
        for name in modifier.remove:
            key = name.lower().encode("latin-1")
            drop.add(key)
            set_lines.pop(key, None)
        for name, value in modifier.set:
            key = name.lower().encode("latin-1")
            drop.add(key)
            set_lines[key] = _header_line(name, value)
        for name, value in modifier.add:
            add_lines.append(_header_line(name, value))
    return set_lines, add_lines, touched


@dataclass(frozen=True, slots=True)
class RequestHeaderPlan:
    drop: frozenset[bytes]
    extra: bytes  # complete "name: value\r\n" lines appended after the client's headers

    @classmethod
    def build(
        cls, modifiers: Iterable[HeaderModifier | None], auth: BackendAuth | None
    ) -> RequestHeaderPlan:
        drop = set(HOP_BY_HOP)
        set_lines, add_lines, _ = _fold(modifiers, drop)
        if auth is not None:
            key = auth.header_name.lower().encode("latin-1")
            drop.add(key)
            # The credential replaces any client value (agentgateway's backendAuth).
            set_lines[key] = _header_line(auth.header_name, auth.prefix + auth.key)
        return cls(frozenset(drop), b"".join([*set_lines.values(), *add_lines]))


@dataclass(frozen=True, slots=True)
class ResponseHeaderPlan:
    drop: frozenset[bytes]
    extra: bytes

    @classmethod
    def build(cls, modifiers: Iterable[HeaderModifier | None]) -> ResponseHeaderPlan | None:
        drop = set(RESPONSE_HOP_BY_HOP)
        set_lines, add_lines, touched = _fold(modifiers, drop)
        if not touched:
            return None
        return cls(frozenset(drop), b"".join([*set_lines.values(), *add_lines]))


def split_target(target: bytes) -> tuple[bytes, bytes]:
    """(path, query-with-leading-'?') of an origin-form request target."""
    question = target.find(b"?")
    if question == -1:
        return target, b""
    return target[:question], target[question:]


def apply_path_rewrite(
    rewrite: PathRewrite, path: bytes, query: bytes, matched_prefix: str | None
) -> bytes:
    """The new request target (path + query) for a `urlRewrite.path` / redirect path."""
    if rewrite.kind == "full":
        return rewrite.value.encode("latin-1") + query
    if matched_prefix is None:
        raise ProxyError(500, "failed to apply filters: prefix rewrite requires a prefix match")
    prefix = matched_prefix.rstrip("/").encode("latin-1")
    replacement = rewrite.value.encode("latin-1")
    rest = path[len(prefix) :]
    if not prefix and rest == b"/":
        rest = b""  # matched "/" on "/": the replacement alone, as agentgateway does
    if replacement.endswith(b"/") and rest.startswith(b"/"):
        rest = rest[1:]
    new_path = replacement + rest
    if not new_path:
        new_path = b"/"
    elif not new_path.startswith(b"/"):
        new_path = b"/" + new_path
    return new_path + query


_DEFAULT_PORTS = {b"http": b"80", b"https": b"443"}


def apply_authority_rewrite(
    rewrite: AuthorityRewrite,
    authority: bytes,
    scheme: bytes | None = b"http",
    new_scheme: bytes = b"http",
) -> bytes:
    """Rewrite a Host value as agentgateway does. `auto`/`none` return it unchanged.

    `scheme` is the scheme in force (the request's for urlRewrite, the configured one, if any,
    for a redirect): with http/https, `host` drops the port; without, the original port is
    kept unless it is `new_scheme`'s default. `port` leaves out `new_scheme`'s default port.
    """
    if rewrite.kind == "full":
        return rewrite.value.encode("latin-1")
    host, port = split_authority(authority)
    default = _DEFAULT_PORTS.get(new_scheme)
    if rewrite.kind == "host":
        new_host = rewrite.value.encode("latin-1")
        if scheme in _DEFAULT_PORTS or not port or port[1:] == default:
            return new_host
        return new_host + port
    if rewrite.kind == "port":
        new_port = rewrite.value.encode("latin-1")
        if new_port == default:
            return host
        return host + b":" + new_port
    return authority


def build_upstream_head(
    method: bytes,
    target: bytes,
    authority: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    plan: RequestHeaderPlan,
    framing: bytes,
) -> bytes:
    """The upstream request head. `framing` is a complete content-length or
    transfer-encoding line (or b"" for a bodiless request)."""
    drop = plan.drop
    connection_values: list[bytes] | None = None
    parts = [method, b" ", target, b" HTTP/1.1\r\nhost: ", authority, b"\r\n"]
    for name, value in headers:
        if name in drop:
            if name == b"connection":
                if connection_values is None:
                    connection_values = []
                connection_values.append(value)
            continue
        parts += (name, b": ", value, b"\r\n")
    if connection_values is not None:
        # Fields named in Connection are hop-by-hop too (RFC 9110 §7.6.1): rare, so the
        # common path stays one pass and this one simply starts again with a wider plan.
        listed = connection_tokens(b",".join(connection_values)) - drop
        if listed:
            wider = RequestHeaderPlan(drop | listed, plan.extra)
            return build_upstream_head(method, target, authority, headers, wider, framing)
    parts += (plan.extra, framing, b"\r\n")
    return b"".join(parts)


def without_body(response: bytes) -> bytes:
    """The head of a complete response: what a HEAD request gets (RFC 9110 §9.3.2); the
    Content-Length stays, as it would be for a GET."""
    return response[: response.index(b"\r\n\r\n") + 4]


def local_response(
    status: int,
    body: bytes = b"",
    *,
    content_type: bytes | None = b"text/plain",
    extra_headers: bytes = b"",
    close: bool = False,
) -> bytes:
    """A complete response generated by the gateway itself."""
    parts = [status_line(status)]
    if content_type is not None and body:
        parts += (b"content-type: ", content_type, b"\r\n")
    parts.append(extra_headers)
    if status in (204, 304) or status < 200:
        body = b""  # these end at the head (RFC 9110 §8.6, RFC 9112 §6.3)
    else:
        parts.append(b"content-length: %d\r\n" % len(body))
    if close:
        parts.append(b"connection: close\r\n")
    parts += (b"\r\n", body)
    return b"".join(parts)


def redirect_response(
    redirect: RequestRedirect,
    authority: bytes,
    path: bytes,
    query: bytes,
    matched_prefix: str | None,
) -> bytes:
    """The Location-bearing response of `requestRedirect`."""
    scheme = (redirect.scheme or "http").encode("latin-1")
    if redirect.authority is not None and redirect.authority.kind not in ("auto", "none"):
        configured = redirect.scheme.encode("latin-1") if redirect.scheme else None
        authority = apply_authority_rewrite(redirect.authority, authority, configured, scheme)
    if redirect.path is not None:
        target = apply_path_rewrite(redirect.path, path, query, matched_prefix)
    else:
        target = path + query
    location = scheme + b"://" + authority + target
    return local_response(
        redirect.status, extra_headers=b"location: " + location + b"\r\n", content_type=None
    )
