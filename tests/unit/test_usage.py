from __future__ import annotations

import json

import pytest

from agw_fast.llm.usage import JSONBodyCollector, Usage, usage_from_json_body, usage_from_mapping

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hé"}}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 5,
            "total_tokens": 17,
            "prompt_tokens_details": {"cached_tokens": 4, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 2},
        },
    }
).encode()
EXPECTED = Usage(
    input_tokens=12, output_tokens=5, total_tokens=17, cached_input_tokens=4, reasoning_tokens=2
)


def test_usage_from_chat_completion() -> None:
    assert usage_from_json_body(COMPLETION) == (EXPECTED, "gpt-4o-mini-2024-07-18")


def test_usage_is_a_value() -> None:
    # Not frozen (one is built per LLM call: a frozen dataclass's __init__ costs ~4x more),
    # but compared by value and never shared between calls.
    assert Usage() == Usage(None, None, None, None, None)
    assert usage_from_mapping({"prompt_tokens": 1}) is not usage_from_mapping({"prompt_tokens": 1})


def test_responses_api_names_are_the_fallback() -> None:
    usage = usage_from_mapping(
        {
            "input_tokens": 7,
            "output_tokens": 3,
            "total_tokens": 10,
            "input_tokens_details": {"cached_tokens": 1},
            "output_tokens_details": {"reasoning_tokens": 0},
        }
    )
    assert usage == Usage(7, 3, 10, 1, 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, Usage()),
        ({"prompt_tokens": True, "completion_tokens": "5"}, Usage()),
        ({"prompt_tokens": -1, "completion_tokens": 2.0}, Usage(output_tokens=2)),
        ({"prompt_tokens": 1.5, "total_tokens": float("inf")}, Usage()),
        ({"prompt_tokens_details": None, "completion_tokens_details": []}, Usage()),
        ({"prompt_tokens_details": {"cached_tokens": None}}, Usage()),
    ],
)
def test_odd_field_values_are_ignored(raw: dict[str, object], expected: Usage) -> None:
    assert usage_from_mapping(raw) == expected


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"garbage",
        b"[1]",
        b'{"usage":null}',
        b'{"usage":[1],"model":5}',
        b"\xff\xfe",
        b"[" * 100_000,
    ],
)
def test_usage_from_bad_bodies_never_raises(body: bytes) -> None:
    assert usage_from_json_body(body) == (None, None)


def test_model_without_usage() -> None:
    assert usage_from_json_body(b'{"model":"m"}') == (None, "m")


def test_collector_in_pieces() -> None:
    collector = JSONBodyCollector(limit=len(COMPLETION))
    for i in range(0, len(COMPLETION), 7):
        collector.feed(COMPLETION[i : i + 7])
    assert collector.collecting
    assert collector.finish() == (EXPECTED, "gpt-4o-mini-2024-07-18")


def test_collector_over_limit_reports_nothing() -> None:
    collector = JSONBodyCollector(limit=len(COMPLETION) - 1)
    collector.feed(COMPLETION[:10])
    collector.feed(COMPLETION[10:])
    assert not collector.collecting
    assert collector.finish() == (None, None)
    collector.feed(b"more")  # ignored after overflow
    assert collector.finish() == (None, None)


def test_collector_empty_feeds_and_stop() -> None:
    collector = JSONBodyCollector(limit=100)
    assert collector.finish() == (None, None)
    collector = JSONBodyCollector(limit=100)
    collector.feed(b"")
    collector.feed(b'{"model":"m","usage":{"prompt_tokens":1}}')
    assert collector.finish() == (Usage(input_tokens=1), "m")
    collector = JSONBodyCollector(limit=100)
    collector.feed(b'{"model":"m","usage":{"prompt_tokens":1}}')
    collector.stop()
    assert not collector.collecting
    assert collector.finish() == (None, None)
