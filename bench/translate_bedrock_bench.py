"""Micro-benchmark of the Bedrock translators and SigV4 signing, in µs per request / per frame.

    PYTHONPATH=. python bench/translate_bedrock_bench.py [--quick]

The request is already parsed (the proxy parses it once for every LLM route), so the request
figure is the translation and the JSON encoding only. Stream figures are per AWS event-stream
frame fed as the proxy would (whole frames per read), including the CRC checks, parsing and
re-encoding as an SSE chunk. Signing is botocore's SigV4Auth over a built body, with static
credentials: the per-request cost a Bedrock model adds on the proxy side.
"""

from __future__ import annotations

import argparse
import json
import os
import timeit
from collections.abc import Callable

from agw_fast.llm.translate.bedrock import completions_to_bedrock
from agw_fast.llm.translate.bedrock_eventstream import EventStreamDecoder, encode_message

CHAT_REQUEST: dict[str, object] = {
    "model": "anthropic.claude-3-haiku-20240307-v1:0",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the weather like in Paris today? Answer briefly."},
    ],
    "temperature": 0.7,
    "max_tokens": 256,
    "stream": True,
}

TOOL_REQUEST: dict[str, object] = {
    **CHAT_REQUEST,
    "messages": [
        {"role": "user", "content": "Weather in Columbus and Berlin?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": c})}}
            for i, c in enumerate(("Columbus", "Berlin"))]},
        {"role": "tool", "tool_call_id": "call_0", "content": '{"temp": 15}'},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 9}'},
    ],
    "tools": [{"type": "function", "function": {
        "name": "get_weather", "description": "Get the current weather in a location",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]}}}],
    "tool_choice": "auto",
}  # fmt: skip

RESPONSE = json.dumps({
    "output": {"message": {"role": "assistant", "content": [
        {"text": "It is sunny in Paris today, around 24 °C. " * 4}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 21, "outputTokens": 48, "totalTokens": 69},
    "metrics": {"latencyMs": 412},
}).encode()  # fmt: skip

ERROR = b'{"message":"Too many requests, please wait before trying again."}'


def _frame(event: str, doc: object) -> bytes:
    headers = {":event-type": event, ":content-type": "application/json",
               ":message-type": "event"}  # fmt: skip
    return encode_message(headers, json.dumps(doc, separators=(",", ":")).encode())


FRAMES = (
    [_frame("messageStart", {"role": "assistant"})]
    + [_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": f"token {i} "}})
       for i in range(47)]
    + [_frame("messageStop", {"stopReason": "end_turn"}),
       _frame("metadata", {"usage": {"inputTokens": 21, "outputTokens": 47, "totalTokens": 68}})]
)  # fmt: skip


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
    model = str(CHAT_REQUEST["model"])

    bench("request: chat -> Converse", lambda: completions_to_bedrock(CHAT_REQUEST, model), 1,
          quick)  # fmt: skip
    bench("request: tools + results -> Converse",
          lambda: completions_to_bedrock(TOOL_REQUEST, model), 1, quick)  # fmt: skip
    body, translation = completions_to_bedrock(CHAT_REQUEST, model)
    bench("response: Converse -> chat.completion", lambda: translation.response_json(RESPONSE),
          1, quick)  # fmt: skip
    bench("error: Bedrock -> OpenAI", lambda: translation.error_json(429, ERROR), 1, quick)

    def decode_only() -> None:
        decoder = EventStreamDecoder()
        for frame in FRAMES:
            decoder.feed(frame)

    bench("stream: per frame, decode + CRC only", decode_only, len(FRAMES), quick)

    def translated_stream() -> None:
        stream = translation.stream()
        for frame in FRAMES:
            stream.feed(frame)
        stream.finish()

    bench("stream: per frame -> chunk", translated_stream, len(FRAMES), quick)
    try:
        from botocore.credentials import Credentials

        from agw_fast.llm.providers.aws_sigv4 import SigV4Signer
    except ImportError:
        print("sign: botocore not installed (pip install 'agw-fast[bedrock]')")
        return
    signer = SigV4Signer("us-east-1", Credentials("AKIDBENCH", os.urandom(20).hex()))
    target = f"/model/{model}/converse-stream".encode()
    bench("sign: SigV4 (botocore), per request",
          lambda: signer.sign(b"POST", b"bedrock-runtime.us-east-1.amazonaws.com", target, body),
          1, quick)  # fmt: skip


if __name__ == "__main__":
    main()
