"""Compressed LLM responses: the client gets the upstream's bytes unchanged, and the gateway
still reads their token usage and response model (from a decoded copy).

The OpenAI SDK sends `Accept-Encoding: gzip, deflate` on every call, and the API answers gzip;
the mock does the same with `--gzip`.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import (
    GatewayFactory,
    Process,
    RawClient,
    RawMessage,
    Upstream,
    UpstreamConnection,
    access_log_lines,
    ai_route,
    http_request,
    http_response,
    llm_config,
    metric_total,
    poll,
    scrape_metrics,
    start_mock,
)

TOKENS = "agentgateway_gen_ai_client_token_usage"
CONTENT = "Please count these tokens for me."
ACCEPT = [("content-type", "application/json"), ("accept-encoding", "gzip, deflate")]


@pytest.fixture(scope="module")
def gzip_mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("gzip-mock"), "--gzip", name="gzip")
    yield process
    process.stop()


def chat(stream: bool) -> bytes:
    body: dict[str, object] = {"model": "gpt-4o",
                               "messages": [{"role": "user", "content": CONTENT}]}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # as the gateway would add it
    return json.dumps(body, separators=(",", ":")).encode()


def ask(port: int, body: bytes) -> RawMessage:
    with RawClient(port) as client:
        response = client.request(
            http_request("POST", "/v1/chat/completions", headers=ACCEPT, body=body)
        )
    assert response.status == 200, response.raw[:500]
    return response


def sse_usage(payload: bytes) -> dict[str, int]:
    events = [line[6:] for line in payload.split(b"\n") if line.startswith(b"data: {")]
    usages = [json.loads(e)["usage"] for e in events if json.loads(e).get("usage")]
    assert len(usages) == 1
    return dict(usages[0])


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_gzip_response_is_relayed_unchanged_and_its_usage_counted(
    gateway: GatewayFactory, gzip_mock: Process, stream: bool
) -> None:
    gw = gateway(llm_config(ai_route(gzip_mock.port, model=None, auth_key=None), stats=True),
                 expect_stats=True)
    body = chat(stream)
    direct = ask(gzip_mock.port, body)
    relayed = ask(gw.port, body)
    assert relayed.header("content-encoding") == direct.header("content-encoding") == "gzip"
    assert relayed.body == direct.body  # the very bytes the upstream sent, still compressed
    payload = gzip.decompress(relayed.body)
    usage = sse_usage(payload) if stream else json.loads(payload)["usage"]

    samples = poll(lambda: scrape_metrics(gw.extra_ports["stats"]),
                   lambda s: metric_total(s, f"{TOKENS}_count", gen_ai_token_type="output") >= 1,
                   what="token usage of the compressed response")
    assert metric_total(samples, f"{TOKENS}_sum", gen_ai_token_type="input") == (
        usage["prompt_tokens"])
    assert metric_total(samples, f"{TOKENS}_sum", gen_ai_token_type="output",
                        gen_ai_response_model="gpt-4o") == usage["completion_tokens"]
    (line,) = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                   what="the access log line")
    assert line["gen_ai.response.model"] == "gpt-4o"
    assert line["gen_ai.usage.input_tokens"] == str(usage["prompt_tokens"])
    assert line["gen_ai.usage.output_tokens"] == str(usage["completion_tokens"])


COMPLETION = json.dumps({
    "id": "chatcmpl-1", "object": "chat.completion", "model": "deflated-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                 "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
}).encode()


def raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


@pytest.mark.parametrize(
    ("coding", "encoded"),
    [
        ("deflate", zlib.compress(COMPLETION)),
        ("deflate", raw_deflate(COMPLETION)),  # what some servers send as "deflate"
        ("br", b"\x0b\x02\x80not really brotli\x03"),  # relayed, usage unreadable
    ],
    ids=["deflate-zlib", "deflate-raw", "br"],
)
def test_other_codings(gateway: GatewayFactory, tmp_path: Path, coding: str,
                       encoded: bytes) -> None:
    # Chunked, in small chunks, so the observer sees the encoded body in many pieces.
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(encoded[i:i + 7]), encoded[i:i + 7])
                      for i in range(0, len(encoded), 7)) + b"0\r\n\r\n"
    head = http_response(200, b"", [("Content-Type", "application/json"),
                                    ("Content-Encoding", coding),
                                    ("Transfer-Encoding", "chunked")], content_length=False)

    def handler(conn: UpstreamConnection) -> None:
        while conn.read_request() is not None:
            conn.send(head + chunks)

    with Upstream(handler) as upstream:
        gw = gateway(llm_config(ai_route(upstream.port, model=None, auth_key=None),
                                stats=True), expect_stats=True)
        relayed = ask(gw.port, chat(False))
        assert relayed.header("content-encoding") == coding
        assert relayed.body == encoded
        (line,) = poll(lambda: access_log_lines(gw.output()), lambda found: len(found) >= 1,
                       what="the access log line")
    if coding == "br":
        assert "gen_ai.usage.input_tokens" not in line
        assert "gen_ai.response.model" not in line
        return
    assert line["gen_ai.response.model"] == "deflated-model"
    assert line["gen_ai.usage.input_tokens"] == "11"
    assert line["gen_ai.usage.output_tokens"] == "7"
    samples = poll(lambda: scrape_metrics(gw.extra_ports["stats"]),
                   lambda s: metric_total(s, f"{TOKENS}_count", gen_ai_token_type="output") >= 1,
                   what="token usage of the deflated response")
    assert metric_total(samples, f"{TOKENS}_sum", gen_ai_token_type="output",
                        gen_ai_response_model="deflated-model") == 7
