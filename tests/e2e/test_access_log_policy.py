"""`frontendPolicies.accessLog` over real sockets: the CEL filter decides which requests get a
line, `add` appends fields (text and JSON formats), `remove` leaves fields out; a bad
expression is refused at load with one line naming the field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agw_fast.core import cel
from tests.e2e.conftest import (
    QUIET,
    GatewayFactory,
    RawClient,
    Upstream,
    access_log_lines,
    gateway_client,
    poll,
    refused_config,
)

pytestmark = pytest.mark.skipif(not cel.available(), reason="the cel extra is not installed")

ACCESS_LOG = """frontendPolicies:
  accessLog:
    filter: 'response.code >= 400 || request.headers["x-log"] == "yes"'
    add:
      team: 'request.headers["x-team"]'
      code: response.code
      info: '{"m": request.method, "n": 1, "q": request.pathAndQuery}'
      absent: 'request.headers["x-none"]'
    remove: [src.addr, http.host]
"""


def config(upstream_port: int, log_format: str) -> str:
    return (
        QUIET
        + f"  logging: {{format: {log_format}}}\n"
        + ACCESS_LOG
        + f"""binds:
- port: 0
  listeners:
  - routes:
    - matches: [{{path: {{pathPrefix: /api}}}}]
      backends: [{{host: "127.0.0.1:{upstream_port}"}}]
"""
    )


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


def json_lines(output: str) -> list[dict[str, object]]:
    found = []
    for line in output.splitlines():
        if line.startswith("{"):
            fields = json.loads(line)
            if fields.get("message") == "request":
                found.append(fields)
    return found


def send_mix(port: int) -> None:
    """Four requests, in order: kept out (200), kept (header), kept (404), kept (400)."""
    with gateway_client(port) as client:
        assert client.get("/api/quiet").status_code == 200
        response = client.get("/api/loud?x=1", headers={"x-log": "yes", "x-team": "blue team"})
        assert response.status_code == 200
        assert client.get("/elsewhere").status_code == 404
    # A head the gateway refuses before routing: no policy step saw it (`request` is empty),
    # the filter still holds on the response code.
    with RawClient(port) as raw:
        answer = raw.request(b"GET /api HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        assert answer.status == 400


def test_text_lines_pass_the_filter_with_added_and_removed_fields(
    gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = gateway(config(upstream.port, "text"))
    send_mix(gw.port)
    lines = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 3,
                 what="3 access lines")  # fmt: skip
    # Give a wrongly logged fourth line the chance to show up before counting.
    gw.stop()
    lines = access_log_lines(gw.output())
    assert [line.get("http.path") for line in lines] == ["/api/loud", "/elsewhere", "/api"]
    loud, missing, bad = lines
    for line in lines:
        assert "src.addr" not in line and "http.host" not in line
        assert "absent" not in line
        assert line["http.method"] == "GET"
    assert loud["team"] == "blue team"
    assert loud["code"] == "200"
    assert json.loads(loud["info"]) == {"m": "GET", "n": 1, "q": "/api/loud?x=1"}
    # Added fields come last, after the built-in ones, in file order.
    assert list(loud)[-4:] == ["duration", "team", "code", "info"]
    assert missing["code"] == "404" and "team" not in missing
    assert bad["code"] == "400" and "info" not in bad


def test_json_lines_carry_typed_values(gateway: GatewayFactory, upstream: Upstream) -> None:
    gw = gateway(config(upstream.port, "json"))
    send_mix(gw.port)
    poll(lambda: json_lines(gw.output()), lambda found: len(found) >= 3, what="3 JSON lines")
    gw.stop()
    lines = json_lines(gw.output())
    assert [line["http.path"] for line in lines] == ["/api/loud", "/elsewhere", "/api"]
    loud = lines[0]
    assert loud["team"] == "blue team"
    assert loud["code"] == 200
    assert loud["info"] == {"m": "GET", "n": 1, "q": "/api/loud?x=1"}
    assert "src.addr" not in loud and "http.host" not in loud and "absent" not in loud
    assert loud["http.status"] == 200


def test_without_request_variables_no_header_is_needed(
    gateway: GatewayFactory, upstream: Upstream
) -> None:
    gw = gateway(
        QUIET
        + """frontendPolicies:
  accessLog:
    filter: 'response.code == 404'
    add: {where: 'source.address'}
"""
        + f"""binds:
- port: 0
  listeners:
  - routes:
    - matches: [{{path: {{pathPrefix: /api}}}}]
      backends: [{{host: "127.0.0.1:{upstream.port}"}}]
"""
    )
    with httpx.Client(base_url=f"http://127.0.0.1:{gw.port}", trust_env=False) as client:
        assert client.get("/api").status_code == 200
        assert client.get("/nope").status_code == 404
    poll(lambda: access_log_lines(gw.output()), bool, what="one access line")
    gw.stop()
    (line,) = access_log_lines(gw.output())
    assert line["http.path"] == "/nope" and line["where"] == "127.0.0.1"


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("filter: 'request.method =='",
         "config error: frontendPolicies.accessLog.filter: invalid CEL expression"),
        ("add: {ct: 'response.headers[\"a\"]'}",
         "config error: frontendPolicies.accessLog.add.ct: not supported: the CEL field "
         "`response.headers`"),
        ("otlp: {endpoint: 'http://x'}",
         "config error: frontendPolicies.accessLog.otlp: not supported"),
    ],
)
def test_bad_policy_fails_at_load_with_one_line(
    tmp_path: Path, policy: str, message: str
) -> None:
    path = tmp_path / "bad.yaml"
    line = refused_config(
        path,
        QUIET
        + f"frontendPolicies:\n  accessLog:\n    {policy}\n"
        + """binds:
- port: 0
  listeners:
  - routes:
    - backends: [{host: "127.0.0.1:1"}]
""",
    )
    assert line.startswith(message), line
