"""Micro-benchmark of the Gemini translators, in µs per request / per SSE event.

    PYTHONPATH=. python bench/translate_gemini_bench.py [--quick]

The request is already parsed (the proxy parses it once for every LLM route), so the request
figure is the translation and the JSON encoding only. Stream figures are per Gemini event fed
as the proxy would (whole events per read), including SSE splitting, parsing and re-encoding.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable

from agw_fast.llm.translate.gemini import completions_to_gemini, gemini_passthrough

CHAT_REQUEST: dict[str, object] = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather like in Paris today? Answer briefly."},
    ],
    "temperature": 0.7,
    "max_tokens": 256,
    "stream": True,
}

TOOL_REQUEST: dict[str, object] = {
    "model": "gemini-2.5-flash",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Weather in Columbus and Berlin?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": f"call_{i}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": c})},
                }
                for i, c in enumerate(("Columbus", "Berlin"))
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 9}'},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 15}'},
    ],
    "tools": [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Get the current weather in a location",
                "parameters": {
                    "type": "object",
                    "properties": {
                        "city": {"type": "string"},
                        "unit": {"anyOf": [{"enum": ["c", "f"]}, {"type": "null"}]},
                    },
                    "required": ["city"],
                    "additionalProperties": False,
                },
            },
        }
    ],
    "tool_choice": "auto",
}

RESPONSE = json.dumps(
    {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [{"text": "It is sunny in Paris today, around 24 °C. " * 4}],
                },
                "finishReason": "STOP",
                "index": 0,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 21,
            "candidatesTokenCount": 48,
            "thoughtsTokenCount": 120,
            "totalTokenCount": 189,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "x4bXaL3HJ8mD1MkPqqn5kQ8",
    }
).encode()

ERROR = (
    b'{"error":{"code":429,"message":"Resource has been exhausted","status":"RESOURCE_EXHAUSTED"}}'
)


def _stream_events(n: int) -> list[bytes]:
    events = []
    for i in range(n):
        chunk: dict[str, object] = {
            "candidates": [{"content": {"role": "model", "parts": [{"text": f"token {i} "}]}}],
            "usageMetadata": {"promptTokenCount": 21, "totalTokenCount": 21 + i},
            "modelVersion": "gemini-2.5-flash",
            "responseId": "x4bXaL3HJ8mD1MkPqqn5kQ8",
        }
        if i == n - 1:
            chunk["candidates"][0]["finishReason"] = "STOP"  # type: ignore[index]
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\r\n\r\n")
    return events


EVENTS = _stream_events(50)


def bench(name: str, fn: Callable[[], object], per_call: int, quick: bool) -> None:
    timer = timeit.Timer(fn)
    number, _ = timer.autorange()
    repeat = 3 if quick else 7
    best = min(timer.repeat(repeat=repeat, number=number)) / number
    print(f"{name:<44} {best / per_call * 1e6:8.2f} µs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    quick = parser.parse_args().quick

    bench("request: chat -> generateContent", lambda: completions_to_gemini(CHAT_REQUEST), 1, quick)
    bench(
        "request: tools + results -> generateContent",
        lambda: completions_to_gemini(TOOL_REQUEST),
        1,
        quick,
    )
    _, translation = completions_to_gemini(CHAT_REQUEST)
    bench(
        "response: generateContent -> chat.completion",
        lambda: translation.response_json(RESPONSE),
        1,
        quick,
    )
    bench("error: Google -> OpenAI", lambda: translation.error_json(429, ERROR), 1, quick)

    def translated_stream() -> None:
        stream = translation.stream()
        for event in EVENTS:
            stream.feed(event)
        stream.finish()

    bench("stream: per Gemini event -> chunk", translated_stream, len(EVENTS), quick)
    passthrough = gemini_passthrough()

    def passthrough_stream() -> None:
        stream = passthrough.stream()
        for event in EVENTS:
            stream.feed(event)
        stream.finish()

    bench("stream: per event, native passthrough", passthrough_stream, len(EVENTS), quick)
    bench(
        "response: native passthrough (usage)",
        lambda: passthrough.response_json(RESPONSE),
        1,
        quick,
    )


if __name__ == "__main__":
    main()
