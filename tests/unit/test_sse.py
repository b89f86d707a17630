from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.sse import SSEUsageObserver
from agw_fast.llm.usage import Usage, usage_from_mapping


def _chunk(content: str, model: str = "gpt-4o-mini-2024-07-18") -> str:
    return (
        f'{{"id":"c1","object":"chat.completion.chunk","model":"{model}",'
        f'"choices":[{{"index":0,"delta":{{"content":"{content}"}}}}],"usage":null}}'
    )


USAGE_CHUNK = (
    '{"id":"c1","object":"chat.completion.chunk","model":"other","choices":[],'
    '"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12,'
    '"prompt_tokens_details":{"cached_tokens":0},'
    '"completion_tokens_details":{"reasoning_tokens":1}}}'
)
EXPECTED_USAGE = Usage(9, 3, 12, 0, 1)

# A stream exercising comments, other fields, a multi-line data field, a "usage" string in
# content, a non-JSON event, the usage chunk and [DONE].
LINES = [
    ": keep-alive",
    "",
    "retry: 1000",
    "event: message",
    "id: 1",
    "data: " + _chunk('he said \\"usage\\": {'),
    "",
    "data:" + _chunk("second", model="ignored-later-model"),
    "",
    'data: {"id":"c1",',
    'data:  "model": "x",',
    'data: "usage": null}',
    "",
    "data: this is not json",
    "",
    "datax: not a data field",
    "data",
    "",
    "data: " + USAGE_CHUNK,
    "",
    "data: [DONE]",
    "",
]


def _stream(newline: str) -> bytes:
    return newline.join(LINES).encode() + newline.encode()


class Clock:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> float:
        self.calls += 1
        return 100.0 + self.calls


def _observe(pieces: list[bytes]) -> tuple[object, ...]:
    clock = Clock()
    obs = SSEUsageObserver(clock=clock)
    for piece in pieces:
        obs.feed(piece)
    return obs.first_data_at, obs.model, obs.usage, obs.done, clock.calls


EXPECTED = (101.0, "gpt-4o-mini-2024-07-18", EXPECTED_USAGE, True, 1)


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_whole_stream(newline: str) -> None:
    assert _observe([_stream(newline)]) == EXPECTED


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_split_at_every_offset(newline: str) -> None:
    stream = _stream(newline)
    for i in range(len(stream) + 1):
        assert _observe([stream[:i], stream[i:]]) == EXPECTED, i


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
def test_one_byte_at_a_time(newline: str) -> None:
    stream = _stream(newline)
    assert _observe([stream[i : i + 1] for i in range(len(stream))]) == EXPECTED


def test_random_three_way_splits() -> None:
    rng = random.Random(1234)
    for newline in ("\n", "\r\n", "\r"):
        stream = _stream(newline)
        for _ in range(300):
            a, b = sorted(rng.randrange(len(stream) + 1) for _ in range(2))
            assert _observe([stream[:a], stream[a:b], stream[b:]]) == EXPECTED


def test_mixed_line_endings() -> None:
    stream = (
        b"data: " + _chunk("a").encode() + b"\r\n\n"
        b"data: " + USAGE_CHUNK.encode() + b"\r\r"
        b"data: [DONE]\n\r\n"
    )
    for i in range(len(stream) + 1):
        assert _observe([stream[:i], stream[i:]]) == EXPECTED, i


def test_usage_null_chunks_are_not_parsed_after_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    import agw_fast.llm.sse as sse

    parsed: list[bytes] = []
    real = sse._parse_object

    def spy(data: bytes) -> dict[str, object] | None:
        parsed.append(data)
        return real(data)

    monkeypatch.setattr(sse, "_parse_object", spy)
    obs = SSEUsageObserver()
    for i in range(50):
        obs.feed(b"data: " + _chunk(f"t{i}").encode() + b"\n\n")
    obs.feed(b"data: " + USAGE_CHUNK.encode() + b"\n\ndata: [DONE]\n\n")
    assert len(parsed) == 2
    assert obs.usage == EXPECTED_USAGE
    assert obs.done


def test_model_keeps_being_looked_for_until_found() -> None:
    obs = SSEUsageObserver(clock=lambda: 5.0)
    obs.feed(b'data: {"choices":[]}\n\n')
    assert obs.first_data_at == 5.0 and obs.model is None
    obs.feed(b'data: {"model":""}\n\ndata: {"model":"late"}\n\ndata: {"model":"later"}\n\n')
    assert obs.model == "late"
    assert obs.ttft(2.0) == 3.0


def test_last_usage_wins() -> None:
    obs = SSEUsageObserver()
    obs.feed(b'data: {"model":"m","usage":{"prompt_tokens":1}}\n\n')
    obs.feed(b'data: {"usage" :\ndata: \t{"prompt_tokens":2,"completion_tokens":4}}\n\n')
    assert obs.usage == Usage(input_tokens=2, output_tokens=4)


def test_done_before_any_json_and_no_data() -> None:
    obs = SSEUsageObserver()
    assert obs.ttft(0.0) is None
    obs.feed(b": only a comment\n\ndata: [DONE]\n\n")
    assert obs.done
    assert obs.first_data_at is None and obs.model is None and obs.usage is None


def test_non_object_json_does_not_count_as_first_data() -> None:
    obs = SSEUsageObserver(clock=lambda: 1.0)
    obs.feed(b"data: 42\n\ndata: [1]\n\n")
    assert obs.first_data_at is None
    obs.feed(b'data: {"model":"m"}\n\n')
    assert obs.first_data_at == 1.0


def test_incomplete_event_needs_close() -> None:
    obs = SSEUsageObserver()
    obs.feed(b'data: {"model":"m","usage":{"prompt_tokens":1}}')
    assert obs.usage is None
    obs.close()
    assert obs.usage == Usage(input_tokens=1)
    obs.close()  # idempotent


def test_close_after_complete_line_without_blank_line() -> None:
    obs = SSEUsageObserver()
    obs.feed(b'data: {"model":"m"}\n')
    obs.close()
    assert obs.model == "m"


@pytest.mark.parametrize("split", [1, 7, 64, 10_000])
def test_oversized_event_is_skipped_and_memory_bounded(split: int) -> None:
    limit = 256
    big = b'data: {"model":"big","usage":{"prompt_tokens":99},"pad":"' + b"x" * 1000 + b'"}\n'
    stream = (
        big
        + b"data: more\n\n"
        + b'data: {"model":"small","usage":{"prompt_tokens":1}}\n\n'
        + b"data: "
        + b"y" * 200
        + b"\ndata: "
        + b"z" * 200
        + b"\n\n"  # fields sum over limit
        + b'data: {"usage":{"prompt_tokens":2}}\n\n'
    )
    obs = SSEUsageObserver(max_event_size=limit)
    for i in range(0, len(stream), split):
        obs.feed(stream[i : i + split])
        assert len(obs._tail) <= limit + split
        assert sum(len(line) for line in obs._lines) <= limit
    assert obs.model == "small"
    assert obs.usage == Usage(input_tokens=2)


def reference_observe(stream: bytes) -> tuple[str | None, Usage | None, bool, bool]:
    """(model, usage, saw a JSON data event, done) of a whole stream, by the plain reading of
    WHATWG HTML §9.2.6 with a full JSON parse of every event: the oracle for the observer.
    Like the observer, a final event without its blank line still counts."""
    model: str | None = None
    usage: Usage | None = None
    first = done = False
    data: list[bytes] = []
    lines = re.split(rb"\r\n|\r|\n", stream)
    for index, line in enumerate(lines):
        last = index == len(lines) - 1
        if line == b"":
            if last and not data:
                break
        elif line == b"data" or line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
            if not last:
                continue
        elif not last:
            continue
        event, data = b"\n".join(data), []
        if not event:
            continue
        try:
            obj = loads(event)
        except (ValueError, RecursionError):
            obj = None
        if type(obj) is not dict:
            done = done or event.strip() == b"[DONE]"
            continue
        first = True
        if model is None and type(obj.get("model")) is str and obj["model"]:
            model = obj["model"]
        if type(obj.get("usage")) is dict:
            usage = usage_from_mapping(obj["usage"])
    return model, usage, first, done


# Pieces that make SSE-shaped garbage: line ends of every kind, field names, JSON fragments
# with and without usage and model, and bytes that are not UTF-8.
FRAGMENTS = [
    b"data:", b"data: ", b"data", b"datax:", b": comment", b"event: x", b"\n", b"\r", b"\r\n",
    b"\n\n", b"{", b"}", b'"usage"', b":", b"null", b'"model"', b'"m1"', b",", b"[DONE]",
    b'{"model":"m2","usage":null}', b'{"usage":{"prompt_tokens":3,"completion_tokens":4}}',
    b'{"usage" : {"prompt_tokens":1}}', b'{"model":""}', b"\x00\xff", b" ", b"1e400",
    # One JSON object over two data lines of one event: a stray line end in between splits it.
    b'data: {"model":\r\ndata: "m3"}\r\n\r\n', b'data: {"usage":\rdata: {"total_tokens":2}}\r\r',
]


@settings(max_examples=500)
@given(
    pieces=st.lists(st.sampled_from(FRAGMENTS), max_size=60),
    cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8),
)
def test_garbage_is_read_as_the_spec_reads_it(pieces: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(pieces)
    obs = SSEUsageObserver(clock=lambda: 1.0)
    start = 0
    for cut in sorted({c % (len(stream) + 1) for c in cuts}) + [len(stream)]:
        obs.feed(stream[start:cut])
        start = cut
    obs.close()
    # An internal error would have been swallowed (the observer is a side tap) and set this.
    assert not obs._failed
    model, usage, first, done = reference_observe(stream)
    assert (obs.model, obs.usage, obs.first_data_at is not None, obs.done) == (
        model, usage, first, done)


def test_hostile_input_never_raises_nor_disables_the_observer() -> None:
    obs = SSEUsageObserver()
    obs.feed(bytes(range(256)) * 10)
    obs.feed(b'data: {"usage":{"prompt_tokens":' + b"[" * 50_000 + b"}}\n\n")
    obs.feed(b'data: {"usage":{"prompt_tokens":"NaN","completion_tokens":1e400}}\n\n')
    obs.close()
    assert not obs._failed
    assert obs.usage == Usage()  # the last usage object, with nothing countable in it


def test_internal_error_disables_the_observer() -> None:
    def broken_clock() -> float:
        raise RuntimeError("boom")

    obs = SSEUsageObserver(clock=broken_clock)
    obs.feed(b'data: {"model":"m"}\n\n')  # must not raise
    obs.feed(b'data: {"model":"m"}\n\n')
    obs.close()
    assert obs.first_data_at is None


def test_null_usage_in_every_chunk_still_reads_the_final_usage() -> None:
    # OpenAI's streams that ask for usage carry `"usage":null` in every chunk: those chunks
    # take the fast path, and the final usage object (spaced or compact) is still read.
    for final in (
        b'data: {"model":"m","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n',
        b'data: {"model":"m","choices":[],"usage" : {"prompt_tokens":3,"completion_tokens":5}}\n\n',
    ):
        obs = SSEUsageObserver()
        obs.feed(b'data: {"model":"m","choices":[],"usage":null}\n\n')
        obs.feed(b'data: {"model":"m","choices":[{"delta":{"content":"x"}}],"usage":null}\n\n')
        obs.feed(final + b"data: [DONE]\n\n")
        assert obs.usage == Usage(input_tokens=3, output_tokens=5)
        assert obs.done and obs.model == "m"
