"""Micro-benchmark of the Anthropic translators, in µs per operation.

    python -m bench.translate_bench [--number N]

Request translation (parsed client body -> provider body bytes), whole-response translation,
and stream translation per SSE event, both directions, plus the Anthropic passthrough reader.
Stream cases feed one event per `feed` call, as a provider's reads mostly arrive. The
payloads are agentgateway's fixtures (tests/data/agentgateway-llm) so the numbers match
real shapes.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from pathlib import Path

from agw_fast.llm.translate.anthropic import (
    completions_to_messages,
    messages_passthrough,
    messages_to_completions,
)

__all__ = ["main"]

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "agentgateway-llm"


def _json(path: str) -> dict[str, object]:
    obj = json.loads((DATA / path).read_text())
    assert isinstance(obj, dict)
    return obj


def _events(path: str) -> list[bytes]:
    """The stream's events, each with its blank line, as separate reads."""
    text = (DATA / path).read_bytes()
    return [part + b"\n\n" for part in text.split(b"\n\n") if part.strip()]


def _stream_case(
    make: Callable[[], object], events: list[bytes]
) -> tuple[Callable[[], object], int]:
    def run() -> object:
        stream = make()
        feed = stream.feed  # type: ignore[attr-defined]
        for event in events:
            feed(event)
        return stream.finish()  # type: ignore[attr-defined]

    return run, len(events)


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    chat_request = _json("requests/completions/full.json")
    tools_request = _json("requests/completions/tool-call.json")
    messages_request = _json("requests/messages/cache_control.json")
    anthropic_body = (DATA / "response/anthropic/tool.json").read_bytes()
    chat_body = (DATA / "response/completions/tool_call.json").read_bytes()
    to_chat = completions_to_messages({"messages": []})[1]
    to_messages = messages_to_completions({"max_tokens": 1, "messages": []})[1]
    passthrough = messages_passthrough({})[1]
    anthropic_stream = _events("response/anthropic/stream_thinking.json")
    chat_stream = _events("response/completions/stream.json")
    return {
        "request chat->messages (full)": (lambda: completions_to_messages(chat_request), 1),
        "request chat->messages (tool calls)": (lambda: completions_to_messages(tools_request), 1),
        "request messages->chat (cache_control)": (
            lambda: messages_to_completions(messages_request),
            1,
        ),
        "response anthropic->chat (tool)": (lambda: to_chat.response_json(anthropic_body), 1),
        "response chat->anthropic (tool calls)": (lambda: to_messages.response_json(chat_body), 1),
        "stream anthropic->chat, per event": _stream_case(to_chat.stream, anthropic_stream),
        "stream chat->anthropic, per event": _stream_case(to_messages.stream, chat_stream),
        "stream anthropic passthrough, per event": _stream_case(
            passthrough.stream, anthropic_stream
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    args = parser.parse_args()
    for name, (fn, ops) in cases().items():
        number = max(args.number // ops, 20)
        best = min(timeit.repeat(fn, number=number, repeat=5))
        print(f"{name:45s} {best / number / ops * 1e6:8.2f} µs")


if __name__ == "__main__":
    main()
