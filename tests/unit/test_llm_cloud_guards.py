"""The cloud guards' request shapes and decisions (llm/guardrails/cloud.py), sans-IO: the
bytes each guard would send, and its verdict on the answers agentgateway's code reads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config import load_config_file
from agw_fast.config.model import (
    AzureContentSafetyConfig,
    BackendAuth,
    BedrockGuardConfig,
    GuardConfig,
    GuardRejection,
    GuardServicePolicies,
    HeaderModifier,
    ModelArmorConfig,
)
from agw_fast.errors import ConfigError
from agw_fast.llm.guardrails.cloud import (
    AzureContentSafetyGuard,
    BedrockGuard,
    ModelArmorGuard,
    azure_analyze_blocked,
    bedrock_verdict,
    model_armor_blocked,
)
from agw_fast.llm.guardrails.content import response_texts
from agw_fast.llm.guardrails.guards import GuardCall, GuardFailed, Prompt, Reply
from agw_fast.llm.providers.vertex import AccessToken

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples"
KEYED = GuardServicePolicies(auth=BackendAuth(key="k"))
AMBIENT = GuardServicePolicies()  # the guard's own cloud credential


def _prompt(*messages: tuple[str, str]) -> Prompt:
    obj = {"model": "m", "messages": [{"role": r, "content": c} for r, c in messages]}
    return Prompt("completions", obj, (), dict)


def _reply(*texts: str) -> Reply:
    obj: dict[str, Any] = {"choices": [
        {"index": i, "message": {"role": "assistant", "content": t}} for i, t in enumerate(texts)
    ]}  # fmt: skip
    reply = Reply("completions", obj)
    reply.texts = response_texts("completions", obj)
    return reply


def _split(call: GuardCall) -> tuple[bytes, dict[bytes, bytes], Any]:
    head, body = call.request.split(b"\r\n\r\n", 1)
    first, *lines = head.split(b"\r\n")
    fields = dict(line.split(b": ", 1) for line in lines)
    assert int(fields[b"content-length"]) == len(body)
    return first, fields, json.loads(body)


def _bedrock(policies: GuardServicePolicies = KEYED, environ: dict[str, str] | None = None,
             scope: frozenset[str] = frozenset({"systemPrompt", "messages"})) -> BedrockGuard:
    config = BedrockGuardConfig("gr-1", "DRAFT", "us-west-2", policies, "p.bedrockGuardrails")
    guard = GuardConfig("bedrockGuardrails", GuardRejection(), "p", scope, bedrock=config)
    return BedrockGuard(guard, environ or {})


def test_bedrock_request_shape() -> None:
    guard = _bedrock()
    assert guard.endpoint is not None
    assert (guard.endpoint.host, guard.endpoint.port) == ("bedrock-runtime.us-west-2.amazonaws.com",
                                                          443)  # fmt: skip
    assert guard.endpoint.tls is not None and guard.needs is None
    call = guard.on_request(_prompt(("system", "Be brief."), ("user", "Hi")))
    assert isinstance(call, GuardCall)
    first, fields, body = _split(call)
    assert first == b"POST /guardrail/gr-1/version/DRAFT/apply HTTP/1.1"
    assert fields[b"host"] == b"bedrock-runtime.us-west-2.amazonaws.com"
    assert fields[b"authorization"] == b"Bearer k"
    assert fields[b"accept"] == b"application/json"
    assert body == {"source": "INPUT", "content": [{"text": {"text": "Be brief."}},
                                                    {"text": {"text": "Hi"}}]}  # fmt: skip


def test_bedrock_scope_and_masking() -> None:
    guard = _bedrock(scope=frozenset({"messages"}))
    prompt = _prompt(("system", "mail a@b.co"), ("user", "mail c@d.co"))
    call = guard.on_request(prompt)
    assert isinstance(call, GuardCall)
    assert _split(call)[2]["content"] == [{"text": {"text": "mail c@d.co"}}]
    answer = {"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "mail {EMAIL}"}],
              "assessments": [{"sensitiveInformationPolicy": {"piiEntities": [
                  {"type": "EMAIL", "action": "ANONYMIZED"}]}}]}  # fmt: skip
    verdict = guard.request_answer(prompt, 200, json.dumps(answer).encode())
    assert verdict.action == "Mask"  # type: ignore[union-attr]
    prompt.finish()
    assert [m["content"] for m in prompt.obj["messages"]] == ["mail a@b.co", "mail {EMAIL}"]


@pytest.mark.parametrize(
    ("answer", "sent", "expected"),
    [
        ({"action": "NONE", "outputs": [], "assessments": [{}]}, 1, "none"),
        ({"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "canned"}],
          "assessments": [{"topicPolicy": {"topics": [{"action": "BLOCKED"}]}}]}, 1, "block"),
        # Blocked and anonymized: blocked wins.
        ({"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "x"}],
          "assessments": [{"a": {"action": "ANONYMIZED"}, "b": [{"action": "BLOCKED"}]}]},
         1, "block"),
        ({"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "x"}, {"text": "y"}],
          "assessments": [{"p": [{"action": "ANONYMIZED"}]}]}, 2, ["x", "y"]),
        # Outputs that do not line up with the blocks sent: rejected, as agentgateway does.
        ({"action": "GUARDRAIL_INTERVENED", "outputs": [{"text": "x"}],
          "assessments": [{"p": [{"action": "ANONYMIZED"}]}]}, 2, "block"),
        # Intervened without an action agentgateway knows: rejected.
        ({"action": "GUARDRAIL_INTERVENED", "outputs": [], "assessments": []}, 1, "block"),
    ],
)
def test_bedrock_verdicts(answer: dict[str, Any], sent: int, expected: object) -> None:
    assert bedrock_verdict(answer, sent) == expected


def test_bedrock_response_and_failures() -> None:
    guard = _bedrock()
    reply = _reply("Hello there")
    call = guard.on_response(reply)
    assert isinstance(call, GuardCall)
    assert _split(call)[2] == {"source": "OUTPUT", "content": [{"text": {"text": "Hello there"}}]}
    blocked = {"action": "GUARDRAIL_INTERVENED", "outputs": [],
               "assessments": [{"x": {"action": "BLOCKED"}}]}  # fmt: skip
    verdict = guard.response_answer(reply, 200, json.dumps(blocked).encode())
    assert verdict.action == "Reject" and verdict.rejection is not None
    assert verdict.rejection.status == 403
    with pytest.raises(GuardFailed):
        guard.response_answer(reply, 500, b"{}")
    with pytest.raises(GuardFailed):
        guard.response_answer(reply, 200, b'{"action": "MAYBE"}')
    with pytest.raises(GuardFailed):
        guard.response_answer(reply, 200, b"not json")


def test_bedrock_endpoint_override_and_header_changes() -> None:
    policies = GuardServicePolicies(
        auth=BackendAuth(key="k"), request_headers=HeaderModifier(set=(("x-team", "a"),))
    )
    guard = _bedrock(policies, {"AGW_FAST_BEDROCK_GUARDRAILS_URL": "http://127.0.0.1:9/base/"})
    assert guard.endpoint is not None
    assert (guard.endpoint.host, guard.endpoint.port, guard.endpoint.tls) == ("127.0.0.1", 9,
                                                                              None)  # fmt: skip
    call = guard.on_request(_prompt(("user", "x")))
    assert isinstance(call, GuardCall)
    first, fields, _ = _split(call)
    assert first == b"POST /base/guardrail/gr-1/version/DRAFT/apply HTTP/1.1"
    assert fields[b"host"] == b"127.0.0.1:9" and fields[b"x-team"] == b"a"
    with pytest.raises(ConfigError, match="AGW_FAST_BEDROCK_GUARDRAILS_URL"):
        _bedrock(KEYED, {"AGW_FAST_BEDROCK_GUARDRAILS_URL": "ftp://x"})


def test_bedrock_without_a_key_needs_aws() -> None:
    guard = _bedrock(AMBIENT)
    assert guard.needs == "aws" and guard.region == "us-west-2"


def _armor(policies: GuardServicePolicies = AMBIENT) -> ModelArmorGuard:
    config = ModelArmorConfig("tpl", "proj", "europe-west4", policies, "p.googleModelArmor")
    return ModelArmorGuard(GuardConfig("googleModelArmor", GuardRejection(), "p",
                                       model_armor=config), {})  # fmt: skip


def test_model_armor_shapes_and_token() -> None:
    guard = _armor()
    assert guard.needs == "google"
    assert guard.endpoint is not None
    assert guard.endpoint.host == "modelarmor.europe-west4.rep.googleapis.com"
    guard.credential = AccessToken()
    call = guard.on_request(_prompt(("system", "S"), ("user", "U")))
    assert isinstance(call, GuardCall) and call.credential is guard.credential
    first, fields, body = _split(call)
    assert first == (b"POST /v1/projects/proj/locations/europe-west4/templates/tpl"
                     b":sanitizeUserPrompt HTTP/1.1")  # fmt: skip
    assert b"authorization" not in fields  # the token's line goes in as the call is made
    assert body == {"user_prompt_data": {"text": "S\nU"}}
    call = guard.on_response(_reply("A", "B"))
    assert isinstance(call, GuardCall)
    first, _, body = _split(call)
    assert first.endswith(b":sanitizeModelResponse HTTP/1.1")
    assert body == {"model_response_data": {"text": "A\nB"}}
    keyed = _armor(KEYED)
    keyed.credential = AccessToken()
    call = keyed.on_request(_prompt(("user", "U")))
    assert isinstance(call, GuardCall) and call.credential is None
    assert _split(call)[1][b"authorization"] == b"Bearer k"


@pytest.mark.parametrize(
    ("answer", "blocked"),
    [
        ({}, False),
        ({"sanitizationResult": {"filterMatchState": "NO_MATCH_FOUND", "filterResults": {
            "rai": {"raiFilterResult": {"matchState": "NO_MATCH_FOUND"}}}}}, False),
        ({"sanitizationResult": {"filterResults": {
            "pi": {"piAndJailbreakFilterResult": {"matchState": "MATCH_FOUND"}}}}}, True),
        ({"sanitizationResult": {"filterResults": [
            {"csamFilterResult": {"matchState": "MATCH_FOUND"}}]}}, True),
        ({"sanitizationResult": {"filterResults": {"sdp": {"sdpFilterResult": {
            "deidentifyResult": {"matchState": "MATCH_FOUND"}}}}}}, True),
        # The overall filterMatchState alone is not read (agentgateway reads the filters).
        ({"sanitizationResult": {"filterMatchState": "MATCH_FOUND", "filterResults": {}}}, False),
    ],
)
def test_model_armor_decisions(answer: dict[str, Any], blocked: bool) -> None:
    assert model_armor_blocked(answer) is blocked


def _azure(analyze: bool = True, jailbreak: bool = True) -> AzureContentSafetyGuard:
    config = AzureContentSafetyConfig("res.cognitiveservices.azure.com", analyze, 4,
                                      "2024-09-01", ("list1",), True, jailbreak,
                                      "2024-02-15-preview", "p.azureContentSafety")  # fmt: skip
    return AzureContentSafetyGuard(GuardConfig("azureContentSafety", GuardRejection(), "p",
                                               azure=config), {})  # fmt: skip


def test_azure_two_calls_for_a_request() -> None:
    guard = _azure()
    prompt = _prompt(("user", "hello"))
    call = guard.on_request(prompt)
    assert isinstance(call, GuardCall)
    first, fields, body = _split(call)
    assert first == b"POST /contentsafety/text:analyze?api-version=2024-09-01 HTTP/1.1"
    assert fields[b"host"] == b"res.cognitiveservices.azure.com"
    assert body == {"text": "hello", "blocklistNames": ["list1"], "haltOnBlocklistHit": True}
    clean = {"blocklistsMatch": [], "categoriesAnalysis": [{"category": "Hate", "severity": 2}]}
    nxt = guard.request_answer(prompt, 200, json.dumps(clean).encode())
    assert isinstance(nxt, GuardCall)
    first, _, body = _split(nxt)
    assert first == (b"POST /contentsafety/text:detectJailbreak?api-version=2024-02-15-preview "
                     b"HTTP/1.1")  # fmt: skip
    assert body == {"text": "hello"}
    verdict = guard.request_answer(prompt, 200, b'{"jailbreakAnalysis": {"detected": true}}')
    assert not isinstance(verdict, GuardCall) and verdict.action == "Reject"


def test_azure_decisions() -> None:
    assert azure_analyze_blocked({"categoriesAnalysis": [{"category": "Hate", "severity": 4}]}, 4)
    assert not azure_analyze_blocked({"categoriesAnalysis": [{"severity": 3}]}, 4)
    assert azure_analyze_blocked({"blocklistsMatch": [{"blocklistName": "l"}]}, 9)
    guard = _azure(jailbreak=False)
    reply = _reply("text")
    call = guard.on_response(reply)
    assert isinstance(call, GuardCall)
    verdict = guard.response_answer(reply, 200, b'{"categoriesAnalysis": [{"severity": 6}]}')
    assert verdict.action == "Reject"
    assert _azure(analyze=False).on_response(reply).action == "Allow"  # type: ignore[union-attr]


def test_examples_load(monkeypatch: pytest.MonkeyPatch) -> None:
    # agentgateway's bedrock and model-armor prompt-guard examples load unchanged; Azure
    # Content Safety is refused (Entra ID).
    for name in ("bedrock", "model-armor"):
        config = load_config_file(EXAMPLES / f"llm-prompt-guard-{name}-config.yaml", {})
        assert config.binds
    with pytest.raises(ConfigError, match="Entra ID"):
        load_config_file(EXAMPLES / "llm-prompt-guard-azure-content-safety-config.yaml", {})
