"""Route selection as a client sees it (agentgateway's precedence): which route answers a request,
404 `route not found`, 500 `no valid backends`, and weighted backend choice.

Most routes answer with a `directResponse` whose body names the route, so the winner is visible
in the response without an upstream.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import QUIET, GatewayFactory, Process, gateway_client


def _route(name: str, match: str, hostnames: list[str] | None = None) -> str:
    hosts = f"\n      hostnames: [{', '.join(hostnames)}]" if hostnames else ""
    return f"""    - name: {name}{hosts}
      matches:
      - {match}
      policies:
        directResponse:
          status: 200
          body: "{name}"
"""


ROUTES = [
    # Path kinds and lengths.
    _route("exact-api", "path: {exact: /api/exact}"),
    _route("prefix-api", "path: {pathPrefix: /api}"),
    _route("prefix-api-long", "path: {pathPrefix: /api/long}"),
    _route("regex-api", "path: {regex: '/api/.*'}"),
    _route("regex-num", "path: {regex: '/num/[0-9]+'}"),
    # Rust regex syntax; the leftmost-first match must span the whole path.
    _route("regex-alt", "path: {regex: '/alt|/alt/chat'}"),
    _route("regex-unicode", "path: {regex: '/u/\\p{L}+(?<n>[[:digit:]])?'}"),
    # Segment boundaries, trailing slash ignored on both sides.
    _route("v1", "path: {pathPrefix: /v1}"),
    _route("v2-slash", "path: {pathPrefix: /v2/}"),
    # Method, headers and query: at equal path, more conditions win.
    _route("m-any", "path: {pathPrefix: /m}"),
    _route("m-post", "{path: {pathPrefix: /m}, method: POST}"),
    _route("h-any", "path: {pathPrefix: /h}"),
    _route("h-gold", "{path: {pathPrefix: /h}, headers: [{name: x-tier, value: {exact: gold}}]}"),
    _route("hr-num", "{path: {pathPrefix: /hr}, "
                     "headers: [{name: x-id, value: {regex: '[0-9]+'}}]}"),
    _route("q-any", "path: {pathPrefix: /q}"),
    _route("q-fast", "{path: {pathPrefix: /q}, query: [{name: mode, value: {exact: fast}}]}"),
    # Hostname tiers: exact, then wildcard, then routes without hostnames.
    _route("host-exact", "path: {pathPrefix: /who}", ["api.example.test"]),
    _route("host-wild", "path: {pathPrefix: /who}", ["'*.example.test'"]),
    _route("host-any", "path: {pathPrefix: /who}"),
    _route("host-any-fallthrough", "path: {pathPrefix: /fallthrough}"),
]


def routing_config() -> str:
    return QUIET + """binds:
- port: 0
  listeners:
  - routes:
""" + "".join(ROUTES) + """    - name: no-backends
      matches:
      - path: {pathPrefix: /nobackend}
"""


@pytest.fixture(scope="module")
def client(module_gateway: GatewayFactory) -> Iterator[httpx.Client]:
    gw = module_gateway(routing_config())
    with gateway_client(gw.port) as c:
        yield c


def winner(client: httpx.Client, method: str, path: str, **kwargs: Any) -> str:
    response = client.request(method, path, **kwargs)
    if response.status_code == 404:
        assert response.text == "route not found"
        return "404"
    assert response.status_code == 200, response.text
    return response.text


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/api/exact", "exact-api"),  # exact beats every prefix and regex
        ("/api/exact/more", "prefix-api"),  # exact means equal, not prefix
        ("/api/other", "prefix-api"),  # prefix beats regex
        ("/api", "prefix-api"),
        ("/api/long", "prefix-api-long"),  # longer prefix wins
        ("/api/long/x", "prefix-api-long"),
        ("/api/longer", "prefix-api"),  # /api/long does not match /api/longer
        ("/num/123", "regex-num"),
        ("/num/123x", "404"),  # a regex must match the whole path
        ("/x/num/123", "404"),
        ("/alt", "regex-alt"),
        ("/alt/chat", "404"),  # `/alt` matches first and does not span the path
        ("/u/abc7", "regex-unicode"),
        ("/u/abc!", "404"),
    ],
)
def test_path_precedence(client: httpx.Client, path: str, expected: str) -> None:
    assert winner(client, "GET", path) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/v1", "v1"),
        ("/v1/", "v1"),
        ("/v1/models", "v1"),
        ("/v1x", "404"),
        ("/v1x/models", "404"),
        ("/v2", "v2-slash"),  # a configured trailing slash is ignored
        ("/v2/chat", "v2-slash"),
        ("/v2x", "404"),
    ],
)
def test_prefix_matches_on_segment_boundaries(
    client: httpx.Client, path: str, expected: str
) -> None:
    assert winner(client, "GET", path) == expected


def test_listener_hostnames_as_agentgateway_reads_them(gateway: GatewayFactory) -> None:
    def listener(hostname: str, name: str) -> str:
        return f"""  - hostname: "{hostname}"
    routes:
    - policies: {{directResponse: {{status: 200, body: "{name}"}}}}
"""

    gw = gateway(QUIET + "binds:\n- port: 0\n  listeners:\n" + listener("*", "star")
                 + listener("*.example.test", "wild") + listener("api.example.test", "exact")
                 + listener("", "fallback"))
    with gateway_client(gw.port) as c:
        for host, expected in [
            ("api.example.test", "exact"),
            ("x.example.test", "wild"),
            ("example.test", "star"),  # "*" matches every host, before the fallback
            ("localhost:8080", "star"),
        ]:
            assert c.get("/", headers={"host": host}).text == expected, host


def test_method_match(client: httpx.Client) -> None:
    assert winner(client, "POST", "/m") == "m-post"
    assert winner(client, "GET", "/m") == "m-any"
    assert winner(client, "PUT", "/m/x") == "m-any"


def test_header_match(client: httpx.Client) -> None:
    assert winner(client, "GET", "/h", headers={"x-tier": "gold"}) == "h-gold"
    assert winner(client, "GET", "/h", headers={"x-tier": "silver"}) == "h-any"
    assert winner(client, "GET", "/h") == "h-any"
    # Header regexes match the whole value.
    assert winner(client, "GET", "/hr", headers={"x-id": "123"}) == "hr-num"
    assert winner(client, "GET", "/hr", headers={"x-id": "123a"}) == "404"
    assert winner(client, "GET", "/hr") == "404"


def test_query_match(client: httpx.Client) -> None:
    assert winner(client, "GET", "/q?mode=fast") == "q-fast"
    assert winner(client, "GET", "/q?x=1&mode=fast") == "q-fast"
    assert winner(client, "GET", "/q?mode=slow") == "q-any"
    assert winner(client, "GET", "/q?mode=fastest") == "q-any"
    assert winner(client, "GET", "/q") == "q-any"


@pytest.mark.parametrize(
    ("host", "path", "expected"),
    [
        ("api.example.test", "/who", "host-exact"),
        ("api.example.test:8443", "/who", "host-exact"),  # the port is not part of the match
        ("other.example.test", "/who", "host-wild"),
        ("deep.sub.example.test", "/who", "host-wild"),
        ("example.test", "/who", "host-any"),  # `*.example.test` needs a label before it
        ("localhost", "/who", "host-any"),
        # A host tier without a matching route falls through to the next tier.
        ("api.example.test", "/fallthrough", "host-any-fallthrough"),
        ("other.example.test", "/fallthrough", "host-any-fallthrough"),
    ],
)
def test_hostname_tiers(client: httpx.Client, host: str, path: str, expected: str) -> None:
    assert winner(client, "GET", path, headers={"host": host}) == expected


def test_no_route_is_404_text(client: httpx.Client) -> None:
    response = client.get("/nothing/here")
    assert response.status_code == 404
    assert response.text == "route not found"
    assert response.headers["content-type"].startswith("text/plain")
    # The connection stays usable after a local answer.
    assert client.get("/v1").text == "v1"


def test_route_without_backends_is_500(client: httpx.Client) -> None:
    response = client.post("/nobackend", content=b"some body")
    assert response.status_code == 500
    assert response.text == "no valid backends"
    assert response.headers["content-type"].startswith("text/plain")
    assert client.get("/v1").text == "v1"


def test_weighted_backends(gateway: GatewayFactory, plain_upstream: Process) -> None:
    """Weight 0 is never chosen; two weighted backends both get traffic. Each backend tags
    its responses with a responseHeaderModifier (all three are the same mock upstream)."""

    def backend(tag: str, weight: int) -> str:
        return f"""      - host: 127.0.0.1:{plain_upstream.port}
        weight: {weight}
        policies:
          responseHeaderModifier:
            set:
              x-backend: {tag}
"""

    gw = gateway(QUIET + """binds:
- port: 0
  listeners:
  - routes:
    - backends:
""" + backend("a", 1) + backend("zero", 0) + backend("b", 3))
    counts: Counter[str] = Counter()
    with gateway_client(gw.port) as c:
        for _ in range(200):
            response = c.get("/echo/weighted")
            assert response.status_code == 200
            counts[response.headers["x-backend"]] += 1
    assert counts["zero"] == 0
    assert counts["a"] > 0 and counts["b"] > 0, counts
    assert counts["a"] + counts["b"] == 200
    # 1:3 weights: a gets ~50 of 200; 5..120 is far outside any plausible random spread.
    assert 5 <= counts["a"] <= 120, counts
