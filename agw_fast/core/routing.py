"""Route selection with agentgateway's precedence, precomputed at load time.

Order, as agentgateway selects: listener by hostname (exact, then the longest `*…` hostname
whose rest ends the host, then the one without a hostname); then host tiers
for routes (exact hostname, each parent wildcard, routes without hostnames) where the first
tier with a matching route wins; inside a tier (route, match) pairs are sorted by Exact >
Prefix > Regex, longer path, has method, more header matches, more query matches, route key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar
from urllib.parse import parse_qsl

from agw_fast.config.model import PathMatch, Route, RouteMatch, ValueMatch
from agw_fast.config.rust_regex import compile_rust_regex
from agw_fast.core.authority import split_authority

__all__ = [
    "ListenerMap",
    "MatchedRoute",
    "RequestView",
    "RouteTable",
    "host_without_port",
    "select_listener",
]

R = TypeVar("R")

_KIND_RANK = {"exact": 0, "prefix": 1, "regex": 2}


def host_without_port(host: bytes) -> str:
    """Lowercased host of a Host header value, without the port (IPv6 brackets kept)."""
    return split_authority(host)[0].decode("latin-1").lower()


class RequestView:
    """What matching may look at. Headers and query are decoded only if a match asks."""

    __slots__ = ("method", "path", "query", "_raw_headers", "_headers", "_query")

    def __init__(
        self, method: str, path: str, query: str, raw_headers: Sequence[tuple[bytes, bytes]]
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self._raw_headers = raw_headers
        self._headers: dict[str, list[str]] | None = None
        self._query: dict[str, str] | None = None

    def header_values(self, name: str) -> list[str]:
        if self._headers is None:
            headers: dict[str, list[str]] = {}
            for raw_name, raw_value in self._raw_headers:
                key = raw_name.decode("latin-1").lower()
                headers.setdefault(key, []).append(raw_value.decode("latin-1"))
            self._headers = headers
        return self._headers.get(name, [])

    def query_value(self, name: str) -> str | None:
        """The parameter's value, form-decoded; when it repeats, the last one counts (as in
        agentgateway, which collects the pairs into a map)."""
        if self._query is None:
            self._query = dict(parse_qsl(self.query, keep_blank_values=True))
        return self._query.get(name)


def _path_matcher(path: PathMatch) -> Callable[[str], bool]:
    if path.kind == "exact":
        exact = path.value
        return lambda p: p == exact
    if path.kind == "regex":
        return _regex_matcher(path.value)
    # Prefix matches on segment boundaries with the trailing "/" ignored on both sides, so
    # "/v1" matches "/v1", "/v1/" and "/v1/x" but not "/v1x".
    prefix = path.value.rstrip("/")
    if not prefix:
        return lambda p: True
    with_slash = prefix + "/"
    return lambda p: p == prefix or p.startswith(with_slash)


def _regex_matcher(pattern: str) -> Callable[[str], bool]:
    """agentgateway's test: the leftmost-first match must span the whole value.

    Not a full match: `/v1|/v1/chat` finds `/v1` in `/v1/chat` and stops there, so it does
    not match `/v1/chat`. A match starting at 0, when there is one, is the one Rust's `find`
    returns, so anchoring the search at 0 loses nothing.
    """
    at_start = compile_rust_regex(pattern).match

    def matches(value: str) -> bool:
        found = at_start(value)
        return found is not None and found.end() == len(value)

    return matches


def _header_matcher(match: ValueMatch) -> Callable[[str], bool]:
    """Header values arrive decoded as latin-1 (one char per byte)."""
    if match.kind == "exact":
        # Compared as bytes, as agentgateway compares HeaderValues: the config's text is
        # UTF-8 on the wire.
        exact = match.value.encode("utf-8").decode("latin-1")
        return lambda v: v == exact
    regex = _regex_matcher(match.value)
    # A regex sees the value only as text, which agentgateway's header API gives only for
    # visible ASCII: a value with other bytes never matches a regex.
    return lambda v: v.isascii() and regex(v)


def _query_matcher(match: ValueMatch) -> Callable[[str], bool]:
    if match.kind == "exact":
        exact = match.value
        return lambda v: v == exact
    return _regex_matcher(match.value)


def _pseudo_header(request: RequestView, name: str) -> list[str]:
    if name == ":method":
        return [request.method]
    if name == ":path":
        return [request.path + ("?" + request.query if request.query else "")]
    if name == ":authority":
        return request.header_values("host")
    if name == ":scheme":
        return ["http"]
    return []


class _CompiledMatch:
    __slots__ = ("path", "method", "headers", "query", "trivial")

    def __init__(self, match: RouteMatch) -> None:
        self.path = _path_matcher(match.path)
        self.method = match.method
        self.headers = [(h.name.lower(), _header_matcher(h)) for h in match.headers]
        self.query = [(q.name, _query_matcher(q)) for q in match.query]
        self.trivial = (
            match.path == PathMatch("prefix", "/")
            and match.method is None
            and not match.headers
            and not match.query
        )

    def __call__(self, request: RequestView) -> bool:
        if self.method is not None and request.method != self.method:
            return False
        if not self.path(request.path):
            return False
        for name, value_ok in self.headers:
            values = (
                _pseudo_header(request, name)
                if name.startswith(":")
                else request.header_values(name)
            )
            if not any(value_ok(v) for v in values):
                return False
        for name, value_ok in self.query:
            value = request.query_value(name)
            if value is None or not value_ok(value):
                return False
        return True


@dataclass(frozen=True, slots=True)
class MatchedRoute(Generic[R]):
    """The winning route's runtime object and the match that selected it."""

    route: R
    match: RouteMatch


def _sort_key(route_key: str, match: RouteMatch) -> tuple[int, int, int, int, int, str]:
    return (
        _KIND_RANK[match.path.kind],
        # agentgateway compares lengths in bytes (a regex by its pattern's length).
        -len(match.path.value.encode()),
        0 if match.method is not None else 1,
        -len(match.headers),
        -len(match.query),
        route_key,
    )


class _Tier(Generic[R]):
    __slots__ = ("entries", "always")

    def __init__(self, pairs: list[tuple[R, RouteMatch, _CompiledMatch]]) -> None:
        # Results are built once here, not per request.
        self.entries = [(compiled, MatchedRoute(route, match)) for route, match, compiled in pairs]
        # A first entry that matches every request makes the tier a constant: the common
        # single catch-all route costs one attribute read per request.
        first = self.entries[0] if self.entries else None
        self.always: MatchedRoute[R] | None = (
            first[1] if first is not None and first[0].trivial else None
        )

    def select(self, request: RequestView) -> MatchedRoute[R] | None:
        if self.always is not None:
            return self.always
        for compiled, matched in self.entries:
            if compiled(request):
                return matched
        return None


class RouteTable(Generic[R]):
    """The routes of one listener, arranged by host tier, each tier pre-sorted."""

    def __init__(self, routes: Sequence[tuple[str, Route, R]]) -> None:
        """`routes` holds (route key, declared route, runtime object) triples."""
        exact: dict[str, list[tuple[str, R, RouteMatch]]] = {}
        wildcard: dict[str, list[tuple[str, R, RouteMatch]]] = {}
        anyhost: list[tuple[str, R, RouteMatch]] = []
        for key, route, runtime in routes:
            pairs = [(key, runtime, match) for match in route.matches]
            if not route.hostnames:
                anyhost.extend(pairs)
            for hostname in route.hostnames:
                name = hostname.lower()
                if name.startswith("*."):
                    wildcard.setdefault(name[2:], []).extend(pairs)
                else:
                    exact.setdefault(name, []).extend(pairs)
        self._exact = {h: self._tier(p) for h, p in exact.items()}
        self._wildcard = {h: self._tier(p) for h, p in wildcard.items()}
        self._any = self._tier(anyhost)
        # No route names a host: `select` never reads it, so callers need not compute it.
        self.host_free = not exact and not wildcard
        # The route every request gets when the table is one catch-all: callers skip
        # building a RequestView at all.
        self.constant: MatchedRoute[R] | None = self._any.always if self.host_free else None

    def routes(self) -> list[R]:
        """Every runtime route in the table, once each (for introspection and tests)."""
        seen: dict[int, R] = {}
        for tier in [self._any, *self._exact.values(), *self._wildcard.values()]:
            for _, matched in tier.entries:
                seen.setdefault(id(matched.route), matched.route)
        return list(seen.values())

    @staticmethod
    def _tier(pairs: list[tuple[str, R, RouteMatch]]) -> _Tier[R]:
        pairs.sort(key=lambda p: _sort_key(p[0], p[2]))
        return _Tier([(runtime, match, _CompiledMatch(match)) for _, runtime, match in pairs])

    def select(self, host: str, request: RequestView) -> MatchedRoute[R] | None:
        """The best route for a request to `host` (already lowercased, without port)."""
        if self.host_free:
            return self._any.select(request)
        tier = self._exact.get(host)
        if tier is not None:
            found = tier.select(request)
            if found is not None:
                return found
        if self._wildcard:
            for suffix in _parent_suffixes(host):
                tier = self._wildcard.get(suffix)
                if tier is not None:
                    found = tier.select(request)
                    if found is not None:
                        return found
        return self._any.select(request)


def _parent_suffixes(host: str) -> Iterator[str]:
    """`a.b.c` -> `b.c`, `c`: the wildcard tiers a host falls in, most specific first."""
    dot = host.find(".")
    while dot != -1:
        host = host[dot + 1 :]
        yield host
        dot = host.find(".")


class ListenerMap(dict[str, R], Generic[R]):
    """A bind's listeners by lowercased hostname, with the wildcard ones pre-sorted."""

    __slots__ = ("wildcards",)

    def __init__(self, listeners: Mapping[str, R]) -> None:
        super().__init__(listeners)
        self.wildcards = _wildcards(listeners)


def _wildcards(listeners: Mapping[str, R]) -> list[tuple[str, R]]:
    """(required host suffix, listener) for hostnames starting with `*`, longest first."""
    found = [(name[1:], value) for name, value in listeners.items() if name.startswith("*")]
    found.sort(key=lambda item: len(item[0]), reverse=True)
    return found


def select_listener(listeners: Mapping[str, R], host: str) -> R | None:
    """agentgateway's choice: the listener whose hostname equals the host; else the longest
    hostname `*rest` with the host ending in `rest` (so `*` matches every host, and
    `*.example.com` only subdomains); else the one without a hostname."""
    found = listeners.get(host)
    if found is not None:
        return found
    wildcards = listeners.wildcards if isinstance(listeners, ListenerMap) else _wildcards(listeners)
    for suffix, listener in wildcards:
        if host.endswith(suffix):
            return listener
    return listeners.get("")
