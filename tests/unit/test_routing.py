"""Route selection: agentgateway's precedence, tier by tier."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import pytest

from agw_fast.config.model import PathMatch, Route, RouteMatch, ValueMatch
from agw_fast.core.routing import (
    ListenerMap,
    MatchedRoute,
    RequestView,
    RouteTable,
    host_without_port,
    select_listener,
)

Headers = Sequence[tuple[bytes, bytes]]


def _table(*routes: Route) -> RouteTable[str]:
    """A table whose runtime object for each route is its name."""
    return RouteTable([(route.name, route, route.name) for route in routes])


def _view(
    path: str = "/", method: str = "GET", query: str = "", headers: Headers = ()
) -> RequestView:
    return RequestView(method, path, query, list(headers))


def _pick(
    table: RouteTable[str],
    path: str = "/",
    *,
    host: str = "gw.example",
    method: str = "GET",
    query: str = "",
    headers: Headers = (),
) -> str | None:
    found = table.select(host, _view(path, method, query, headers))
    return found.route if found is not None else None


def _route(
    name: str,
    path: PathMatch | None = None,
    *,
    method: str | None = None,
    headers: tuple[ValueMatch, ...] = (),
    query: tuple[ValueMatch, ...] = (),
    hostnames: tuple[str, ...] = (),
) -> Route:
    match = RouteMatch(
        path=path if path is not None else PathMatch("prefix", "/"),
        method=method,
        headers=headers,
        query=query,
    )
    return Route(name=name, hostnames=hostnames, matches=(match,))


def _prefix(value: str) -> PathMatch:
    return PathMatch("prefix", value)


def _exact(value: str) -> PathMatch:
    return PathMatch("exact", value)


def _regex(value: str) -> PathMatch:
    return PathMatch("regex", value)


def _header(name: str, value: str, kind: Literal["exact", "regex"] = "exact") -> ValueMatch:
    return ValueMatch(name, kind, value)


# -- precedence inside a tier ------------------------------------------------------------------

# Names are chosen so that the lexicographic tie-break would pick the *wrong* route if the
# earlier criteria were ignored.
_KIND_ROUTES = {
    "z-exact": _route("z-exact", _exact("/v1/chat")),
    "m-prefix": _route("m-prefix", _prefix("/v1/chat")),
    # A longer pattern than the exact path: kind outranks length.
    "a-regex": _route("a-regex", _regex("/v1/ch[a]t(/.*)?")),
}


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (("z-exact", "m-prefix", "a-regex"), "z-exact"),
        (("z-exact", "a-regex"), "z-exact"),
        (("m-prefix", "a-regex"), "m-prefix"),
        (("a-regex",), "a-regex"),
    ],
)
def test_exact_beats_prefix_beats_regex(present: tuple[str, ...], expected: str) -> None:
    table = _table(*(_KIND_ROUTES[name] for name in present))
    assert _pick(table, "/v1/chat") == expected


def test_kind_order_holds_whatever_the_declaration_order() -> None:
    routes = list(_KIND_ROUTES.values())
    assert _pick(_table(*routes), "/v1/chat") == "z-exact"
    assert _pick(_table(*reversed(routes)), "/v1/chat") == "z-exact"


def test_longer_prefix_wins() -> None:
    table = _table(
        _route("a", _prefix("/")),
        _route("b", _prefix("/v1")),
        _route("c", _prefix("/v1/chat")),
        _route("d", _prefix("/v1/chat/completions/extra")),
    )
    assert _pick(table, "/v1/chat/completions") == "c"
    assert _pick(table, "/v1/models") == "b"
    assert _pick(table, "/v2") == "a"


def test_longer_regex_pattern_wins() -> None:
    table = _table(_route("a", _regex("/.*")), _route("b", _regex("/v1/.*")))
    assert _pick(table, "/v1/x") == "b"
    assert _pick(table, "/v2/x") == "a"


@pytest.mark.parametrize(("method", "expected"), [("GET", "b-get"), ("POST", "a-any")])
def test_route_with_method_beats_route_without(method: str, expected: str) -> None:
    table = _table(_route("a-any", _prefix("/v1")), _route("b-get", _prefix("/v1"), method="GET"))
    assert _pick(table, "/v1/x", method=method) == expected


def test_more_header_matches_win() -> None:
    one = (_header("x-a", "1"),)
    two = (_header("x-a", "1"), _header("x-b", "2"))
    table = _table(_route("a-one", headers=one), _route("b-two", headers=two))
    assert _pick(table, headers=[(b"x-a", b"1"), (b"x-b", b"2")]) == "b-two"
    assert _pick(table, headers=[(b"x-a", b"1")]) == "a-one"
    assert _pick(table, headers=[]) is None


def test_more_query_matches_win() -> None:
    one = (_header("a", "1"),)
    two = (_header("a", "1"), _header("b", "2"))
    table = _table(_route("a-one", query=one), _route("b-two", query=two))
    assert _pick(table, query="a=1&b=2") == "b-two"
    assert _pick(table, query="b=2&a=1") == "b-two"
    assert _pick(table, query="a=1") == "a-one"
    assert _pick(table, query="") is None


def test_route_key_tie_break_is_lexicographic() -> None:
    # "route10" < "route2" as strings: agentgateway compares route keys, not numbers.
    table = _table(_route("route2", _prefix("/v1")), _route("route10", _prefix("/v1")))
    assert _pick(table, "/v1/x") == "route10"
    table = _table(_route("route10", _prefix("/v1")), _route("route2", _prefix("/v1")))
    assert _pick(table, "/v1/x") == "route10"


@pytest.mark.parametrize(
    ("winner", "loser"),
    [
        # Path kind outranks path length (a trailing "/" makes this prefix the longer one).
        (_route("z", _exact("/v1/chat/x")), _route("a", _prefix("/v1/chat/x/"))),
        (_route("z", _prefix("/v1")), _route("a", _regex("/v1/chat/x|/never/matched/path"))),
        # Path length outranks method.
        (_route("z", _prefix("/v1/chat")), _route("a", _prefix("/v1"), method="GET")),
        # Method outranks header count.
        (
            _route("z", method="GET"),
            _route("a", headers=(_header("x-a", "1"), _header("x-b", "2"))),
        ),
        # Header count outranks query count.
        (
            _route("z", headers=(_header("x-a", "1"),)),
            _route("a", query=(_header("q", "1"), _header("r", "2"))),
        ),
    ],
)
def test_criteria_are_applied_in_order(winner: Route, loser: Route) -> None:
    path = "/v1/chat/x"
    headers = [(b"x-a", b"1"), (b"x-b", b"2")]
    for routes in ((winner, loser), (loser, winner)):
        found = _table(*routes).select("gw.example", _view(path, "GET", "q=1&r=2", headers))
        assert found == MatchedRoute("z", winner.matches[0])
        # The loser does match the request on its own.
        alone = _table(loser).select("gw.example", _view(path, "GET", "q=1&r=2", headers))
        assert alone == MatchedRoute("a", loser.matches[0])


def test_any_match_of_a_route_selects_it_and_reports_that_match() -> None:
    specific = RouteMatch(path=_exact("/health"))
    generic = RouteMatch(path=_prefix("/api"))
    multi = Route(name="z-multi", matches=(generic, specific))
    other = _route("a-other", _prefix("/"))
    table = _table(multi, other)
    assert table.select("h", _view("/health")) == MatchedRoute("z-multi", specific)
    assert table.select("h", _view("/api/x")) == MatchedRoute("z-multi", generic)
    assert table.select("h", _view("/else")) == MatchedRoute("a-other", other.matches[0])


def test_matches_of_one_route_sort_among_other_routes_matches() -> None:
    # Pairs are sorted individually: route a's exact match beats b, b's prefix beats a's.
    a = Route(name="a", matches=(RouteMatch(_exact("/x")), RouteMatch(_prefix("/"))))
    b = Route(name="b", matches=(RouteMatch(_prefix("/x")),))
    table = _table(a, b)
    assert _pick(table, "/x") == "a"
    assert _pick(table, "/x/y") == "b"
    assert _pick(table, "/y") == "a"


# -- host tiers --------------------------------------------------------------------------------


def _tiered() -> RouteTable[str]:
    return _table(
        _route("exact", _prefix("/exact"), hostnames=("a.b.c",)),
        _route("wild-bc", _prefix("/bc"), hostnames=("*.b.c",)),
        _route("wild-c", _prefix("/c"), hostnames=("*.c",)),
        _route("any", _prefix("/any")),
        _route("z-exact-all", _prefix("/"), hostnames=("all.b.c",)),
    )


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("a.b.c", "/exact", "exact"),
        # Each tier without a matching route falls through to the next one.
        ("a.b.c", "/bc", "wild-bc"),
        ("a.b.c", "/c", "wild-c"),
        ("a.b.c", "/any", "any"),
        ("a.b.c", "/none", None),
        ("x.b.c", "/exact", None),
        ("x.b.c", "/bc", "wild-bc"),
        ("x.b.c", "/c", "wild-c"),
        ("deep.x.b.c", "/bc", "wild-bc"),
        ("x.y.c", "/bc", None),
        ("x.y.c", "/c", "wild-c"),
        # "*.b.c" does not cover "b.c" itself, but "*.c" does.
        ("b.c", "/bc", None),
        ("b.c", "/c", "wild-c"),
        ("c", "/c", None),
        ("other", "/any", "any"),
        ("other", "/c", None),
        # A matching exact tier wins even against a more specific path elsewhere.
        ("all.b.c", "/bc", "z-exact-all"),
        ("all.b.c", "/any", "z-exact-all"),
    ],
)
def test_host_tiers(host: str, path: str, expected: str | None) -> None:
    assert _pick(_tiered(), path, host=host) == expected


def test_most_specific_wildcard_first() -> None:
    table = _table(
        _route("a-wild-c", hostnames=("*.c",)),
        _route("b-wild-bc", hostnames=("*.b.c",)),
    )
    assert _pick(table, host="a.b.c") == "b-wild-bc"
    assert _pick(table, host="a.x.c") == "a-wild-c"


def test_host_tier_beats_better_path_in_a_later_tier() -> None:
    table = _table(
        _route("a-any-exact", _exact("/v1/chat")),
        _route("z-host", _prefix("/"), hostnames=("api.example.com",)),
    )
    assert _pick(table, "/v1/chat", host="api.example.com") == "z-host"
    assert _pick(table, "/v1/chat", host="other.example.com") == "a-any-exact"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "fallback"),
        ("api.example.com", "wild"),
        ("a.b.example.com", "wild"),
        ("notexample.com", "fallback"),
    ],
)
def test_wildcard_does_not_match_the_bare_domain(host: str, expected: str) -> None:
    table = _table(_route("wild", hostnames=("*.example.com",)), _route("fallback"))
    assert _pick(table, host=host) == expected
    assert _pick(_table(_route("wild", hostnames=("*.example.com",))), host="example.com") is None


def test_route_hostname_star_alone_is_an_exact_name() -> None:
    # agentgateway treats only "*." as a wildcard prefix: a route hostname "*" is a name,
    # which no real host equals, unlike a listener hostname "*".
    table = _table(_route("star", hostnames=("*",)), _route("fallback"))
    assert _pick(table, host="api.example.com") == "fallback"
    assert _pick(table, host="*") == "star"


def test_route_hostnames_compare_lowercase() -> None:
    table = _table(
        _route("exact", hostnames=("API.Example.COM",)),
        _route("wild", hostnames=("*.Other.COM",)),
    )
    assert _pick(table, host="api.example.com") == "exact"
    assert _pick(table, host="x.other.com") == "wild"


def test_route_with_several_hostnames_is_in_each_tier() -> None:
    table = _table(
        _route("multi", _prefix("/m"), hostnames=("a.example", "*.wild.example")),
        _route("any"),
    )
    assert _pick(table, "/m", host="a.example") == "multi"
    assert _pick(table, "/m", host="x.wild.example") == "multi"
    assert _pick(table, "/m", host="b.example") == "any"


# -- path matching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefix", "path", "matches"),
    [
        ("/v1", "/v1", True),
        ("/v1", "/v1/", True),
        ("/v1", "/v1/x", True),
        ("/v1", "/v1/x/y", True),
        ("/v1", "/v1x", False),
        ("/v1", "/v", False),
        ("/v1", "/", False),
        ("/v1", "/v2/v1", False),
        # A trailing "/" in the configured prefix is ignored.
        ("/v1/", "/v1", True),
        ("/v1/", "/v1/", True),
        ("/v1/", "/v1/x", True),
        ("/v1/", "/v1x", False),
        ("/a/b", "/a/b/c", True),
        ("/a/b", "/a/bc", False),
        ("/", "/", True),
        ("/", "/anything/at/all", True),
    ],
)
def test_prefix_matches_on_segment_boundaries(prefix: str, path: str, matches: bool) -> None:
    # A method makes the table non-constant, so the matcher itself is exercised.
    table = _table(_route("r", _prefix(prefix), method="GET"))
    assert (_pick(table, path) == "r") is matches


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("/v[0-9]+", "/v1", True),
        ("/v[0-9]+", "/v12", True),
        ("/v[0-9]+", "/v1/x", False),
        ("/v[0-9]+", "/xv1", False),
        ("/v1", "/v1/chat", False),
        ("/v1", "/a/v1", False),
        ("/v1|/v2", "/v2", True),
        (".*/completions", "/v1/chat/completions", True),
        # agentgateway takes the leftmost-first match and requires it to span the path: the
        # first alternative that matches at the start wins, even if a later one is longer.
        ("/v1|/v1/chat", "/v1/chat", False),
        ("/v1/chat|/v1", "/v1/chat", True),
        ("/v1|/v1/chat", "/v1", True),
        ("(?:/v1)??(?:/v1/chat)?", "/v1/chat", True),
        ("/v1.*?", "/v1/chat", False),
        ("/v1.*?$", "/v1/chat", True),
        # Rust syntax, Rust meaning.
        (r"/v\d+/\p{L}+", "/v2/chat", True),
        ("/a$", "/a\n", False),
    ],
)
def test_regex_is_a_full_match(pattern: str, path: str, matches: bool) -> None:
    table = _table(_route("r", _regex(pattern)))
    assert (_pick(table, path) == "r") is matches


@pytest.mark.parametrize(
    ("path", "matches"), [("/a", True), ("/a/", False), ("/a/b", False), ("/A", False)]
)
def test_exact_is_string_equality(path: str, matches: bool) -> None:
    table = _table(_route("r", _exact("/a")))
    assert (_pick(table, path, query="x=1") == "r") is matches


# -- header and query matching -----------------------------------------------------------------

_HOST = [(b"host", b"api.example:8080")]


@pytest.mark.parametrize(
    ("match", "method", "path", "query", "headers", "matches"),
    [
        (_header(":method", "POST"), "POST", "/", "", [], True),
        (_header(":method", "POST"), "GET", "/", "", [], False),
        (_header(":method", "P.*", "regex"), "PUT", "/", "", [], True),
        (_header(":authority", "api.example:8080"), "GET", "/", "", _HOST, True),
        (_header(":authority", "api.example"), "GET", "/", "", _HOST, False),
        (_header(":authority", "api.*", "regex"), "GET", "/", "", _HOST, True),
        (_header(":authority", "api.example"), "GET", "/", "", [], False),
        (_header(":path", "/x?a=1"), "GET", "/x", "a=1", [], True),
        (_header(":path", "/x"), "GET", "/x", "a=1", [], False),
        (_header(":path", "/x"), "GET", "/x", "", [], True),
        (_header(":path", "/x\\?.*", "regex"), "GET", "/x", "b=2", [], True),
        (_header(":scheme", "http"), "GET", "/", "", [], True),
        (_header(":unknown", ""), "GET", "/", "", [], False),
        # Names compare case-insensitively; values do not.
        (_header("X-Tenant", "acme"), "GET", "/", "", [(b"x-tenant", b"acme")], True),
        (_header("x-tenant", "acme"), "GET", "/", "", [(b"X-Tenant", b"acme")], True),
        (_header("x-tenant", "acme"), "GET", "/", "", [(b"x-tenant", b"ACME")], False),
        (_header("x-tenant", "acme"), "GET", "/", "", [], False),
        # Any of the repeated values may match.
        (_header("x-t", "b"), "GET", "/", "", [(b"x-t", b"a"), (b"x-t", b"b")], True),
        (_header("x-t", "c"), "GET", "/", "", [(b"x-t", b"a"), (b"x-t", b"b")], False),
        # Regex values are full matches.
        (_header("x-t", "a.*", "regex"), "GET", "/", "", [(b"x-t", b"abc")], True),
        (_header("x-t", "a.*", "regex"), "GET", "/", "", [(b"x-t", b"bab")], False),
        (_header("x-t", "b", "regex"), "GET", "/", "", [(b"x-t", b"abc")], False),
        (_header("x-t", "a|ab", "regex"), "GET", "/", "", [(b"x-t", b"ab")], False),
        # A regex never matches a value with bytes outside visible ASCII (agentgateway reads
        # header values as text only then); an exact value compares as UTF-8 bytes.
        (_header("x-t", ".*", "regex"), "GET", "/", "", [(b"x-t", "é".encode())], False),
        (_header("x-t", "é"), "GET", "/", "", [(b"x-t", "é".encode())], True),
        (_header("x-t", "é"), "GET", "/", "", [(b"x-t", b"\xe9")], False),
    ],
)
def test_header_match(
    match: ValueMatch,
    method: str,
    path: str,
    query: str,
    headers: list[tuple[bytes, bytes]],
    matches: bool,
) -> None:
    table = _table(_route("r", headers=(match,)))
    found = _pick(table, path, method=method, query=query, headers=headers)
    assert (found == "r") is matches


def test_all_header_conditions_must_hold() -> None:
    table = _table(_route("r", headers=(_header("x-a", "1"), _header(":method", "POST"))))
    assert _pick(table, method="POST", headers=[(b"x-a", b"1")]) == "r"
    assert _pick(table, method="GET", headers=[(b"x-a", b"1")]) is None
    assert _pick(table, method="POST", headers=[(b"x-a", b"2")]) is None


@pytest.mark.parametrize(
    ("match", "query", "matches"),
    [
        (_header("model", "gpt"), "model=gpt", True),
        (_header("model", "gpt"), "a=1&model=gpt&b=2", True),
        (_header("model", "gpt"), "model=gpt4", False),
        (_header("model", "gpt"), "", False),
        (_header("model", "gpt"), "other=gpt", False),
        # A repeated parameter matches by its last value only, as in agentgateway.
        (_header("model", "gpt"), "model=x&model=gpt", True),
        (_header("model", "gpt"), "model=gpt&model=x", False),
        (_header("model", "g.*", "regex"), "model=gpt&model=x", False),
        (_header("model", "x", "regex"), "model=gpt&model=x", True),
        (_header("model", ""), "model=gpt&model", True),
        (_header("model", "gpt.*", "regex"), "model=gpt-4o", True),
        (_header("model", "gpt", "regex"), "model=gpt-4o", False),
        (_header("model", "4o", "regex"), "model=gpt-4o", False),
        (_header("model", "gpt|gpt-4o", "regex"), "model=gpt-4o", False),
        (_header("model", "é", "regex"), "model=%C3%A9", True),
        # Present with an empty value.
        (_header("flag", ""), "flag=", True),
        (_header("flag", ""), "flag", True),
        (_header("flag", ""), "other=", False),
        (_header("flag", ".*", "regex"), "flag", True),
        (_header("flag", ".*", "regex"), "", False),
        (_header("q", "a b"), "q=a%20b", True),
        (_header("q", "a b"), "q=a+b", True),
    ],
)
def test_query_match(match: ValueMatch, query: str, matches: bool) -> None:
    table = _table(_route("r", query=(match,)))
    assert (_pick(table, query=query) == "r") is matches


def test_method_must_be_equal() -> None:
    table = _table(_route("r", method="POST"))
    assert _pick(table, method="POST") == "r"
    assert _pick(table, method="GET") is None
    assert _pick(table, method="post") is None


# -- select_listener and host_without_port -----------------------------------------------------

_LISTENERS = {
    "api.example.com": "exact",
    "*.example.com": "wild-example",
    "*.b.example.com": "wild-b",
    "*.com": "wild-com",
    "": "any",
}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "exact"),
        ("x.example.com", "wild-example"),
        ("a.b.example.com", "wild-b"),
        ("b.example.com", "wild-example"),
        ("example.com", "wild-com"),
        ("x.other.com", "wild-com"),
        ("com", "any"),
        ("localhost", "any"),
        ("", "any"),
        ("[::1]", "any"),
    ],
)
def test_select_listener(host: str, expected: str) -> None:
    assert select_listener(_LISTENERS, host) == expected


@pytest.mark.parametrize(
    ("listeners", "host", "expected"),
    [
        ({"a.example": "a"}, "a.example", "a"),
        ({"a.example": "a"}, "b.example", None),
        ({"*.example": "w"}, "example", None),
        ({"*.example": "w"}, "x.example", "w"),
        ({}, "a.example", None),
        ({"": "any"}, "whatever", "any"),
    ],
)
def test_select_listener_without_fallback(
    listeners: Mapping[str, str], host: str, expected: str | None
) -> None:
    assert select_listener(listeners, host) == expected


# agentgateway: exact hostname, then the longest hostname "*rest" whose rest ends the host
# (a plain suffix test, no label boundary), then the listener without a hostname.
_STAR_LISTENERS = {
    "*": "star",
    "*.example.com": "wild-example",
    "*example.org": "suffix-org",
    "api.example.com": "exact",
    "": "any",
}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("api.example.com", "exact"),
        ("x.example.com", "wild-example"),
        ("example.com", "star"),  # "*.example.com" needs the dot
        ("example.org", "suffix-org"),
        ("myexample.org", "suffix-org"),
        ("a.example.org", "suffix-org"),
        ("localhost", "star"),  # "*" beats the listener without a hostname
        ("[::1]", "star"),
    ],
)
def test_select_listener_star_hostnames(host: str, expected: str) -> None:
    assert select_listener(_STAR_LISTENERS, host) == expected
    assert select_listener(ListenerMap(_STAR_LISTENERS), host) == expected


def test_listener_map_sorts_wildcards_longest_first() -> None:
    listeners = ListenerMap({"*": 1, "*.a.example": 2, "*.example": 3, "x.example": 4})
    assert listeners.wildcards == [(".a.example", 2), (".example", 3), ("", 1)]
    assert dict(listeners) == {"*": 1, "*.a.example": 2, "*.example": 3, "x.example": 4}


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("example.com:8080", "example.com"),
        ("Example.COM:8080", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("127.0.0.1:80", "127.0.0.1"),
        ("[::1]:80", "[::1]"),
        ("[::1]", "[::1]"),
        ("[FE80::1]:443", "[fe80::1]"),
        ("[::1", "[::1"),
        ("", ""),
        (":80", ""),
    ],
)
def test_host_without_port(host: str, expected: str) -> None:
    assert host_without_port(host.encode("latin-1")) == expected


# -- constant and routes() ---------------------------------------------------------------------


def test_constant_for_a_single_catch_all() -> None:
    route = Route(name="only")
    table = _table(route)
    assert table.constant == MatchedRoute("only", RouteMatch())
    assert table.select("any.host", _view("/whatever")) == table.constant


@pytest.mark.parametrize(
    "routes",
    [
        (_route("r", _prefix("/v1")),),
        (_route("r", method="GET"),),
        (_route("r", headers=(_header("x", "1"),)),),
        (_route("r", query=(_header("x", "1"),)),),
        (_route("r", _exact("/")),),
        (_route("r", _regex("/.*")),),
        (_route("r", hostnames=("a.example",)),),
        (_route("r", hostnames=("*.example",)),),
        # A catch-all beside a host-bound route: the host tier must still be consulted.
        (_route("r"), _route("h", hostnames=("a.example",))),
        # A catch-all beside a more specific route that sorts before it.
        (_route("r"), _route("s", _prefix("/v1"))),
        (),
    ],
)
def test_no_constant_unless_every_request_gets_one_route(routes: tuple[Route, ...]) -> None:
    assert _table(*routes).constant is None


def test_empty_table_selects_nothing() -> None:
    table = _table()
    assert table.select("a.example", _view("/")) is None
    assert table.routes() == []


def test_routes_lists_each_runtime_once() -> None:
    multi = Route(
        name="multi",
        hostnames=("a.example", "*.b.example"),
        matches=(RouteMatch(_prefix("/x")), RouteMatch(_exact("/y"))),
    )
    table = _table(multi, _route("any"), _route("host", hostnames=("c.example",)))
    routes = table.routes()
    assert sorted(routes) == ["any", "host", "multi"]
    assert len(routes) == 3


def test_routes_keeps_distinct_but_equal_runtime_objects() -> None:
    first: list[str] = []
    second: list[str] = []
    table = RouteTable([("a", Route(name="a"), first), ("b", Route(name="b"), second)])
    routes = table.routes()
    assert len(routes) == 2
    assert routes[0] is first
    assert routes[1] is second
