"""Micro-benchmark of the Responses -> chat completions translator, in µs per operation.

    python -m bench.translate_responses_bench [--number N]

Request translation (parsed Responses body -> chat completions body bytes), whole-response
translation (chat.completion -> Responses object), and stream translation per SSE event
(chat chunks -> Responses events), in the style of bench/translate_bench.py. Stream cases
feed one event per `feed` call; the payloads are agentgateway's fixtures
(tests/data/agentgateway-llm).
"""

from __future__ import annotations

import argparse
import timeit
from collections.abc import Callable

from agw_fast.llm.translate.responses import responses_to_completions
from bench.translate_bench import DATA, _events, _json, _stream_case

__all__ = ["main"]


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    basic = _json("requests/responses/basic.json")
    tools = _json("requests/responses/parallel-tool-call.json")
    text_body = (DATA / "response/completions/basic.json").read_bytes()
    tool_body = (DATA / "response/completions/tool_call.json").read_bytes()
    back = responses_to_completions({"model": "m", "input": "x"})[1]
    text_stream = _events("response/completions/stream.json")
    tool_stream = _events("response/completions/stream_tool_empty_content.json")
    return {
        "request responses->chat (basic)": (lambda: responses_to_completions(basic), 1),
        "request responses->chat (tool history)": (lambda: responses_to_completions(tools), 1),
        "response chat->responses (text)": (lambda: back.response_json(text_body), 1),
        "response chat->responses (tool calls)": (lambda: back.response_json(tool_body), 1),
        "stream chat->responses text, per event": _stream_case(back.stream, text_stream),
        "stream chat->responses tool, per event": _stream_case(back.stream, tool_stream),
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
