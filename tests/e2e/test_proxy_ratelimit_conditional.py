"""`localRateLimit` `conditional` entries through the CLI-started gateway: a CEL condition picks
the one bucket a request draws from (the first that holds), a request no entry selects is not
limited and keeps the upstream's own x-ratelimit-* fields, and a bad condition fails the load."""

from __future__ import annotations

from pathlib import Path

import pytest

from agw_fast.core import cel
from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    RawClient,
    Upstream,
    UpstreamConnection,
    echo_json,
    gateway_client,
    http_request,
    http_response,
    one_route_config,
    refused_config,
)

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")


def _config(upstream_port: int) -> str:
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - name: tiers
      matches: [{{path: {{pathPrefix: /api}}}}]
      policies:
        localRateLimit:
          conditional:
          - condition: 'request.headers["x-tier"] == "free"'
            maxTokens: 1
            tokensPerFill: 1
            fillInterval: 3600s
          - condition: 'request.method == "POST"'
            maxTokens: 2
            tokensPerFill: 1
            fillInterval: 3600s
      backends: [{{host: "127.0.0.1:{upstream_port}"}}]
    - name: fallback
      matches: [{{path: {{pathPrefix: /fb}}}}]
      policies:
        localRateLimit:
          conditional:
          - condition: 'request.path == "/fb/vip"'
            maxTokens: 3
            fillInterval: 3600s
          - maxTokens: 1
            fillInterval: 3600s
        directResponse: {{status: 200, body: "ok"}}
"""


def _echo_with_own_limits(conn: UpstreamConnection) -> None:
    while (request := conn.read_request()) is not None:
        fields = [("Content-Type", "application/json"), ("X-RateLimit-Limit", "999")]
        conn.send(http_response(200, echo_json(request), fields))


def test_the_first_matching_condition_picks_the_only_bucket(gateway: GatewayFactory) -> None:
    with Upstream(_echo_with_own_limits) as upstream:
        gw = gateway(_config(upstream.port))
        with gateway_client(gw.port) as client:
            # Both conditions hold for a free POST: only the first entry's bucket is drawn.
            free = client.post("/api/x", headers={"x-tier": "free"}, content=b"{}")
            assert free.status_code == 200
            # Ours replace the upstream's field.
            assert free.headers.get_list("x-ratelimit-limit") == ["1"]
            assert free.headers["x-ratelimit-remaining"] == "0"
            assert 3590 <= int(free.headers["x-ratelimit-reset"]) <= 3600
            refused = client.get("/api/x", headers={"x-tier": "free"})
            assert refused.status_code == 429
            assert refused.text == "rate limit exceeded"
            assert refused.headers["x-ratelimit-limit"] == "1"
            assert refused.headers["x-ratelimit-remaining"] == "0"
            # The POST bucket still has both tokens.
            for left in (1, 0):
                post = client.post("/api/x", content=b"{}")
                assert post.status_code == 200
                assert post.headers.get_list("x-ratelimit-limit") == ["2"]
                assert post.headers["x-ratelimit-remaining"] == str(left)
            assert client.post("/api/x", content=b"{}").status_code == 429
            # No entry selects a GET without x-tier (the failed lookup is false): not
            # limited at all, and the upstream's own field is left alone.
            for _ in range(5):
                plain = client.get("/api/x")
                assert plain.status_code == 200
                assert plain.headers.get_list("x-ratelimit-limit") == ["999"]
                assert "x-ratelimit-remaining" not in plain.headers
            assert len(upstream.requests) == 1 + 2 + 5


def test_the_fallback_entry_applies_when_no_condition_holds(gateway: GatewayFactory) -> None:
    gw = gateway(_config(1))
    with RawClient(gw.port) as raw:
        first = raw.request(http_request("GET", "/fb/other"))
        assert first.status == 200
        refused = raw.request(http_request("GET", "/fb/again"))
        assert refused.raw.startswith(
            b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n"
            b"x-ratelimit-limit: 1\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: "
        )
        assert refused.body == b"rate limit exceeded"
        # The condition's own bucket is separate.
        vip = raw.request(http_request("GET", "/fb/vip"))
        assert vip.status == 200 and vip.body == b"ok"


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        (
            "- {condition: 'request.path.startsWith(', fillInterval: 1s}",
            "config error: binds[0].listeners[0].routes[0].policies.localRateLimit"
            ".conditional[0].condition: invalid CEL expression: 1:",
        ),
        (
            "- {fillInterval: 1s}\n          - {condition: 'true', fillInterval: 1s}",
            "config error: binds[0].listeners[0].routes[0].policies.localRateLimit"
            ".conditional[0]: conditional policy entries without condition must be last",
        ),
    ],
)
def test_a_bad_conditional_fails_at_load_with_one_line(
    tmp_path: Path, entries: str, message: str
) -> None:
    entries = entries.replace("\n          ", "\n  ")  # the table indents for the route
    config = one_route_config("localRateLimit:\n  conditional:\n  " + entries)
    line = refused_config(tmp_path / "bad.yaml", config)
    assert line.startswith(message)
