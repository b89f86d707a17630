"""Content codings: the bounded inflater, and the response observer reading usage from a
gzip or deflate response (a decoded copy; the relayed bytes are not the observer's)."""

from __future__ import annotations

import gzip
import json
import zlib

import pytest

from agw_fast.llm import codings
from agw_fast.llm.codings import CodingError, Inflater, UnsupportedCoding, parse_codings
from agw_fast.llm.exchange import (
    RESPONSE_COLLECT_LIMIT,
    STREAM_DECODE_LIMIT,
    LLMOutcome,
    LLMRequest,
    LLMResponseObserver,
)

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hé"}}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }
).encode()


def raw_deflate(data: bytes) -> bytes:
    encoder = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return encoder.compress(data) + encoder.flush()


ENCODED = {
    "gzip": gzip.compress(COMPLETION),
    "x-gzip": gzip.compress(COMPLETION),
    "deflate": zlib.compress(COMPLETION),
}


def inflate(coding: str, pieces: list[bytes], limit: int = 1 << 20) -> bytes:
    inflater = Inflater(coding)
    out = b"".join(piece for data in pieces for piece in inflater.feed(data, limit))
    inflater.end()
    return out


# -- parse_codings and Inflater ---------------------------------------------------------------


def test_parse_codings() -> None:
    assert parse_codings(None) == parse_codings("") == parse_codings(" identity ") == []
    assert parse_codings("GZIP, identity,deflate") == ["gzip", "deflate"]
    with pytest.raises(UnsupportedCoding) as info:
        parse_codings("gzip, br")
    assert info.value.coding == "br"
    assert str(info.value) == "unsupported content encoding: br"


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_inflates_whole_and_byte_at_a_time(coding: str) -> None:
    body = ENCODED[coding]
    assert inflate(coding, [body]) == COMPLETION
    assert inflate(coding, [bytes([b]) for b in body]) == COMPLETION


def test_raw_deflate_is_recognised_even_split_before_its_second_byte() -> None:
    body = raw_deflate(COMPLETION)
    assert inflate("deflate", [body[:1], body[1:]]) == COMPLETION


def test_gzip_members_split_anywhere_and_zero_padding() -> None:
    body = gzip.compress(COMPLETION[:20]) + gzip.compress(COMPLETION[20:]) + b"\0\0\0"
    for split in range(len(body)):
        assert inflate("gzip", [body[:split], body[split:]]) == COMPLETION


def test_limit_bounds_the_work_and_keeps_the_rest() -> None:
    size = 8 * 1024 * 1024
    bomb = gzip.compress(b"\0" * size, compresslevel=9)
    inflater = Inflater("gzip")
    pieces = list(inflater.feed(bomb, 100_000))
    assert all(len(p) <= codings.STEP for p in pieces)
    # It stops at the first piece past the limit: never the whole expansion.
    assert 100_000 < inflater.decoded <= 100_000 + codings.STEP
    # A higher limit later resumes where it stopped.
    rest = sum(len(p) for p in inflater.feed(b"", size))
    assert inflater.decoded == size
    assert rest == size - sum(len(p) for p in pieces)
    inflater.end()


@pytest.mark.parametrize(
    ("coding", "body"),
    [("gzip", b"not gzip"), ("deflate", b"\x78\x9c\x00garbage"),
     ("gzip", gzip.compress(COMPLETION) + b"trailing garbage")],
)
def test_corrupt_data_raises(coding: str, body: bytes) -> None:
    with pytest.raises(CodingError, match=f"^invalid {coding} body"):
        inflate(coding, [body])


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_truncated_stream_is_noticed_at_the_end(coding: str) -> None:
    body = gzip.compress(COMPLETION) if coding == "gzip" else zlib.compress(COMPLETION)
    for cut in (0, 1, len(body) // 2, len(body) - 1):
        with pytest.raises(CodingError, match="truncated stream"):
            inflate(coding, [body[:cut]])


# -- the response observer --------------------------------------------------------------------


def observe(lines: list[bytes], pieces: list[bytes], *, sse: bool = False,
            status: int = 200) -> tuple[bool, LLMOutcome]:
    request = LLMRequest(b"/v1/chat/completions", b"{}", "completions", "gpt-4o", sse)
    observer = LLMResponseObserver(request, started=0.0)
    content_type = b"text/event-stream" if sse else b"application/json"
    observing = observer.on_response_head(status, content_type, lines)
    if observing:
        for piece in pieces:
            observer.feed(piece)
    return observing, observer.outcome()


def usage_of(outcome: LLMOutcome) -> tuple[object, object, object]:
    return outcome.response_model, outcome.input_tokens, outcome.output_tokens


EXPECTED = ("gpt-4o-mini-2024-07-18", 12, 5)


@pytest.mark.parametrize("coding", sorted(ENCODED))
def test_observer_reads_usage_of_an_encoded_json_body(coding: str) -> None:
    body = ENCODED[coding]
    lines = [b"content-type: application/json", b"content-encoding: " + coding.upper().encode()]
    observing, fields = observe(lines, [bytes([b]) for b in body])
    assert observing
    assert usage_of(fields) == EXPECTED


def test_observer_joins_repeated_content_encoding_fields() -> None:
    # Two codings, listed over two fields (RFC 9110 §5.3): stacked, so not read.
    lines = [b"content-encoding: identity", b"content-encoding: gzip"]
    assert usage_of(observe(lines, [gzip.compress(COMPLETION)])[1]) == EXPECTED
    lines = [b"content-encoding: gzip", b"content-encoding: deflate"]
    observing, fields = observe(lines, [zlib.compress(gzip.compress(COMPLETION))])
    assert not observing
    assert usage_of(fields) == (None, None, None)


@pytest.mark.parametrize("coding", [b"br", b"zstd", b"compress"])
def test_observer_skips_codings_it_cannot_undo(coding: str) -> None:
    observing, fields = observe([b"content-encoding: " + coding], [COMPLETION])
    assert not observing
    assert usage_of(fields) == (None, None, None)


def test_observer_gives_up_on_corrupt_or_oversized_bodies() -> None:
    observing, fields = observe([b"content-encoding: gzip"], [b"definitely not gzip"])
    assert observing and usage_of(fields) == (None, None, None)
    # Valid JSON, but past the collect limit once inflated: no usage, and no more inflating.
    padded = COMPLETION[:-1] + b"," + b" " * RESPONSE_COLLECT_LIMIT + b'"x":1}'
    observing, fields = observe([b"content-encoding: gzip"], [gzip.compress(padded)])
    assert usage_of(fields) == (None, None, None)


def sse_events(model: str = "gpt-4o-mini-2024-07-18") -> list[bytes]:
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": model,
             "choices": [{"index": 0, "delta": {"content": "hi"}}], "usage": None}
    final = {**chunk, "choices": [], "usage": {"prompt_tokens": 12, "completion_tokens": 5}}
    return [b"data: " + json.dumps(doc).encode() + b"\n\n" for doc in (chunk, chunk, final)] + [
        b"data: [DONE]\n\n"
    ]


def flushed_gzip(events: list[bytes]) -> list[bytes]:
    """A gzip stream flushed after each event, as a streaming server compresses SSE."""
    encoder = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [encoder.compress(e) + encoder.flush(zlib.Z_SYNC_FLUSH) for e in events]
    out[-1] += encoder.flush()
    return out


def test_observer_reads_an_encoded_event_stream() -> None:
    pieces = flushed_gzip(sse_events())
    observing, fields = observe([b"content-encoding: gzip"], pieces, sse=True)
    assert observing
    assert usage_of(fields) == EXPECTED
    assert fields.time_to_first_token is not None
    # Split at every byte, the same.
    wire = b"".join(pieces)
    _, fields = observe([b"content-encoding: gzip"], [bytes([b]) for b in wire], sse=True)
    assert usage_of(fields) == EXPECTED


def test_encoded_stream_past_its_decode_limit_keeps_what_it_saw(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agw_fast.llm import exchange

    events = sse_events()
    monkeypatch.setattr(exchange, "STREAM_DECODE_LIMIT", len(events[0]) + 10)
    assert exchange.STREAM_DECODE_LIMIT < STREAM_DECODE_LIMIT
    _, fields = observe([b"content-encoding: gzip"], flushed_gzip(events), sse=True)
    # The model and first token came before the limit; the usage event after it.
    assert usage_of(fields) == ("gpt-4o-mini-2024-07-18", None, None)
    assert fields.time_to_first_token is not None


def test_error_responses_are_not_observed() -> None:
    observing, _ = observe([b"content-encoding: gzip"], [], status=500)
    assert not observing
