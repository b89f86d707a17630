"""`TranslatedRelay`: a translated stream's client bytes, per event (`feed`) or held and
handed over once per provider read (`add` + `take`), framed as chunks or not.

The stream is agentgateway's fixture (tests/data/agentgateway-llm), split into events as a
provider's chunks arrive; what the client receives must not depend on how the relay was fed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.llm.translate.anthropic import completions_to_messages
from agw_fast.llm.translate.relay import TranslatedRelay

DATA = Path(__file__).resolve().parents[1] / "data" / "agentgateway-llm"
REQUEST = {
    "model": "claude-haiku-4-5",
    "messages": [{"role": "user", "content": "hi"}],
    "max_tokens": 64,
    "stream": True,
    "stream_options": {"include_usage": True},
}


def _relay(*, chunked: bool) -> TranslatedRelay:
    _, translation = completions_to_messages(json.loads(json.dumps(REQUEST)), clock=lambda: 1.0)
    relay = TranslatedRelay(
        translation, 200, b"HTTP/1.1 200 OK", b"text/event-stream", [b"request-id: r1"]
    )
    relay.chunked = chunked
    return relay


def _events(name: str) -> list[bytes]:
    raw = (DATA / "response" / "anthropic" / f"{name}.json").read_bytes()
    return [part + b"\n\n" for part in raw.split(b"\n\n") if part.strip()]


def _dechunk(data: bytes) -> tuple[bytes, int]:
    """(payload, chunk count) of a chunked body ending with its last chunk."""
    out, chunks = b"", 0
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert data == b"\r\n"
            return out, chunks
        out += data[:size]
        assert data[size : size + 2] == b"\r\n"
        data = data[size + 2 :]
        chunks += 1


def _created(data: bytes) -> bytes:
    # `created` is the relay's clock (seconds); two relays may straddle a second.
    return b"\n".join(
        line if not line.startswith(b"data: {") else json.dumps(
            {k: v for k, v in json.loads(line[6:]).items() if k != "created"}
        ).encode()
        for line in data.split(b"\n")
    )


@pytest.mark.parametrize("name", ["stream_basic", "stream_tool", "stream_thinking"])
def test_one_chunk_per_read_carries_what_per_event_feeding_sends(name: str) -> None:
    events = _events(name)
    per_event = _relay(chunked=True)
    reference = b"".join(per_event.feed(event) for event in events) + per_event.finish()
    expected, event_chunks = _dechunk(reference)

    # Three provider reads: the events of each reach `add` one by one (one chunk payload
    # at a time, as the chunk scanner hands them), then one `take` per read.
    batched = _relay(chunked=True)
    reads = [events[:1], events[1 : len(events) // 2], events[len(events) // 2 :]]
    out = b""
    for read in reads:
        for event in read:
            batched.add(event)
        out += batched.take()
        assert batched.take() == b""  # taken once
    out += batched.finish()
    payload, chunks = _dechunk(out)

    assert _created(payload) == _created(expected)
    assert payload.endswith(b"data: [DONE]\n\n")
    assert chunks < event_chunks  # fewer, larger chunks: one per read that produced bytes
    assert batched.usage == per_event.usage and batched.model == per_event.model
    assert batched.first_token_at == 1.0


def test_held_bytes_are_not_lost_at_the_end() -> None:
    # A provider read whose bytes were added but never taken: `finish` sends them first.
    events = _events("stream_basic")
    relay = _relay(chunked=False)
    for event in events:
        relay.add(event)
    out = relay.finish()
    assert relay.take() == b""
    assert out.startswith(b"data: {") and out.endswith(b"data: [DONE]\n\n")
    assert out.count(b"data: [DONE]") == 1


def test_a_json_response_is_still_read_whole() -> None:
    relay = TranslatedRelay(
        completions_to_messages(dict(REQUEST, stream=False))[1],
        200,
        b"HTTP/1.1 200 OK",
        b"application/json",
        [],
    )
    body = (DATA / "response" / "anthropic" / "basic.json").read_bytes()
    relay.add(body[:10])
    assert relay.take() == b""
    relay.add(body[10:])
    assert relay.take() == b""
    assert json.loads(relay.body())["object"] == "chat.completion"
