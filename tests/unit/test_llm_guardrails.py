"""Guardrails, sans-IO: the regex engine and builtins (agentgateway's cases), where each API
keeps its text, the request run, response guards on JSON, and the stream scanner (patterns
split at every byte and event boundary, bounded memory)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config import load_config
from agw_fast.config.load_guardrails import merge_prompt_guards
from agw_fast.config.model import DEFAULT_REJECTION_BODY, PromptGuard
from agw_fast.errors import ConfigError
from agw_fast.llm.guardrails import (
    Endpoint,
    GuardCall,
    GuardPipeline,
    GuardRejected,
    compile_pipeline,
)
from agw_fast.llm.guardrails.content import request_messages, request_slots, response_texts
from agw_fast.llm.guardrails.regex import PatternDetector, RegexMatcher, builtin_detector
from agw_fast.llm.guardrails.stream import HELD_LIMIT, OVERLAP, THRESHOLD, StreamScanner
from agw_fast.telemetry.metrics import MetricsRegistry, Snapshot
from agw_fast.telemetry.prometheus import render_prometheus
from agw_fast.telemetry.shared_slots import SharedSlots

MODERATION = Endpoint("127.0.0.1", 9, b"127.0.0.1:9", b"/v1/moderations", None, "test")


def _mask(*detectors: Any) -> RegexMatcher:
    return RegexMatcher("mask", list(detectors))


# -- the regex engine: agentgateway's test cases (llm/policy/mod.rs) --------------------------


@pytest.mark.parametrize(
    ("detectors", "text", "expected"),
    [
        (["email"], "contact john.doe@example.com now", "contact <EMAIL_ADDRESS> now"),
        (["email"], "contact john@example.com or jane@other.com for help",
         "contact <EMAIL_ADDRESS> or <EMAIL_ADDRESS> for help"),
        (["ssn"], "My ssn is 123-45-6789 ok", "My ssn is <SSN> ok"),
        (["creditCard", r"re:\d{2}"], "Card number: 4111-1111-1111-1111 or id:12-34",
         "Card number: <CREDIT_CARD> or id:<masked>-<masked>"),
        (["caSin"], "SIN 046 454 286 here", "SIN <CA_SIN> here"),
        (["phoneNumber"], "call 415-555-0132 now", "call <PHONE_NUMBER>now"),
        (["phoneNumber"], "dial +44 20 7946 0958", "dial <PHONE_NUMBER>"),
    ],
)  # fmt: skip
def test_mask_matches_agentgateway(detectors: list[str], text: str, expected: str) -> None:
    built = [
        PatternDetector(d[3:]) if d.startswith("re:") else builtin_detector(d) for d in detectors
    ]
    assert _mask(*built).mask(text) == expected


def test_reject_on_pattern_and_builtin() -> None:
    assert RegexMatcher("reject", [PatternDetector(r"\d{2}")]).rejects("id:12")
    assert RegexMatcher("reject", [builtin_detector("email")]).rejects("a john.doe@example.com")
    assert not RegexMatcher("reject", [builtin_detector("email")]).rejects("no mail here")


def test_zero_width_matches_mask_nothing() -> None:
    assert _mask(PatternDetector("a*")).mask("bbb") is None


def test_invalid_phone_numbers_are_left_alone() -> None:
    # Digit runs that look like numbers but no region's plan accepts (libphonenumber decides).
    assert _mask(builtin_detector("phoneNumber")).mask("order 000-0000, id 1111111") is None


def test_patterns_use_rust_semantics() -> None:
    # \d is Unicode in Rust's regex: Arabic-Indic digits count.
    assert _mask(PatternDetector(r"\d{3}")).mask("x ٣٤٥ y") == "x <masked> y"


def test_a_later_rule_matching_a_placeholder_takes_its_text() -> None:
    matcher = _mask(PatternDetector("ab"), PatternDetector("<masked>c"))
    assert matcher.mask("xabcx abd") == "x<masked>x <masked>d"


# -- where the text is ------------------------------------------------------------------------


def test_completions_scopes() -> None:
    obj = {"messages": [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"},
                                     {"type": "image_url", "image_url": {}}]},
        {"role": "assistant", "tool_calls": [{"function": {"arguments": "{\"q\":\"x\"}"}}]},
        {"role": "tool", "content": "result"},
    ]}  # fmt: skip
    slots = [(s.scope, s.text) for s in request_slots("completions", obj)]
    assert slots == [("systemPrompt", "sys"), ("messages", "a b"),
                     ("toolInput", "{\"q\":\"x\"}"), ("toolOutput", "result")]  # fmt: skip


def test_a_masked_run_collapses_into_its_last_part() -> None:
    config = _guard_config("request:\n- regex:\n    rules: [{pattern: 'a b'}]\n")
    pipeline = compile_pipeline(config, MODERATION)
    assert pipeline is not None
    obj: dict[str, Any] = {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b", "cache_control": {}}]}]}
    run = pipeline.start("completions", obj, [], dict, [])
    assert run is not None and run.advance() is None and run.changed
    assert obj["messages"][0]["content"] == [
        {"type": "text", "text": "<masked>", "cache_control": {}}
    ]


def test_messages_and_responses_slots() -> None:
    messages = {"system": [{"type": "text", "text": "s1"}], "messages": [
        {"role": "user", "content": [{"type": "tool_result", "content": "out"},
                                     {"type": "text", "text": "hi"}]}]}  # fmt: skip
    assert [(s.scope, s.text) for s in request_slots("messages", messages)] == [
        ("systemPrompt", "s1"), ("toolOutput", "out"), ("messages", "hi")]
    responses = {"instructions": "be nice", "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "q"}]},
        {"type": "function_call_output", "output": "o"}]}  # fmt: skip
    assert [(s.scope, s.text) for s in request_slots("responses", responses)] == [
        ("systemPrompt", "be nice"), ("messages", "q"), ("toolOutput", "o")]
    assert request_messages("responses", responses) == [
        {"role": "system", "content": "be nice"}, {"role": "user", "content": "q"}]


def test_response_texts_per_format() -> None:
    assert [t.text for t in response_texts("completions", {"choices": [
        {"message": {"content": "c"}}]})] == ["c"]  # fmt: skip
    assert [t.text for t in response_texts("messages", {"content": [
        {"type": "text", "text": "m"}, {"type": "tool_use"}]})] == ["m"]  # fmt: skip
    assert [t.text for t in response_texts("responses", {"output": [
        {"type": "message", "content": [{"type": "output_text", "text": "r"}]}]})] == ["r"]


# -- config -----------------------------------------------------------------------------------


def _guard_config(body: str) -> PromptGuard:
    text = "llm:\n  models:\n  - name: m\n    provider: openAI\n    guardrails:\n" + "".join(
        f"      {line}\n" for line in body.splitlines()
    )
    config = load_config(text, {}, base_dir=Path("."))
    guards = config.binds[0].listeners[0].routes[0].backends[0].target.models[0].guardrails  # type: ignore[union-attr]
    assert guards is not None
    return guards


def test_config_defaults() -> None:
    guards = _guard_config("request:\n- regex:\n    rules: [{builtin: ssn}]\n")
    (guard,) = guards.request
    assert guard.regex is not None and guard.regex.action == "mask"  # agentgateway's default
    assert guard.rejection.status == 403 and guard.rejection.body == DEFAULT_REJECTION_BODY
    assert guard.scope == {"systemPrompt", "messages"}
    assert not guards.streaming


def test_config_rejection_body_as_bytes_and_headers() -> None:
    guards = _guard_config(
        "request:\n- regex: {rules: [{pattern: x}]}\n  rejection:\n    status: 451\n"
        "    body: [104, 105]\n    headers: {set: {x-a: b}}\n"
    )
    rejection = guards.request[0].rejection
    assert (rejection.status, rejection.body) == (451, b"hi")


@pytest.mark.parametrize(
    ("body", "path", "message"),
    [
        ("request:\n- regex: {rules: [{pattern: x}]}\n  scope: []\n",
         "request[0].scope", "must not be empty"),
        ("request:\n- webhook: {target: {host: 'h:1'}}\n  scope: [toolOutput]\n",
         "request[0].scope", "only regex"),
        ("request:\n- regex: {rules: [{pattern: '(?=x)'}]}\n",
         "request[0].regex.rules[0].pattern", "look-around"),
        ("request:\n- regex: {rules: [{builtin: iban}]}\n",
         "request[0].regex.rules[0].builtin", "expected one of"),
        ("request:\n- regex: {rules: [{builtin: ssn, pattern: x}]}\n",
         "request[0].regex.rules[0]", "exactly one"),
        ("streaming: enabled\n", "streaming", "expected one of"),
        ("response:\n- openAIModeration: {}\n", "response[0].openAIModeration", "unknown field"),
        ("request:\n- regex: {rules: []}\n  webhook: {target: {host: 'h:1'}}\n",
         "request[0]", "exactly one"),
    ],
)  # fmt: skip
def test_config_refusals_by_path(body: str, path: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        _guard_config(body)
    assert info.value.path == f"llm.models[0].guardrails.{path}"
    assert message in str(info.value)


def test_merge_prompt_guards() -> None:
    shared = _guard_config("request:\n- regex: {rules: [{pattern: a}]}\n")
    model = _guard_config("streaming: Enabled\nresponse:\n- regex: {rules: [{pattern: b}]}\n")
    merged = merge_prompt_guards(shared, model)
    assert merged is not None and merged.streaming
    assert (len(merged.request), len(merged.response)) == (1, 1)
    assert merge_prompt_guards(None, model) is model


# -- the request run --------------------------------------------------------------------------


def _pipeline(body: str) -> GuardPipeline:
    pipeline = compile_pipeline(_guard_config(body), MODERATION)
    assert pipeline is not None
    return pipeline


def test_request_guards_run_in_order_and_mask_for_the_next() -> None:
    pipeline = _pipeline(
        "request:\n- regex: {rules: [{builtin: email}]}\n"
        "- regex: {action: reject, rules: [{pattern: 'EMAIL_ADDRESS'}]}\n"
    )
    checks: list[tuple[str, str]] = []
    obj: dict[str, Any] = {"messages": [{"role": "user", "content": "to a@b.co"}]}
    run = pipeline.start("completions", obj, [], dict, checks)
    assert run is not None
    rejection = run.advance()
    assert rejection is not None and rejection.status == 403
    assert checks == [("Request", "Mask"), ("Request", "Reject")]


def test_tool_output_is_out_of_the_default_scope() -> None:
    pipeline = _pipeline("request:\n- regex: {action: reject, rules: [{builtin: ssn}]}\n")
    obj = {"messages": [{"role": "tool", "content": "123-45-6789"}]}
    run = pipeline.start("completions", obj, [], dict, [])
    assert run is not None and run.advance() is None
    scoped = _pipeline(
        "request:\n- regex: {action: reject, rules: [{builtin: ssn}]}\n  scope: [toolOutput]\n"
    )
    run = scoped.start("completions", obj, [], dict, [])
    assert run is not None and run.advance() is not None


def test_route_types_without_a_prompt_are_not_guarded() -> None:
    pipeline = _pipeline("request:\n- regex: {action: reject, rules: [{pattern: x}]}\n")
    assert pipeline.start("embeddings", {"input": "x"}, [], dict, []) is None


def _webhook_run(body: str, checks: list[tuple[str, str]]) -> tuple[Any, GuardCall]:
    pipeline = _pipeline(body)
    obj = {"messages": [{"role": "user", "content": "my secret"}]}
    run = pipeline.start("completions", obj, [(b"x-t", b"acme")], dict, checks)
    assert run is not None
    call = run.advance()
    assert isinstance(call, GuardCall)
    return run, call


def test_webhook_call_shape_and_mask_answer() -> None:
    checks: list[tuple[str, str]] = []
    run, call = _webhook_run(
        "request:\n- webhook:\n    target: {host: '127.0.0.1:9'}\n"
        "    forwardHeaderMatches: [{name: x-t, value: {exact: acme}}]\n", checks,
    )  # fmt: skip
    head, _, body = call.request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /request HTTP/1.1\r\nhost: 127.0.0.1:9\r\n")
    assert b"\r\nx-t: acme\r\n" in head and call.timeout == 10.0
    assert json.loads(body) == {"body": {"messages": [{"role": "user", "content": "my secret"}]}}
    answer = {"action": {"body": {"messages": [{"role": "user", "content": "my ***"}]}}}
    assert run.answer(200, json.dumps(answer).encode()) is None
    assert run.advance() is None and run.changed
    assert run.prompt.obj["messages"] == [{"role": "user", "content": "my ***"}]
    assert checks == [("Request", "Mask")]


def test_webhook_failure_modes() -> None:
    checks: list[tuple[str, str]] = []
    run, _ = _webhook_run("request:\n- webhook: {target: {host: '127.0.0.1:9'}}\n", checks)
    assert run.failed() is False and checks == []  # fails closed, uncounted (agentgateway)
    run, _ = _webhook_run(
        "request:\n- webhook: {target: {host: '127.0.0.1:9'}, failureMode: failOpen}\n", checks
    )
    assert run.failed() is True and run.advance() is None
    assert checks == [("Request", "FailOpen")]


def test_moderation_call_and_flag() -> None:
    pipeline = _pipeline(
        "request:\n- openAIModeration: {model: m1, policies: {backendAuth: {key: sk}}}\n"
    )
    run = pipeline.start("completions", {"messages": [{"role": "user", "content": "hi"}]},
                         [], dict, [])  # fmt: skip
    assert run is not None
    call = run.advance()
    assert isinstance(call, GuardCall)
    head, _, body = call.request.partition(b"\r\n\r\n")
    assert head.startswith(b"POST /v1/moderations HTTP/1.1\r\n")
    assert b"\r\nauthorization: Bearer sk\r\n" in head
    assert json.loads(body) == {"input": ["hi"], "model": "m1"}
    rejection = run.answer(200, b'{"results":[{"flagged":false},{"flagged":true}]}')
    assert rejection is not None and rejection.body == DEFAULT_REJECTION_BODY


# -- response guards on JSON ------------------------------------------------------------------


def test_json_response_masked_and_rejected() -> None:
    completion = {"choices": [{"message": {"role": "assistant", "content": "ssn 123-45-6789"}}],
                  "usage": {"prompt_tokens": 1, "completion_tokens": 2}}  # fmt: skip
    body = json.dumps(completion).encode()
    checks: list[tuple[str, str]] = []
    masking = _pipeline("response:\n- regex: {rules: [{builtin: ssn}]}\n")
    translation = masking.wrap(None, "completions", checks)
    assert translation is not None
    out, usage, _ = translation.response_json(body)
    assert json.loads(out)["choices"][0]["message"]["content"] == "ssn <SSN>"
    assert usage is not None and usage.output_tokens == 2
    assert checks == [("Response", "Mask")]
    rejecting = _pipeline(
        "response:\n- regex: {action: reject, rules: [{builtin: ssn}]}\n"
        "  rejection: {status: 502, body: nope}\n"
    )
    translation = rejecting.wrap(None, "completions", [])
    assert translation is not None
    with pytest.raises(GuardRejected) as info:
        translation.response_json(body)
    assert info.value.rejection.status == 502 and info.value.rejection.body == b"nope"


# -- the stream scanner -----------------------------------------------------------------------

PHONE = "415-555-0132"


def _sse(text: str) -> bytes:
    doc = {"choices": [{"index": 0, "delta": {"content": text}}]}
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def _text(out: bytes) -> str:
    return "".join(
        json.loads(line[6:])["choices"][0]["delta"]["content"]
        for line in out.split(b"\n") if line.startswith(b"data: {\"choices\"")
    )  # fmt: skip


def _run(scanner: StreamScanner, stream: bytes, cuts: list[int]) -> bytes:
    out = []
    at = 0
    for cut in [*cuts, len(stream)]:
        out.append(scanner.feed(stream[at:cut]))
        at = cut
    out.append(scanner.finish())
    return b"".join(out)


def test_a_phone_number_split_at_every_byte_boundary_is_masked() -> None:
    text = "x" * 300 + f" call {PHONE} now " + "y" * 300
    stream = b"".join(_sse(text[i : i + 9]) for i in range(0, len(text), 9)) + b"data: [DONE]\n\n"
    phone_at = stream.find(b"415")
    for cut in range(max(0, phone_at - 200), min(len(stream), phone_at + 200)):
        scanner = StreamScanner("completions", _mask(builtin_detector("phoneNumber")), [])
        out = _run(scanner, stream, [cut])
        assert _text(out) == text.replace(f"{PHONE} ", "<PHONE_NUMBER>"), cut
        assert out.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize("size", range(1, 16))
def test_a_pattern_split_at_every_event_boundary_is_masked(size: int) -> None:
    text = "hello " * 60 + "SECRET-TOKEN-42" + " bye" * 80
    stream = b"".join(_sse(text[i : i + size]) for i in range(0, len(text), size))
    for offset in range(size):  # shift where the pattern starts within an event
        shifted = "z" * offset + text
        stream = b"".join(_sse(shifted[i : i + size]) for i in range(0, len(shifted), size))
        scanner = StreamScanner("completions", _mask(PatternDetector(r"SECRET-TOKEN-\d+")), [])
        out = _run(scanner, stream, [])
        assert _text(out) == shifted.replace("SECRET-TOKEN-42", "<masked>")
        assert scanner.masked


def test_text_is_released_while_the_stream_runs_and_memory_is_bounded() -> None:
    scanner = StreamScanner("completions", _mask(builtin_detector("email")), [])
    released = 0
    for _ in range(2000):  # 20 000 characters, nothing to mask
        released += len(_text(scanner.feed(_sse("0123456789"))))
        held = scanner._held_text  # noqa: SLF001 - the bound under test
        assert held <= THRESHOLD + OVERLAP + 10
    assert released >= 20000 - (THRESHOLD + OVERLAP + 10)
    assert HELD_LIMIT > THRESHOLD + OVERLAP


def test_held_text_is_bounded_even_when_a_match_keeps_growing() -> None:
    scanner = StreamScanner("completions", _mask(PatternDetector(r"\d+")), [])
    for _ in range(20000):
        scanner.feed(_sse("0123456789"))
        assert scanner._held_text <= HELD_LIMIT + 10  # noqa: SLF001


def test_a_rejection_drops_what_is_held_and_ends_with_the_error_event() -> None:
    reject = RegexMatcher("reject", [PatternDetector("forbidden")])
    scanner = StreamScanner("completions", None, [(reject, b"blocked!")])
    text = "fine words. " * 40 + "forb" + "idden" + " more" * 10
    out = b""
    for i in range(0, len(text), 4):
        out += scanner.feed(_sse(text[i : i + 4]))
    out += scanner.feed(b"data: [DONE]\n\n") + scanner.finish()
    assert scanner.ended and scanner.rejected_by == 0
    assert "forb" not in _text(out) and text.startswith(_text(out))
    last = out.rstrip(b"\n").rsplit(b"\n\n", 1)[-1]
    assert json.loads(last[6:]) == {"error": {
        "type": "guardrail_blocked", "code": "guardrail_intervention", "message": "blocked!"}}
    assert b"[DONE]" not in out


def test_events_without_text_pass_at_once_and_keep_their_order() -> None:
    scanner = StreamScanner("completions", _mask(builtin_detector("email")), [])
    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant"}}]}\n\n'
    assert scanner.feed(role) == role  # nothing held: straight through
    assert scanner.feed(_sse("hi")) == b""  # held (under the threshold)
    assert scanner.feed(role) == b""  # waits behind the held text
    assert scanner.finish() == _sse("hi") + role


def test_anthropic_and_responses_streams() -> None:
    scanner = StreamScanner("messages", _mask(builtin_detector("ssn")), [])
    event = {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "ssn 123-45-6789"}}  # fmt: skip
    out = scanner.feed(b"event: content_block_delta\ndata: " + json.dumps(event).encode()
                       + b"\n\n") + scanner.finish()  # fmt: skip
    assert out.startswith(b"event: content_block_delta\ndata: ")
    assert json.loads(out.split(b"data: ")[1])["delta"]["text"] == "ssn <SSN>"
    scanner = StreamScanner("responses", _mask(builtin_detector("ssn")), [])
    done = {"type": "response.output_text.done", "text": "ssn 123-45-6789"}
    out = scanner.feed(b"event: response.output_text.done\ndata: " + json.dumps(done).encode()
                       + b"\n\n")  # fmt: skip
    assert json.loads(out.split(b"data: ")[1])["text"] == "ssn <SSN>"


# -- the metric -------------------------------------------------------------------------------


def test_guardrail_checks_are_summed_over_workers_and_rendered() -> None:
    slots = SharedSlots(2, 64 * 1024)
    for index, actions in ((0, ["Allow", "Reject"]), (1, ["Reject"])):
        registry = MetricsRegistry(slots.writer(index))
        for action in actions:
            registry.record_guardrail("Request", action)
    registry = MetricsRegistry(slots.writer(1))  # a replacement worker continues the slot
    registry.record_guardrail("Response", "Mask")
    total = Snapshot.merge(slots.read_all())
    assert total.guardrails == {
        ("Request", "Allow"): 1, ("Request", "Reject"): 2, ("Response", "Mask"): 1,
    }  # fmt: skip
    text = render_prometheus(slots.read_all()).decode()
    assert "# TYPE agentgateway_guardrail_checks_total counter" in text
    assert 'agentgateway_guardrail_checks_total{phase="Request",action="Reject"} 2' in text
    slots.close()


@pytest.mark.parametrize("name", ["ssn", "creditCard", "caSin"])
def test_the_digit_start_shortcut_finds_what_the_full_scan_finds(name: str) -> None:
    """The number builtins try their (translated, Unicode-`\\b`) patterns only where a match
    can start; on strings rich in digits, separators, word and combining characters the
    result is the full scan's."""
    import random

    from agw_fast.llm.guardrails.regex import _coalesce

    detector = builtin_detector(name)
    regexes = detector.regexes  # type: ignore[attr-defined]
    alphabet = list("0123456789- .ab_éٳ٣\u0301x")
    rng = random.Random(7)
    for _ in range(2000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))
        full = _coalesce([m.span() for r in regexes for m in r.finditer(text)])
        assert detector.spans(text) == full, text
        assert detector.found(text) == bool(full), text
