"""The cloud guard services for the mock, as far as agentgateway's guards read them.

- AWS Bedrock Guardrails' ApplyGuardrail (`POST /guardrail/{id}/version/{v}/apply`): a text
  containing "attack" is BLOCKED (a denied topic); otherwise an email address is ANONYMIZED
  (`{EMAIL}` in the outputs, one per content block); else `action: NONE`.
- Google Model Armor (`POST /v1/projects/{p}/locations/{l}/templates/{t}:sanitizeUserPrompt`
  and `:sanitizeModelResponse`): "attack" is a prompt-injection-and-jailbreak MATCH_FOUND.
- Azure AI Content Safety (`POST /contentsafety/text:analyze` and `text:detectJailbreak`):
  "attack" is Violence at severity 4 (others 0); "jailbreak" is a detected jailbreak.

A test double, not a classifier; the flagged words are the module's constants. Pure
functions, as apis.py: each takes the path and payload and returns the answer document, or
raises ApiError.
"""

from __future__ import annotations

import re
from typing import Any

from .apis import ApiError

__all__ = [
    "FLAGGED_WORD",
    "JAILBREAK_WORD",
    "azure_analyze",
    "azure_detect_jailbreak",
    "bedrock_apply_guardrail",
    "is_guard_path",
    "model_armor_sanitize",
]

FLAGGED_WORD = "attack"
JAILBREAK_WORD = "jailbreak"
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_BEDROCK_PATH = re.compile(rb"/guardrail/[^/]+/version/[^/]+/apply$")
_ARMOR_PATH = re.compile(
    rb"/v1/projects/[^/]+/locations/[^/]+/templates/[^/:]+:(sanitizeUserPrompt|sanitizeModelResponse)$"
)


def is_guard_path(path: bytes) -> bool:
    return bool(
        _BEDROCK_PATH.search(path) or _ARMOR_PATH.search(path)
        or path.endswith((b"/contentsafety/text:analyze", b"/contentsafety/text:detectJailbreak"))
    )  # fmt: skip


def _flagged(text: str) -> bool:
    return FLAGGED_WORD in text.lower()


def bedrock_apply_guardrail(payload: dict[str, Any]) -> dict[str, Any]:
    source = payload.get("source")
    if source not in ("INPUT", "OUTPUT"):
        raise ApiError(400, "source must be INPUT or OUTPUT")
    content = payload.get("content")
    if not isinstance(content, list) or not content:
        raise ApiError(400, "content must be a non-empty list")
    texts: list[str] = []
    for block in content:
        text = block.get("text", {}).get("text") if isinstance(block, dict) else None
        if not isinstance(text, str):
            raise ApiError(400, "each content block needs text.text")
        texts.append(text)
    usage = {"topicPolicyUnits": len(texts), "sensitiveInformationPolicyUnits": len(texts)}
    if any(_flagged(t) for t in texts):
        return {
            "action": "GUARDRAIL_INTERVENED",
            "outputs": [{"text": "Sorry, the model cannot answer this question."}],
            "assessments": [{"topicPolicy": {"topics": [
                {"name": FLAGGED_WORD, "type": "DENY", "action": "BLOCKED"}
            ]}}],
            "usage": usage,
        }  # fmt: skip
    if any(_EMAIL.search(t) for t in texts):
        return {
            "action": "GUARDRAIL_INTERVENED",
            "outputs": [{"text": _EMAIL.sub("{EMAIL}", t)} for t in texts],
            "assessments": [{"sensitiveInformationPolicy": {"piiEntities": [
                {"type": "EMAIL", "match": m, "action": "ANONYMIZED"}
                for t in texts for m in _EMAIL.findall(t)
            ]}}],
            "usage": usage,
        }  # fmt: skip
    return {"action": "NONE", "outputs": [], "assessments": [{}], "usage": usage}


def model_armor_sanitize(path: bytes, payload: dict[str, Any]) -> dict[str, Any]:
    key = "user_prompt_data" if path.endswith(b":sanitizeUserPrompt") else "model_response_data"
    data = payload.get(key)
    text = data.get("text") if isinstance(data, dict) else None
    if not isinstance(text, str):
        raise ApiError(400, f"{key}.text is required")
    state = "MATCH_FOUND" if _flagged(text) else "NO_MATCH_FOUND"
    filters = {
        "pi_and_jailbreak": {"piAndJailbreakFilterResult": {
            "executionState": "EXECUTION_SUCCESS", "matchState": state,
            **({"confidenceLevel": "HIGH"} if state == "MATCH_FOUND" else {}),
        }},
        "rai": {"raiFilterResult": {"executionState": "EXECUTION_SUCCESS",
                                    "matchState": "NO_MATCH_FOUND"}},
    }  # fmt: skip
    return {"sanitizationResult": {"filterMatchState": state, "filterResults": filters,
                                   "invocationResult": "SUCCESS"}}  # fmt: skip


def _azure_text(payload: dict[str, Any]) -> str:
    text = payload.get("text")
    if not isinstance(text, str):
        raise ApiError(400, "text is required")
    return text


def azure_analyze(payload: dict[str, Any]) -> dict[str, Any]:
    text = _azure_text(payload)
    violence = 4 if _flagged(text) else 0
    categories = [{"category": c, "severity": violence if c == "Violence" else 0}
                  for c in ("Hate", "SelfHarm", "Sexual", "Violence")]  # fmt: skip
    return {"blocklistsMatch": [], "categoriesAnalysis": categories}


def azure_detect_jailbreak(payload: dict[str, Any]) -> dict[str, Any]:
    text = _azure_text(payload)
    return {"jailbreakAnalysis": {"detected": JAILBREAK_WORD in text.lower()}}
