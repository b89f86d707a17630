"""Request/response rewriting: header plans, upstream heads, URL rewrites, local answers."""

from __future__ import annotations

import pytest

from agw_fast.config.model import (
    AuthorityRewrite,
    BackendAuth,
    HeaderModifier,
    PathRewrite,
    RequestRedirect,
)
from agw_fast.core.rewrite import (
    HOP_BY_HOP,
    RESPONSE_HOP_BY_HOP,
    RequestHeaderPlan,
    ResponseHeaderPlan,
    apply_authority_rewrite,
    apply_path_rewrite,
    build_upstream_head,
    local_response,
    redirect_response,
    split_target,
)
from agw_fast.errors import ProxyError

Headers = list[tuple[bytes, bytes]]

_PLAIN = RequestHeaderPlan.build([], None)


def _head(
    headers: Headers,
    plan: RequestHeaderPlan = _PLAIN,
    *,
    method: bytes = b"GET",
    target: bytes = b"/x",
    authority: bytes = b"up.example",
    framing: bytes = b"",
) -> bytes:
    return build_upstream_head(method, target, authority, headers, plan, framing)


def _header_lines(head: bytes) -> list[bytes]:
    """The header lines of a head (request line and final blank line removed)."""
    assert head.endswith(b"\r\n\r\n")
    return head[:-4].split(b"\r\n")[1:]


# -- RequestHeaderPlan -------------------------------------------------------------------------


def test_plan_without_modifiers_drops_hop_by_hop_only() -> None:
    plan = RequestHeaderPlan.build([None, None], None)
    assert plan.drop == HOP_BY_HOP
    assert plan.extra == b""
    assert RequestHeaderPlan.build([], None) == plan


@pytest.mark.parametrize("name", sorted(HOP_BY_HOP))
def test_hop_by_hop_always_dropped(name: bytes) -> None:
    plan = RequestHeaderPlan.build([HeaderModifier(add=(("x-extra", "1"),))], None)
    assert name in plan.drop
    head = _head([(b"accept", b"*/*"), (name, b"v"), (b"x-z", b"z")], plan)
    assert head == (
        b"GET /x HTTP/1.1\r\nhost: up.example\r\naccept: */*\r\nx-z: z\r\nx-extra: 1\r\n\r\n"
    )


def test_hop_by_hop_set_is_rfc9110_plus_framing_host_expect() -> None:
    assert HOP_BY_HOP == {
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


def test_set_replaces_client_header() -> None:
    plan = RequestHeaderPlan.build([HeaderModifier(set=(("X-Env", "Prod"),))], None)
    assert b"x-env" in plan.drop
    assert plan.extra == b"x-env: Prod\r\n"
    head = _head([(b"x-env", b"dev"), (b"accept", b"a")], plan)
    assert _header_lines(head) == [b"host: up.example", b"accept: a", b"x-env: Prod"]


def test_add_appends_to_client_header() -> None:
    plan = RequestHeaderPlan.build([HeaderModifier(add=(("X-Tag", "b"),))], None)
    assert b"x-tag" not in plan.drop
    assert plan.extra == b"x-tag: b\r\n"
    head = _head([(b"x-tag", b"a")], plan)
    assert _header_lines(head) == [b"host: up.example", b"x-tag: a", b"x-tag: b"]


def test_remove_removes_every_client_value() -> None:
    plan = RequestHeaderPlan.build([HeaderModifier(remove=("X-Secret",))], None)
    assert b"x-secret" in plan.drop
    assert plan.extra == b""
    head = _head([(b"x-secret", b"1"), (b"accept", b"a"), (b"x-secret", b"2")], plan)
    assert _header_lines(head) == [b"host: up.example", b"accept: a"]


def test_set_lines_come_before_add_lines() -> None:
    modifier = HeaderModifier(add=(("x-a", "added"),), set=(("x-s", "set"), ("x-a", "set-a")))
    plan = RequestHeaderPlan.build([modifier], None)
    assert plan.extra == b"x-s: set\r\nx-a: set-a\r\nx-a: added\r\n"


def test_auth_replaces_client_authorization() -> None:
    plan = RequestHeaderPlan.build([], BackendAuth("sk-secret"))
    assert b"authorization" in plan.drop
    assert plan.extra == b"authorization: Bearer sk-secret\r\n"
    head = _head([(b"authorization", b"Bearer client"), (b"accept", b"a")], plan)
    assert _header_lines(head) == [
        b"host: up.example",
        b"accept: a",
        b"authorization: Bearer sk-secret",
    ]


def test_auth_with_custom_location() -> None:
    plan = RequestHeaderPlan.build([], BackendAuth("k1", header_name="X-Api-Key", prefix=""))
    assert b"x-api-key" in plan.drop
    assert b"authorization" not in plan.drop
    assert plan.extra == b"x-api-key: k1\r\n"


def test_auth_wins_over_a_modifier_setting_the_same_header() -> None:
    modifier = HeaderModifier(set=(("Authorization", "Bearer from-modifier"),))
    plan = RequestHeaderPlan.build([modifier], BackendAuth("from-auth"))
    assert plan.extra == b"authorization: Bearer from-auth\r\n"


@pytest.mark.parametrize(
    ("modifiers", "extra", "dropped"),
    [
        # Route then backend: the later set wins.
        (
            [HeaderModifier(set=(("x-env", "route"),)), HeaderModifier(set=(("x-env", "be"),))],
            b"x-env: be\r\n",
            True,
        ),
        # A later remove cancels an earlier set.
        (
            [HeaderModifier(set=(("x-env", "route"),)), HeaderModifier(remove=("X-Env",))],
            b"",
            True,
        ),
        # A later set after an earlier remove sets the header.
        (
            [HeaderModifier(remove=("x-env",)), HeaderModifier(set=(("x-env", "be"),))],
            b"x-env: be\r\n",
            True,
        ),
        # Adds accumulate in order.
        (
            [HeaderModifier(add=(("x-env", "1"),)), None, HeaderModifier(add=(("x-env", "2"),))],
            b"x-env: 1\r\nx-env: 2\r\n",
            False,
        ),
    ],
)
def test_later_modifier_wins(
    modifiers: list[HeaderModifier | None], extra: bytes, dropped: bool
) -> None:
    plan = RequestHeaderPlan.build(modifiers, None)
    assert plan.extra == extra
    assert (b"x-env" in plan.drop) is dropped


# -- build_upstream_head -----------------------------------------------------------------------


def test_upstream_head_exact_bytes() -> None:
    plan = RequestHeaderPlan.build(
        [HeaderModifier(set=(("x-set", "s"),), add=(("x-add", "a"),), remove=("x-rm",))],
        BackendAuth("key"),
    )
    headers = [
        (b"host", b"client.example"),
        (b"user-agent", b"test/1"),
        (b"content-length", b"5"),
        (b"x-rm", b"gone"),
        (b"accept", b"*/*"),
        (b"authorization", b"Bearer client"),
        (b"x-b", b"2"),
        (b"x-a", b"1"),
        (b"connection", b"keep-alive"),
        (b"x-set", b"old"),
    ]
    head = _head(
        headers,
        plan,
        method=b"POST",
        target=b"/v1/x?a=1",
        authority=b"up.example:8443",
        framing=b"content-length: 5\r\n",
    )
    assert head == (
        b"POST /v1/x?a=1 HTTP/1.1\r\n"
        b"host: up.example:8443\r\n"
        b"user-agent: test/1\r\n"
        b"accept: */*\r\n"
        b"x-b: 2\r\n"
        b"x-a: 1\r\n"
        b"x-set: s\r\n"
        b"authorization: Bearer key\r\n"
        b"x-add: a\r\n"
        b"content-length: 5\r\n"
        b"\r\n"
    )


@pytest.mark.parametrize(
    ("framing", "tail"),
    [
        (b"", b"accept: a\r\n\r\n"),
        (b"content-length: 12\r\n", b"accept: a\r\ncontent-length: 12\r\n\r\n"),
        (b"transfer-encoding: chunked\r\n", b"accept: a\r\ntransfer-encoding: chunked\r\n\r\n"),
    ],
)
def test_framing_line_is_last(framing: bytes, tail: bytes) -> None:
    headers = [(b"transfer-encoding", b"chunked"), (b"content-length", b"3"), (b"accept", b"a")]
    head = _head(headers, framing=framing)
    assert head == b"GET /x HTTP/1.1\r\nhost: up.example\r\n" + tail


@pytest.mark.parametrize(
    "headers",
    [
        [(b"connection", b"x-foo, close"), (b"x-foo", b"1"), (b"accept", b"a")],
        [(b"x-foo", b"1"), (b"accept", b"a"), (b"connection", b"x-foo, close")],
        [(b"x-foo", b"1"), (b"connection", b"Close, X-Foo"), (b"accept", b"a")],
        [(b"connection", b" x-foo ,, keep-alive "), (b"accept", b"a"), (b"x-foo", b"2")],
    ],
)
def test_fields_named_in_connection_are_dropped(headers: Headers) -> None:
    plan = RequestHeaderPlan.build([HeaderModifier(add=(("x-add", "1"),))], None)
    head = _head(headers, plan)
    assert head == b"GET /x HTTP/1.1\r\nhost: up.example\r\naccept: a\r\nx-add: 1\r\n\r\n"
    # The plan shared by every request is not widened.
    assert b"x-foo" not in plan.drop


def test_fields_named_in_every_connection_header_are_dropped() -> None:
    # Connection is a list field: repeated lines combine (RFC 9110 §5.3, §7.6.1).
    headers = [
        (b"connection", b"x-a"),
        (b"x-a", b"1"),
        (b"connection", b"x-b"),
        (b"x-b", b"2"),
        (b"accept", b"a"),
    ]
    assert _head(headers) == b"GET /x HTTP/1.1\r\nhost: up.example\r\naccept: a\r\n\r\n"


@pytest.mark.parametrize(
    "value",
    [b"close", b"keep-alive", b"upgrade, te", b"connection", b"host", b"", b",", b"x-absent"],
)
def test_connection_tokens_never_recurse_forever(value: bytes) -> None:
    head = _head([(b"connection", value), (b"accept", b"a")])
    assert head == b"GET /x HTTP/1.1\r\nhost: up.example\r\naccept: a\r\n\r\n"


def test_set_header_named_in_connection_is_still_sent() -> None:
    # The client's x-foo is hop-by-hop, but a configured value is the gateway's own.
    plan = RequestHeaderPlan.build([HeaderModifier(set=(("x-foo", "mine"),))], None)
    head = _head([(b"connection", b"x-foo"), (b"x-foo", b"theirs")], plan)
    assert head == b"GET /x HTTP/1.1\r\nhost: up.example\r\nx-foo: mine\r\n\r\n"


def test_values_are_relayed_verbatim() -> None:
    head = _head([(b"x-case", b"MiXeD Value;  q=1")])
    assert _header_lines(head) == [b"host: up.example", b"x-case: MiXeD Value;  q=1"]


# -- split_target and path rewrites ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (b"/a/b?x=1&y=2", (b"/a/b", b"?x=1&y=2")),
        (b"/a/b", (b"/a/b", b"")),
        (b"/?", (b"/", b"?")),
        (b"/a?b?c", (b"/a", b"?b?c")),
    ],
)
def test_split_target(target: bytes, expected: tuple[bytes, bytes]) -> None:
    assert split_target(target) == expected


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        (b"/old/x", b"?a=1&b=2", b"/new?a=1&b=2"),
        (b"/old/x", b"", b"/new"),
        (b"/", b"?q", b"/new?q"),
    ],
)
def test_full_path_rewrite_keeps_query(path: bytes, query: bytes, expected: bytes) -> None:
    rewrite = PathRewrite("full", "/new")
    assert apply_path_rewrite(rewrite, path, query, None) == expected
    assert apply_path_rewrite(rewrite, path, query, "/old") == expected


# Gateway API's ReplacePrefixMatch table (HTTPPathModifier), which agentgateway follows.
@pytest.mark.parametrize(
    ("matched", "replacement", "path", "expected"),
    [
        ("/foo", "/xyz", b"/foo/bar", b"/xyz/bar"),
        ("/foo", "/xyz/", b"/foo/bar", b"/xyz/bar"),
        ("/foo/", "/xyz", b"/foo/bar", b"/xyz/bar"),
        ("/foo/", "/xyz/", b"/foo/bar", b"/xyz/bar"),
        ("/foo", "/xyz", b"/foo", b"/xyz"),
        ("/foo", "/xyz", b"/foo/", b"/xyz/"),
        ("/foo", "", b"/foo/bar", b"/bar"),
        ("/foo", "", b"/foo/", b"/"),
        ("/foo", "", b"/foo", b"/"),
        ("/foo", "/", b"/foo/", b"/"),
        ("/foo", "/", b"/foo", b"/"),
        ("/api", "/", b"/api/x", b"/x"),
        ("/api", "/", b"/api", b"/"),
        ("/api", "/", b"/api/x/y/", b"/x/y/"),
        ("/api", "/v1", b"/api/chat/completions", b"/v1/chat/completions"),
        ("/", "/v1", b"/chat", b"/v1/chat"),
        ("/", "/v1/", b"/chat", b"/v1/chat"),
    ],
)
def test_prefix_path_rewrite(matched: str, replacement: str, path: bytes, expected: bytes) -> None:
    rewrite = PathRewrite("prefix", replacement)
    assert apply_path_rewrite(rewrite, path, b"", matched) == expected
    assert apply_path_rewrite(rewrite, path, b"?k=v", matched) == expected + b"?k=v"


def test_prefix_rewrite_without_prefix_match_is_500() -> None:
    with pytest.raises(ProxyError) as caught:
        apply_path_rewrite(PathRewrite("prefix", "/v1"), b"/x", b"", None)
    assert caught.value.status == 500
    assert caught.value.body.startswith("failed to apply filters: ")


# -- authority rewrites ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rewrite", "authority", "expected"),
    [
        (AuthorityRewrite("full", "new.example:9000"), b"old.example:80", b"new.example:9000"),
        (AuthorityRewrite("full", "new.example"), b"old.example:80", b"new.example"),
        (AuthorityRewrite("full", "[::2]:1"), b"[::1]:80", b"[::2]:1"),
        # agentgateway: `host` drops the port for http/https; `port` omits the default.
        (AuthorityRewrite("host", "new.example"), b"old.example:8080", b"new.example"),
        (AuthorityRewrite("host", "new.example"), b"old.example", b"new.example"),
        (AuthorityRewrite("host", "new.example"), b"[::1]:8080", b"new.example"),
        (AuthorityRewrite("host", "new.example"), b"[::1]", b"new.example"),
        (AuthorityRewrite("host", "[::2]"), b"old.example:8080", b"[::2]"),
        (AuthorityRewrite("port", "80"), b"old.example:8080", b"old.example"),
        (AuthorityRewrite("port", "9090"), b"old.example:80", b"old.example:9090"),
        (AuthorityRewrite("port", "9090"), b"old.example", b"old.example:9090"),
        (AuthorityRewrite("port", "9090"), b"[::1]:80", b"[::1]:9090"),
        (AuthorityRewrite("port", "9090"), b"[::1]", b"[::1]:9090"),
        (AuthorityRewrite("port", "9090"), b"10.0.0.1:80", b"10.0.0.1:9090"),
        (AuthorityRewrite("auto"), b"old.example:80", b"old.example:80"),
        (AuthorityRewrite("none"), b"old.example:80", b"old.example:80"),
    ],
)
def test_authority_rewrite(rewrite: AuthorityRewrite, authority: bytes, expected: bytes) -> None:
    assert apply_authority_rewrite(rewrite, authority) == expected


# -- local and redirect responses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        (
            {"status": 404, "body": b"route not found"},
            b"HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\n"
            b"content-length: 15\r\n\r\nroute not found",
        ),
        (
            {"status": 500, "body": b"no valid backends", "close": True},
            b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: text/plain\r\n"
            b"content-length: 17\r\nconnection: close\r\n\r\nno valid backends",
        ),
        (
            {"status": 200},
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
        ),
        (
            {"status": 200, "body": b"{}", "content_type": None},
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}",
        ),
        (
            {"status": 200, "body": b"{}", "content_type": b"application/json"},
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}",
        ),
        (
            {"status": 429, "body": b"x", "extra_headers": b"x-ratelimit-limit: 1\r\n"},
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n"
            b"x-ratelimit-limit: 1\r\ncontent-length: 1\r\n\r\nx",
        ),
        (
            {"status": 599, "body": b"?"},
            b"HTTP/1.1 599 \r\ncontent-type: text/plain\r\ncontent-length: 1\r\n\r\n?",
        ),
    ],
)
def test_local_response_exact_bytes(kwargs: dict[str, object], expected: bytes) -> None:
    assert local_response(**kwargs) == expected  # type: ignore[arg-type]


def test_local_204_has_no_content_length() -> None:
    # RFC 9110 §8.6: a server MUST NOT send Content-Length in a 204 response (a
    # `directResponse` with status 204 is built by local_response).
    assert local_response(204) == b"HTTP/1.1 204 No Content\r\n\r\n"


@pytest.mark.parametrize(
    ("redirect", "authority", "path", "query", "prefix", "location", "status"),
    [
        (RequestRedirect(), b"a.example", b"/x", b"?q=1", None, b"http://a.example/x?q=1", 302),
        (
            RequestRedirect(scheme="https", status=301),
            b"a.example:8080",
            b"/x",
            b"",
            None,
            b"https://a.example:8080/x",
            301,
        ),
        (
            RequestRedirect(authority=AuthorityRewrite("full", "b.example")),
            b"a.example:8080",
            b"/x",
            b"",
            None,
            b"http://b.example/x",
            302,
        ),
        (
            RequestRedirect(authority=AuthorityRewrite("port", "8443"), scheme="https"),
            b"a.example:8080",
            b"/x",
            b"",
            None,
            b"https://a.example:8443/x",
            302,
        ),
        (
            RequestRedirect(authority=AuthorityRewrite("host", "b.example")),
            b"a.example:8080",
            b"/",
            b"",
            None,
            b"http://b.example:8080/",
            302,
        ),
        (
            RequestRedirect(authority=AuthorityRewrite("auto")),
            b"a.example",
            b"/",
            b"",
            None,
            b"http://a.example/",
            302,
        ),
        (
            RequestRedirect(path=PathRewrite("full", "/new"), status=308),
            b"a.example",
            b"/old/x",
            b"?q=1",
            None,
            b"http://a.example/new?q=1",
            308,
        ),
        (
            RequestRedirect(path=PathRewrite("prefix", "/v2"), status=307),
            b"a.example",
            b"/v1/chat",
            b"?q=1",
            "/v1",
            b"http://a.example/v2/chat?q=1",
            307,
        ),
    ],
)
def test_redirect_response(
    redirect: RequestRedirect,
    authority: bytes,
    path: bytes,
    query: bytes,
    prefix: str | None,
    location: bytes,
    status: int,
) -> None:
    response = redirect_response(redirect, authority, path, query, prefix)
    reasons = {301: b"Moved Permanently", 302: b"Found", 307: b"Temporary Redirect"}
    reasons[308] = b"Permanent Redirect"
    assert response == (
        b"HTTP/1.1 %d %s\r\nlocation: %s\r\ncontent-length: 0\r\n\r\n"
        % (status, reasons[status], location)
    )


def test_redirect_with_prefix_path_needs_prefix_match() -> None:
    redirect = RequestRedirect(path=PathRewrite("prefix", "/v2"))
    with pytest.raises(ProxyError) as caught:
        redirect_response(redirect, b"a.example", b"/v1/x", b"", None)
    assert caught.value.status == 500


# -- ResponseHeaderPlan ------------------------------------------------------------------------


def test_response_plan_is_none_without_modifiers() -> None:
    assert ResponseHeaderPlan.build([]) is None
    assert ResponseHeaderPlan.build([None, None]) is None


def test_response_plan_with_empty_modifier() -> None:
    plan = ResponseHeaderPlan.build([None, HeaderModifier()])
    assert plan is not None
    assert plan.drop == RESPONSE_HOP_BY_HOP
    assert plan.extra == b""


def test_response_plan_set_add_remove() -> None:
    plan = ResponseHeaderPlan.build(
        [
            HeaderModifier(set=(("X-Served-By", "route"),), remove=("Server",)),
            HeaderModifier(set=(("x-served-by", "backend"),), add=(("x-extra", "1"),)),
        ]
    )
    assert plan is not None
    assert plan.drop == RESPONSE_HOP_BY_HOP | {b"x-served-by", b"server"}
    assert plan.extra == b"x-served-by: backend\r\nx-extra: 1\r\n"
    # Framing headers are relayed with the body they frame, never dropped by the plan.
    assert b"content-length" not in plan.drop
    assert b"transfer-encoding" not in plan.drop
