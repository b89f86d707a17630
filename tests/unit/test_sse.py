from __future__ import annotations

import random

import pytest

from agw_fast.llm.sse import SSEUsageObserver
from agw_fast.llm.usage import Usage


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


def test_garbage_never_raises() -> None:
    rng = random.Random(99)
    alphabet = b'data: {}[]"usage"model:\r\n\x00\xff,1'
    for _ in range(300):
        obs = SSEUsageObserver(max_event_size=64)
        blob = bytes(rng.choice(alphabet) for _ in range(rng.randrange(400)))
        i = 0
        while i < len(blob):
            step = rng.randrange(1, 40)
            obs.feed(blob[i : i + step])
            i += step
        obs.close()
    obs = SSEUsageObserver()
    obs.feed(bytes(range(256)) * 10)
    obs.feed(b'data: {"usage":{"prompt_tokens":' + b"[" * 50_000 + b"}}\n\n")
    obs.feed(b'data: {"usage":{"prompt_tokens":"NaN","completion_tokens":1e400}}\n\n')
    obs.close()


def test_internal_error_disables_the_observer() -> None:
    def broken_clock() -> float:
        raise RuntimeError("boom")

    obs = SSEUsageObserver(clock=broken_clock)
    obs.feed(b'data: {"model":"m"}\n\n')  # must not raise
    obs.feed(b'data: {"model":"m"}\n\n')
    obs.close()
    assert obs.first_data_at is None
