"""Request-side rules of the `ai` backend: body limit, invalid JSON, model required or
overridden, and compressed request bodies (decoded before rewriting).

The upstream is a recording one, so every test can also say what reached it (or that nothing did).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Callable, Iterator

import httpx
import pytest

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    ai_route,
    llm_config,
)

LIMIT = 1024
MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    with Upstream() as server:
        yield server


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    """`/override/...` has `provider.openAI.model: command`, `/free/...` has no model."""
    plain = {"host": "127.0.0.1", "authority": None, "auth_key": None}
    return module_gateway(
        llm_config(
            ai_route(upstream.port, match_prefix="/override", **plain),
            ai_route(upstream.port, match_prefix="/free", model=None, **plain),
            max_buffer_size=LIMIT,
        )
    )


class Client:
    """Posts to the gateway and tells what reached the upstream because of that request."""

    def __init__(self, gw: Process, upstream: Upstream) -> None:
        self.gw = gw
        self.upstream = upstream

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None
             ) -> tuple[httpx.Response, list[RawMessage]]:
        with self.upstream.lock:
            before = len(self.upstream.requests)
        response = httpx.post(
            f"http://127.0.0.1:{self.gw.port}{path}",
            content=body,
            headers={"content-type": "application/json", **(headers or {})},
            timeout=DEADLINE,
        )
        # A marker request that must succeed: whatever the first one sent upstream is there
        # before the marker's reply comes back.
        marker = httpx.post(
            f"http://127.0.0.1:{self.gw.port}/override/marker/chat/completions",
            json={"model": "m", "messages": MESSAGES}, timeout=DEADLINE,
        )
        assert marker.status_code == 200, marker.text
        with self.upstream.lock:
            seen = self.upstream.requests[before:]
        assert seen and seen[-1].target == "/override/marker/chat/completions", seen
        return response, seen[:-1]


@pytest.fixture
def client(gw: Process, upstream: Upstream) -> Client:
    return Client(gw, upstream)


def body_of(message: RawMessage) -> dict[str, object]:
    assert message.header("content-length") == str(len(message.body))
    assert message.header("content-encoding") is None
    assert message.header("transfer-encoding") is None
    doc = json.loads(message.body)
    assert isinstance(doc, dict)
    return doc


def padded(size: int) -> bytes:
    """A valid request body of exactly `size` bytes."""
    base = {"model": "m", "messages": [{"role": "user", "content": ""}]}
    pad = size - len(json.dumps(base).encode())
    assert pad >= 0
    base["messages"][0]["content"] = "x" * pad
    data = json.dumps(base).encode()
    assert len(data) == size
    return data


# -- body limit ---------------------------------------------------------------------------------


def test_body_over_max_buffer_size_is_413_and_not_forwarded(client: Client) -> None:
    response, forwarded = client.post("/override/v1/chat/completions", padded(4096))
    assert response.status_code == 413
    assert response.text == "failed to process LLM request: request was too large"
    assert forwarded == []


def test_chunked_body_over_max_buffer_size_is_413(client: Client) -> None:
    data = padded(4096)
    chunks = iter([data[:1000], data[1000:3000], data[3000:]])
    response, forwarded = client.post("/override/v1/chat/completions", chunks)
    assert response.status_code == 413
    assert forwarded == []


def test_body_at_max_buffer_size_is_accepted(client: Client) -> None:
    response, forwarded = client.post("/override/v1/chat/completions", padded(LIMIT))
    assert response.status_code == 200
    (message,) = forwarded
    assert body_of(message)["model"] == "command"


def test_decoded_body_over_max_buffer_size_is_413(client: Client) -> None:
    data = gzip.compress(padded(8 * LIMIT))
    assert len(data) < LIMIT
    response, forwarded = client.post(
        "/override/v1/chat/completions", data, {"content-encoding": "gzip"}
    )
    assert response.status_code == 413
    assert forwarded == []


def test_default_limit_allows_bodies_of_several_mebibytes(gateway: GatewayFactory) -> None:
    with Upstream() as upstream:
        gw = gateway(llm_config(ai_route(upstream.port, host="127.0.0.1", authority=None,
                                         auth_key=None)))
        data = padded(3 * 1024 * 1024)
        response = httpx.post(f"http://127.0.0.1:{gw.port}/v1/chat/completions", content=data,
                              timeout=DEADLINE)
        assert response.status_code == 200, response.text
        (message,) = upstream.requests
    doc = body_of(message)
    assert doc["model"] == "command"
    assert doc["messages"] == json.loads(data)["messages"]


# -- JSON and model -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data", [b"{not json", b'{"model": "m", "messages": [}', b"\xff\xfe"],
    ids=["garbage", "truncated", "not-utf8"],
)
def test_invalid_json_is_400(client: Client, data: bytes) -> None:
    response, forwarded = client.post("/override/v1/chat/completions", data)
    assert response.status_code == 400
    assert response.text.startswith("failed to process LLM request: invalid JSON: "), response.text
    assert forwarded == []


@pytest.mark.parametrize(
    "doc", [{"messages": MESSAGES}, {"model": 42, "messages": MESSAGES}, {"model": None}],
    ids=["absent", "number", "null"],
)
def test_missing_model_without_provider_model_is_400(
    client: Client, doc: dict[str, object]
) -> None:
    response, forwarded = client.post("/free/v1/chat/completions", json.dumps(doc).encode())
    assert response.status_code == 400
    assert response.text == "failed to process LLM request: missing field: model not specified"
    assert forwarded == []


def test_missing_model_with_provider_model_is_filled_in(client: Client) -> None:
    doc = {"messages": MESSAGES, "temperature": 0}
    response, forwarded = client.post("/override/v1/chat/completions", json.dumps(doc).encode())
    assert response.status_code == 200
    (message,) = forwarded
    assert body_of(message) == {**doc, "model": "command"}


def test_client_model_kept_without_provider_model(client: Client) -> None:
    doc = {"model": "gpt-client", "messages": MESSAGES, "n": 1, "metadata": {"k": "\u00e9"}}
    response, forwarded = client.post("/free/v1/chat/completions", json.dumps(doc).encode())
    assert response.status_code == 200
    (message,) = forwarded
    assert message.target == "/free/v1/chat/completions"
    assert body_of(message) == doc


# -- compressed request bodies ------------------------------------------------------------------


def _raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize(
    ("coding", "compress"),
    [("gzip", gzip.compress), ("deflate", zlib.compress), ("deflate", _raw_deflate)],
    ids=["gzip", "deflate-zlib", "deflate-raw"],
)
def test_compressed_body_decoded_and_rewritten(
    client: Client, coding: str, compress: Callable[[bytes], bytes]
) -> None:
    doc = {"model": "client-model", "messages": MESSAGES, "stream": True}
    response, forwarded = client.post(
        "/override/v1/chat/completions?z=1", compress(json.dumps(doc).encode()),
        {"content-encoding": coding},
    )
    assert response.status_code == 200
    (message,) = forwarded
    assert message.target == "/override/v1/chat/completions?z=1"
    assert body_of(message) == {
        **doc, "model": "command", "stream_options": {"include_usage": True}
    }


def test_corrupt_gzip_body_is_400(client: Client) -> None:
    data = gzip.compress(json.dumps({"model": "m", "messages": MESSAGES}).encode())
    response, forwarded = client.post(
        "/override/v1/chat/completions", data[:-12] + b"garbage-garbage",
        {"content-encoding": "gzip"},
    )
    assert response.status_code == 400
    assert response.text.startswith("failed to process LLM request: ")
    assert forwarded == []
