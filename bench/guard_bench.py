"""Micro-benchmark of the guardrails, in µs per operation.

    python -m bench.guard_bench [--number N]

Per request: the request guards' run over a chat completion (a system prompt and four turns,
~1.3 KB of text) with agentgateway's builtins, rejecting or masking; per response: a JSON
completion masked. Per SSE event: a chat completion stream (~10 characters per delta, as
providers send them) through the window scanner, against the same stream relayed with only
the usage observer (what a route without guards pays on the translated relay). The phone
detector validates candidates with libphonenumber, so its cost depends on how many digit
runs the text has; the text here has one phone number and no other digits.
"""

from __future__ import annotations

import argparse
import json
import timeit
from collections.abc import Callable
from pathlib import Path

from agw_fast.config import load_config
from agw_fast.llm.guardrails import Endpoint, GuardPipeline, compile_pipeline

__all__ = ["main"]

_ENDPOINT = Endpoint("127.0.0.1", 9, b"127.0.0.1:9", b"/v1/moderations", None, "bench")
_PROSE = (
    "The weather in the mountains changes quickly, so pack layers and check the forecast "
    "before you leave. Trails above the tree line are exposed to wind and sun. "
)
PROMPT = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a helpful hiking assistant. " * 4},
        {"role": "user", "content": _PROSE * 2},
        {"role": "assistant", "content": _PROSE},
        {"role": "user", "content": _PROSE * 2 + "Reach me at 415-555-0132."},
        {"role": "assistant", "content": _PROSE},
    ],
}
REPLY = _PROSE * 4 + "Call the ranger station at 415-555-0132 before you go. " + _PROSE * 4


def _pipeline(guards: str) -> GuardPipeline:
    text = "llm:\n  models:\n  - name: m\n    provider: openAI\n    guardrails:\n" + "".join(
        f"      {line}\n" for line in guards.splitlines()
    )
    config = load_config(text, {}, base_dir=Path("."))
    model = config.binds[0].listeners[0].routes[0].backends[0].target.models[0]  # type: ignore[union-attr]
    assert model.guardrails is not None
    pipeline = compile_pipeline(model.guardrails, _ENDPOINT)
    assert pipeline is not None
    return pipeline


def _request_case(pipeline: GuardPipeline) -> Callable[[], object]:
    body = json.dumps(PROMPT).encode()

    def run() -> object:
        obj = json.loads(body)  # each run masks its own copy, as each request does
        guard_run = pipeline.start("completions", obj, [], dict, [])
        assert guard_run is not None
        return guard_run.advance()

    return run


def _parse_only() -> object:
    return json.loads(json.dumps(PROMPT).encode())


def _stream_events(text: str, size: int = 10) -> list[bytes]:
    events = []
    for i in range(0, len(text), size):
        doc = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1,
               "model": "gpt-4o-mini",
               "choices": [{"index": 0, "delta": {"content": text[i : i + size]},
                            "finish_reason": None}]}  # fmt: skip
        events.append(b"data: " + json.dumps(doc).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _stream_case(pipeline: GuardPipeline | None, events: list[bytes]
                 ) -> tuple[Callable[[], object], int]:
    translation = (
        pipeline.wrap(None, "completions", [])
        if pipeline is not None
        else _pipeline("streaming: Disabled\nresponse:\n- regex: {rules: [{pattern: x}]}\n").wrap(
            None, "completions", []
        )
    )
    assert translation is not None

    def run() -> object:
        stream = translation.stream()
        feed = stream.feed
        for event in events:
            feed(event)
        return stream.finish()

    return run, len(events)


def cases() -> dict[str, tuple[Callable[[], object], int]]:
    builtins = "[{builtin: ssn}, {builtin: creditCard}, {builtin: email}, {builtin: caSin}]"
    reject_builtins = _pipeline(f"request:\n- regex: {{action: reject, rules: {builtins}}}\n")
    mask_builtins = _pipeline(f"request:\n- regex: {{rules: {builtins}}}\n")
    phone = _pipeline("request:\n- regex: {rules: [{builtin: phoneNumber}]}\n")
    pattern = _pipeline("request:\n- regex: {action: reject, rules: [{pattern: 'SSN|secret'}]}\n")
    response = _pipeline("response:\n- regex: {rules: [{builtin: phoneNumber}]}\n")
    completion = json.dumps({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": REPLY},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 200, "total_tokens": 500},
    }).encode()  # fmt: skip
    json_guard = response.wrap(None, "completions", [])
    assert json_guard is not None
    events = _stream_events(REPLY)
    stream_mask = _pipeline(
        "streaming: Enabled\nresponse:\n- regex: {rules: [{builtin: phoneNumber}]}\n"
    )
    stream_reject = _pipeline(
        "streaming: Enabled\nresponse:\n- regex: {action: reject, rules: [{pattern: forbidden}]}"
    )
    stream_builtins = _pipeline(f"streaming: Enabled\nresponse:\n- regex: {{rules: {builtins}}}\n")
    return {
        "request: parse only (baseline, not a guard)": (_parse_only, 1),
        "request: parse + custom pattern, reject": (_request_case(pattern), 1),
        "request: parse + 4 builtins, reject": (_request_case(reject_builtins), 1),
        "request: parse + 4 builtins, mask": (_request_case(mask_builtins), 1),
        "request: parse + phoneNumber, mask (1 hit)": (_request_case(phone), 1),
        "response JSON: phoneNumber mask (1 hit)": (
            lambda: json_guard.response_json(completion), 1
        ),
        "stream: usage observer only, per event": _stream_case(None, events),
        "stream: custom pattern reject, per event": _stream_case(stream_reject, events),
        "stream: 4 builtins mask, per event": _stream_case(stream_builtins, events),
        "stream: phoneNumber mask, per event": _stream_case(stream_mask, events),
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
