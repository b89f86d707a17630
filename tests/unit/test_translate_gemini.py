"""Gemini translation: agentgateway's golden fixtures, streams at every split, telemetry,
errors and requests that cannot be translated."""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path

import httpx
import openai
import pytest

from agw_fast.llm.translate import TranslationError
from agw_fast.llm.translate.gemini import (
    OPENAI_CHAT_PATH,
    OPENAI_EMBEDDINGS_PATH,
    anthropic_error_from_google,
    api_key_header,
    build_generate_content,
    completions_to_gemini,
    count_tokens_total,
    gemini_count_tokens_path,
    gemini_passthrough,
    gemini_path,
    openai_error_from_google,
)
from agw_fast.llm.translate.gemini_response import (
    CompletionsFromGemini,
    GeminiPassthroughStream,
    GeminiToCompletionsStream,
)
from agw_fast.llm.translate.gemini_schema import normalize_schema
from agw_fast.llm.usage import Usage

FIXTURES = Path(__file__).parent.parent / "data" / "agentgateway-llm"
REQUESTS = FIXTURES / "requests" / "completions"
RESPONSES = FIXTURES / "response" / "vertex-gemini"


def snapshot(path: Path) -> object:
    """The JSON of an insta snapshot (after its YAML header)."""
    return json.loads(path.read_text().split("\n---\n", 1)[1])


def translate(request: dict[str, object]) -> dict[str, object]:
    body, _ = completions_to_gemini(request)
    out = json.loads(body)
    assert isinstance(out, dict)
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


# ---------------------------------------------------------------- golden requests


@pytest.mark.parametrize(
    "name", sorted(p.name.split(".")[0] for p in REQUESTS.glob("*.vertex-gemini.snap"))
)
def test_request_matches_agentgateway(name: str) -> None:
    request = json.loads((REQUESTS / f"{name}.json").read_text())
    # agentgateway took these snapshots with the backend's model pinned to gemini-2.5-pro.
    request["model"] = "gemini-2.5-pro"
    expected = snapshot(REQUESTS / f"{name}.vertex-gemini.snap")
    assert translate(request) == expected["request"]  # type: ignore[index]


def test_request_is_compact_utf8_and_leaves_the_input_alone() -> None:
    request = json.loads((REQUESTS / "structured-output.json").read_text())
    request["messages"][0]["content"] = "héllo ✓"
    before = copy.deepcopy(request)
    body, _ = completions_to_gemini(request)
    assert request == before  # $defs/$ref inlining works on a copy
    assert "héllo ✓".encode() in body and b": " not in body


def test_lone_surrogate_stays_escaped() -> None:
    body, _ = completions_to_gemini(
        {"model": "m", "messages": [{"role": "user", "content": "a\ud800b"}]}
    )
    assert b"a\\ud800b" in body


# ---------------------------------------------------------------- request rules


def user(text: object) -> dict[str, object]:
    return {"role": "user", "content": text}


def test_empty_conversation_gets_a_filler_turn() -> None:
    out = translate({"model": "m", "messages": [{"role": "system", "content": "s"}]})
    assert out["contents"] == [{"role": "user", "parts": [{"text": " "}]}]
    assert out["systemInstruction"] == {"parts": [{"text": "s"}]}


def test_system_and_developer_join_and_user_turns_merge() -> None:
    out = translate(
        {
            "model": "m",
            "messages": [
                {"role": "system", "content": "one"},
                {"role": "developer", "content": [{"type": "text", "text": "two"}]},
                {"role": "system", "content": ""},
                user("a"),
                user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}]),
                {"role": "narrator", "content": "ignored"},
            ],
        }
    )
    assert out["systemInstruction"] == {"parts": [{"text": "one\ntwo"}]}
    assert out["contents"] == [
        {
            "role": "user",
            "parts": [{"text": "a"}, {"inlineData": {"mimeType": "image/png", "data": "AA"}}],
        }
    ]


def test_image_only_turn_gets_a_text_part() -> None:
    out = translate(
        {
            "model": "m",
            "messages": [
                user([{"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}])
            ],
        }
    )
    assert out["contents"][0]["parts"][-1] == {"text": " "}  # type: ignore[index]


def test_tool_results_follow_call_order_and_keep_their_own_turn() -> None:
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": f"f{i}", "arguments": "{}"}}
        for i in range(3)
    ]
    out = translate(
        {
            "model": "m",
            "messages": [
                user("q"),
                {"role": "assistant", "content": "let me see", "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c2", "content": "r2"},
                {"role": "tool", "tool_call_id": "c0", "content": [{"type": "text", "text": "r0"}]},
                {"role": "tool", "tool_call_id": "c1", "content": None},
                user("thanks"),
            ],
        }
    )
    contents = out["contents"]
    assert [c["role"] for c in contents] == ["user", "model", "user", "user"]  # type: ignore[index,union-attr]
    assert contents[1]["parts"][0] == {"text": "let me see"}  # type: ignore[index]
    responses = [p["functionResponse"] for p in contents[2]["parts"]]  # type: ignore[index]
    assert responses == [
        {"name": "f0", "response": {"content": "r0"}},
        {"name": "f1", "response": {}},
        {"name": "f2", "response": {"content": "r2"}},
    ]


def test_thought_signature_rides_in_the_tool_call_id() -> None:
    # Gemini 3 needs its signature back; the response put it in the id (see below).
    out = translate(
        {
            "model": "m",
            "messages": [
                user("q"),
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "call_x__thought__SIG",
                            "function": {"name": "f", "arguments": "not json"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_x__thought__SIG", "content": "ok"},
            ],
        }
    )
    model_turn = out["contents"][1]  # type: ignore[index]
    assert model_turn["parts"] == [
        {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "SIG"}
    ]
    assert out["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"  # type: ignore[index]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("auto", {"mode": "AUTO"}),
        ({"type": "function"}, {"mode": "ANY"}),
        (
            {"type": "function", "function": {"name": "f"}},
            {"mode": "ANY", "allowedFunctionNames": ["f"]},
        ),
    ],
)
def test_tool_choice(choice: object, config: object) -> None:
    out = translate({"model": "m", "messages": [user("q")], "tool_choice": choice})
    assert out["toolConfig"] == {"functionCallingConfig": config}


@pytest.mark.parametrize(
    ("model", "effort", "expected"),
    [
        ("gemini-2.5-flash", "low", {"thinkingBudget": 1024, "includeThoughts": True}),
        ("gemini-2.5-flash", "max", {"thinkingBudget": 16384, "includeThoughts": True}),
        ("gemini-3-pro-preview", "xhigh", {"thinkingLevel": "high", "includeThoughts": True}),
        ("gemini-3-pro-preview", "minimal", {"thinkingLevel": "minimal", "includeThoughts": True}),
        ("gemini-2.5-flash", "none", None),
    ],
)
def test_reasoning_effort(model: str, effort: str, expected: object) -> None:
    out = translate({"model": model, "messages": [user("q")], "reasoning_effort": effort})
    assert out.get("generationConfig", {}).get("thinkingConfig") == expected  # type: ignore[attr-defined]


def test_explicit_thinking_config_wins_and_a_malformed_one_is_dropped() -> None:
    base: dict[str, object] = {"model": "m", "messages": [user("q")], "reasoning_effort": "high"}
    out = translate({**base, "thinking_config": {"thinkingBudget": -1, "extra": 1}})
    assert out["generationConfig"] == {"thinkingConfig": {"thinkingBudget": -1, "extra": 1}}
    out = translate({**base, "thinkingConfig": {"thinkingBudget": "lots"}})
    assert "generationConfig" not in out


def test_cached_content_drops_what_the_cache_holds() -> None:
    out = translate(
        {
            "model": "m",
            "messages": [{"role": "system", "content": "s"}, user("q")],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "auto",
            "cachedContent": "cachedContents/abc",
            "safety_settings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}],
            "labels": {"team": "a"},
        }
    )
    assert out == {
        "contents": [{"role": "user", "parts": [{"text": "q"}]}],
        "safetySettings": [{"category": "HARM_CATEGORY_HATE_SPEECH", "threshold": "OFF"}],
        "cachedContent": "cachedContents/abc",
        "labels": {"team": "a"},
    }


def test_generation_config_details() -> None:
    out = translate(
        {
            "model": "m",
            "messages": [user("q")],
            "max_tokens": 10,
            "max_completion_tokens": 20,
            "stop": "END",
            "top_k": -1,
            "n": 2.5,
            "safetySettings": [{"category": "x"}],
        }
    )
    assert out["generationConfig"] == {"maxOutputTokens": 20, "stopSequences": ["END"]}
    assert "safetySettings" not in out


def test_gs_image_mime_from_hint_or_extension() -> None:
    def part(image_url: dict[str, object]) -> object:
        out = translate(
            {"model": "m", "messages": [user([{"type": "image_url", "image_url": image_url}])]}
        )
        return out["contents"][0]["parts"][0]  # type: ignore[index]

    assert part({"url": "gs://b/x.JPG"}) == {
        "fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/x.JPG"}
    }
    assert part({"url": "gs://b/x", "format": "pdf"}) == {
        "fileData": {"mimeType": "application/pdf", "fileUri": "gs://b/x"}
    }
    assert part({"url": "gs://b/x", "mime_type": "image/jpg"}) == {
        "fileData": {"mimeType": "image/jpeg", "fileUri": "gs://b/x"}
    }


def test_schema_normalization() -> None:
    schema = {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "a": {"anyOf": [{"type": "string"}, {"type": "null"}], "format": "email"},
            "b": {"type": ["integer", "null"]},
            "c": {"const": "x"},
            "d": {"allOf": [{"properties": {"p": {"type": "string"}}, "required": ["p"]}]},
            "e": {"type": "array"},
            "f": {"type": "integer", "enum": [1, 2]},
            "g": {"enum": ["u"]},
            "h": {"$ref": "#/$defs/Node"},
            "i": {"type": ["string", "number"]},
        },
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    assert normalize_schema(schema) == {
        "type": "object",
        "properties": {
            "a": {"nullable": True, "type": "string"},
            "b": {"nullable": True, "type": "integer"},
            "c": {"enum": ["x"], "type": "string"},
            "d": {"properties": {"p": {"type": "string"}}, "required": ["p"], "type": "object"},
            "e": {"type": "array", "items": {"type": "object"}},
            "f": {"type": "integer"},
            "g": {"enum": ["u"], "type": "string"},
            # Recursion cannot be expressed: the inner $ref stays, then is dropped as unknown.
            "h": {"type": "object", "properties": {"next": {"type": "object"}}},
            "i": {"anyOf": [{"type": "string"}, {"type": "number"}]},
        },
    }


@pytest.mark.parametrize(
    "request_",
    [
        [],
        {"model": "m"},
        {"model": 3, "messages": []},
        {"model": "m", "messages": [1]},
        {"model": "m", "messages": [{"content": "x"}]},
        {"model": "m", "messages": [user(3)]},
        {"model": "m", "messages": [user([{"text": "no type"}])]},
        {"model": "m", "messages": [user([{"type": "text", "text": 1}])]},
        {"model": "m", "messages": [{"role": "tool", "tool_call_id": 5, "content": "x"}]},
        {"model": "m", "messages": [{"role": "assistant", "tool_calls": {}}]},
        {"model": "m", "messages": [], "temperature": "hot"},
        {"model": "m", "messages": [], "max_tokens": -1},
        {"model": "m", "messages": [], "max_completion_tokens": 1.5},
        {"model": "m", "messages": [], "seed": True},
        {"model": "m", "messages": [], "tools": {}},
        {"model": "m", "messages": [], "reasoning_effort": "extreme"},
        {
            "model": "m",
            "messages": [user([{"type": "image_url", "image_url": {"url": "https://x/a.png"}}])],
        },
        {
            "model": "m",
            "messages": [user([{"type": "image_url", "image_url": {"url": "gs://b/noext"}}])],
        },
        {"model": "m", "messages": [user([{"type": "image_url"}])]},
    ],
)
def test_untranslatable_requests(request_: object) -> None:
    with pytest.raises(TranslationError):
        completions_to_gemini(request_)  # type: ignore[arg-type]


# ---------------------------------------------------------------- paths and auth


@pytest.mark.parametrize(
    ("model", "stream", "path"),
    [
        ("gemini-2.5-flash", False, "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("models/gemini-2.5-flash", False, "/v1beta/models/gemini-2.5-flash:generateContent"),
        ("tunedModels/abc", True, "/v1beta/tunedModels/abc:streamGenerateContent?alt=sse"),
        (
            "gemini-2.5-flash/../../v1beta/models/other",
            False,
            "/v1beta/models/gemini-2.5-flash%2F..%2F..%2Fv1beta%2Fmodels%2Fother:generateContent",
        ),
        (
            "/v1beta/models/other",
            False,
            "/v1beta/models/%2Fv1beta%2Fmodels%2Fother:generateContent",
        ),
        ("", False, "/v1beta/models/:generateContent"),
        ("a b?c#d%é", False, "/v1beta/models/a%20b%3Fc%23d%25%C3%A9:generateContent"),
    ],
)
def test_gemini_path(model: str, stream: bool, path: str) -> None:
    assert gemini_path(model, stream) == path


def test_other_paths() -> None:
    assert gemini_count_tokens_path("tunedModels/abc") == "/v1beta/tunedModels/abc:countTokens"
    assert OPENAI_CHAT_PATH == "/v1beta/openai/chat/completions"
    assert OPENAI_EMBEDDINGS_PATH == "/v1beta/openai/embeddings"


@pytest.mark.parametrize(
    ("authorization", "explicit", "key"),
    [
        (b"Bearer AIzaSyKEY", False, b"AIzaSyKEY"),
        (b"bearer  AIzaSyKEY", False, b"AIzaSyKEY"),
        (b"Bearer AIzaSyKEY", True, None),  # an explicitly placed Authorization stays
        (b"Bearer ya29.oauth-token", False, None),
        (b"Basic AIzaSyKEY", False, None),
        (b"AIzaSyKEY", False, None),
    ],
)
def test_api_key_header(authorization: bytes, explicit: bool, key: bytes | None) -> None:
    assert api_key_header(authorization, explicit=explicit) == key


# ---------------------------------------------------------------- golden responses


@pytest.mark.parametrize("name", ["basic", "tool", "reasoning", "blocked"])
def test_response_matches_agentgateway(name: str) -> None:
    body = (RESPONSES / f"{name}.json").read_bytes()
    out, usage, model = CompletionsFromGemini("m").response_json(body)
    got = json.loads(out)
    expected = snapshot(RESPONSES / f"{name}.vertex-gemini-completions.snap")
    assert isinstance(expected, dict)
    got["id"], got["created"] = "[id]", "[date]"
    assert got == expected["response"]
    parsed = expected["parsed"]
    assert usage == Usage(
        input_tokens=parsed["input_tokens"],
        output_tokens=parsed["output_tokens"],
        total_tokens=parsed["total_tokens"],
        reasoning_tokens=parsed.get("reasoning_tokens"),
    )
    assert model == parsed["provider_model"]


@pytest.mark.parametrize("name", ["basic", "tool", "reasoning", "blocked"])
def test_passthrough_response_matches_agentgateway(name: str) -> None:
    body = (RESPONSES / f"{name}.json").read_bytes()
    out, usage, model = gemini_passthrough().response_json(body)
    assert out is body
    parsed = snapshot(RESPONSES / f"{name}.gemini-native.snap")["parsed"]  # type: ignore[index]
    assert usage is not None and usage.input_tokens == parsed["input_tokens"]
    assert (usage.output_tokens, usage.total_tokens) == (
        parsed["output_tokens"],
        parsed["total_tokens"],
    )
    assert usage.reasoning_tokens == parsed.get("reasoning_tokens")
    assert model == parsed["provider_model"]


def test_response_ids_finish_reasons_and_cached_usage() -> None:
    body = json.dumps(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"text": "a"},
                            {
                                "functionCall": {"name": "f", "args": {"k": "é"}},
                                "thoughtSignature": "S",
                            },
                            {"inlineData": {"mimeType": "image/png", "data": "AA"}},
                        ]
                    },
                    "finishReason": "MAX_TOKENS",
                },
                {"content": {"parts": [{"functionCall": {"name": "g"}}]}, "finishReason": "STOP"},
                {"finishReason": "RECITATION"},
            ],
            "usageMetadata": {
                "promptTokenCount": 100,
                "candidatesTokenCount": 7,
                "thoughtsTokenCount": 3,
                "cachedContentTokenCount": 60,
            },
        }
    ).encode()
    out, usage, model = CompletionsFromGemini("m").response_json(body)
    got = json.loads(out)
    assert model is None and got["model"] == ""
    assert got["id"].startswith("vertex-gemini-")
    rid = got["id"]
    first, second, third = got["choices"]
    assert first["finish_reason"] == "length"
    assert first["message"]["content"] == "a"
    assert first["message"]["tool_calls"] == [
        {
            "id": f"call_{rid}_0__thought__S",
            "type": "function",
            "function": {"name": "f", "arguments": '{"k":"é"}'},
        }
    ]
    assert second["finish_reason"] == "tool_calls"
    assert "content" not in second["message"]
    assert second["message"]["tool_calls"][0]["id"] == f"call_{rid}_1_0"
    assert second["message"]["tool_calls"][0]["function"]["arguments"] == "null"
    assert third == {
        "index": 2,
        "message": {"content": "", "role": "assistant"},
        "finish_reason": "content_filter",
    }
    assert got["usage"] == {
        "prompt_tokens": 100,
        "completion_tokens": 10,
        "total_tokens": 110,
        "completion_tokens_details": {"reasoning_tokens": 3},
        "prompt_tokens_details": {"cached_tokens": 60},
    }
    assert usage == Usage(100, 10, 110, cached_input_tokens=60, reasoning_tokens=3)


def test_response_without_usage_has_null_usage() -> None:
    out, usage, _ = CompletionsFromGemini("m").response_json(b'{"candidates":[]}')
    assert usage is None and json.loads(out)["usage"] is None


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[1]",
        b'{"candidates":{}}',
        b'{"candidates":[1]}',
        b'{"candidates":[{"content":"x"}]}',
        b'{"candidates":[{"finishReason":1}]}',
        b'{"usageMetadata":{"promptTokenCount":-1}}',
        b'{"usageMetadata":{"promptTokenCount":1.5}}',
        b'{"modelVersion":3}',
    ],
)
def test_unreadable_responses(body: bytes) -> None:
    with pytest.raises(TranslationError):
        CompletionsFromGemini("m").response_json(body)
    with pytest.raises(TranslationError):
        gemini_passthrough().response_json(body)


def test_count_tokens_total() -> None:
    assert count_tokens_total(b'{"totalTokens":31,"promptTokensDetails":[]}') == 31
    assert count_tokens_total(b"{}") == 0
    assert count_tokens_total(b"nope") is None


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            b'{"error":{"code":400,"message":"bad model","status":"INVALID_ARGUMENT"}}',
            {"type": "invalid_request_error", "message": "bad model", "code": "INVALID_ARGUMENT"},
        ),
        (
            b'[{"error":{"code":429,"message":"slow down","status":"RESOURCE_EXHAUSTED"}}]',
            {"type": "rate_limit_error", "message": "slow down", "code": "RESOURCE_EXHAUSTED"},
        ),
        (
            b'{"error":{"code":403,"message":"no","status":"PERMISSION_DENIED"}}',
            {"type": "authentication_error", "message": "no", "code": "PERMISSION_DENIED"},
        ),
        (
            b'{"error":{"code":404,"message":"gone","status":"NOT_FOUND"}}',
            {"type": "not_found_error", "message": "gone", "code": "NOT_FOUND"},
        ),
        (
            b'{"error":{"code":500,"message":"oops"}}',
            {"type": "api_error", "message": "oops"},
        ),
        (b"upstream exploded", {"type": "api_error", "message": "upstream exploded"}),
        (
            b'{"error":{"message":"no code"}}',
            {"type": "api_error", "message": '{"error":{"message":"no code"}}'},
        ),
        (b"", {"type": "api_error", "message": "upstream error (HTTP 503)"}),
    ],
)
def test_error_translation(body: bytes, expected: object) -> None:
    out = json.loads(CompletionsFromGemini("m").error_json(503, body))
    assert out == {"event_id": None, "error": expected}


def test_compat_endpoint_errors_for_messages_and_responses_clients() -> None:
    # Google's OpenAI-compatible shim answers in Google's shape, array-wrapped at times.
    body = b'[{"error":{"code":400,"message":"bad","status":"INVALID_ARGUMENT"}}]'
    assert json.loads(anthropic_error_from_google(400, body)) == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "bad"},
    }
    assert json.loads(openai_error_from_google(400, body))["error"]["code"] == "INVALID_ARGUMENT"
    assert json.loads(anthropic_error_from_google(502, b"")) == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream error (HTTP 502)"},
    }


def test_passthrough_error_is_unchanged() -> None:
    body = b'{"error":{"code":400,"message":"x","status":"INVALID_ARGUMENT"}}'
    assert gemini_passthrough().error_json(400, body) is body


# ---------------------------------------------------------------- streams


def run(stream: GeminiToCompletionsStream | GeminiPassthroughStream, pieces: list[bytes]) -> bytes:
    return b"".join(stream.feed(p) for p in pieces) + stream.finish()


def normalize_created(sse: bytes) -> list[object]:
    events: list[object] = []
    for block in sse.decode().split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ")
        data = block[6:]
        if data == "[DONE]":
            events.append(data)
            continue
        obj = json.loads(data)
        obj["created"] = 123
        events.append(obj)
    return events


def test_stream_matches_agentgateway() -> None:
    data = (RESPONSES / "stream_tool.json").read_bytes()
    stream = CompletionsFromGemini("input-model", Clock()).stream()
    out = run(stream, [data])
    snap = (RESPONSES / "stream_tool.vertex-gemini-completions-streaming.snap").read_text()
    body = snap.split("\n---\n", 1)[1]
    sse, _, report = body.partition("\n\n\n\n")
    expected = normalize_created((sse + "\n\n").encode())
    assert normalize_created(out) == expected
    parsed = json.loads(report)
    assert stream.usage == Usage(
        parsed["input_tokens"], parsed["output_tokens"], parsed["total_tokens"]
    )
    assert stream.model == parsed["provider_model"] == "gemini-2.5-pro"
    assert stream.first_token_at == 101.0


def event(obj: object) -> bytes:
    return b"data: " + json.dumps(obj).encode() + b"\r\n\r\n"


THINKING_STREAM = b"".join(
    [
        event(
            {
                "candidates": [
                    {"content": {"role": "model", "parts": [{"text": "hmm", "thought": True}]}}
                ],
                "usageMetadata": {
                    "promptTokenCount": 9,
                    "thoughtsTokenCount": 4,
                    "totalTokenCount": 13,
                },
                "responseId": "r1",
            }
        ),
        b": a comment\n\n",
        event(
            {
                "candidates": [{"content": {"parts": [{"text": "Hé"}]}}],
                "usageMetadata": {
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 1,
                    "thoughtsTokenCount": 4,
                    "totalTokenCount": 14,
                },
                "modelVersion": "gemini-2.5-flash",
                "responseId": "r1",
            }
        ),
        event(
            {
                "candidates": [{"content": {"parts": [{"text": "llo"}]}, "finishReason": "STOP"}],
                "usageMetadata": {
                    "promptTokenCount": 9,
                    "candidatesTokenCount": 2,
                    "thoughtsTokenCount": 4,
                    "cachedContentTokenCount": 5,
                    "totalTokenCount": 15,
                },
                "modelVersion": "gemini-2.5-flash",
            }
        ),
        event({"usageMetadata": {"promptTokenCount": 9, "candidatesTokenCount": 2}}),
    ]
)


def test_stream_chunks_and_telemetry() -> None:
    stream = CompletionsFromGemini("requested-model", Clock()).stream()
    events = normalize_created(run(stream, [THINKING_STREAM]))
    assert events[-1] == "[DONE]"
    chunks: list[dict[str, object]] = events[:-1]  # type: ignore[assignment]
    assert [c["id"] for c in chunks] == ["r1"] * 4
    # The model fills in once Gemini names it; before that the requested model stands.
    assert [c["model"] for c in chunks] == ["requested-model"] + ["gemini-2.5-flash"] * 3
    deltas = [c["choices"][0]["delta"] if c["choices"] else None for c in chunks]  # type: ignore[index]
    assert deltas == [
        {"content": None, "role": "assistant", "reasoning_content": "hmm"},
        {"content": "Hé"},
        {"content": "llo"},
        None,
    ]
    assert [c["usage"] for c in chunks] == [
        None,
        None,
        {
            "prompt_tokens": 9,
            "completion_tokens": 6,
            "total_tokens": 15,
            "completion_tokens_details": {"reasoning_tokens": 4},
            "prompt_tokens_details": {"cached_tokens": 5},
        },
        {"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11},
    ]
    assert chunks[2]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    # Telemetry: the last usage, the first model, the first event that parsed.
    assert stream.usage == Usage(9, 2, 11)
    assert stream.model == "gemini-2.5-flash"
    assert stream.first_token_at == 101.0


def test_stream_same_output_for_every_split() -> None:
    whole = run(CompletionsFromGemini("m").stream(), [THINKING_STREAM])
    expected = normalize_created(whole)
    data = THINKING_STREAM
    for cut in range(1, len(data)):
        out = run(CompletionsFromGemini("m").stream(), [data[:cut], data[cut:]])
        assert normalize_created(out) == expected, cut
    bytewise = run(CompletionsFromGemini("m").stream(), [data[i : i + 1] for i in range(len(data))])
    assert normalize_created(bytewise) == expected


def test_stream_tool_calls_and_blocked_prompt() -> None:
    data = event(
        {
            "candidates": [
                {
                    "content": {
                        "parts": [
                            {"functionCall": {"name": "a", "args": {}}, "thoughtSignature": "S"}
                        ]
                    }
                }
            ],
            "responseId": "r",
        }
    ) + event(
        {
            "candidates": [
                {
                    "content": {"parts": [{"functionCall": {"name": "b", "id": "nat"}}]},
                    "finishReason": "STOP",
                }
            ]
        }
    )
    chunks = normalize_created(run(CompletionsFromGemini("m").stream(), [data]))
    calls = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[:2]]  # type: ignore[index]
    assert [(c["index"], c["id"]) for c in calls] == [(0, "call_r_0__thought__S"), (1, "nat")]
    assert chunks[1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]

    blocked = event(
        {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": 3}}
    )
    chunks = normalize_created(run(CompletionsFromGemini("m").stream(), [blocked]))
    assert chunks[0]["choices"][0]["finish_reason"] == "content_filter"  # type: ignore[index]
    assert chunks[0]["usage"] == {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}  # type: ignore[index]
    assert chunks[0]["id"].startswith("vertex-gemini-")  # type: ignore[index]


def test_stream_event_too_large_is_a_translation_error() -> None:
    stream = GeminiToCompletionsStream("m")
    stream._reader = type(stream._reader)(max_event=64)
    with pytest.raises(TranslationError):
        stream.feed(b"data: " + b"x" * 100)


def test_stream_without_events_still_ends() -> None:
    stream = CompletionsFromGemini("m").stream()
    assert run(stream, [b""]) == b"data: [DONE]\n\n"
    assert stream.usage is None and stream.model is None and stream.first_token_at is None


def test_passthrough_stream_relays_bytes_and_reads_telemetry() -> None:
    data = THINKING_STREAM
    for cut in range(0, len(data), 7):
        stream = gemini_passthrough().stream()
        assert isinstance(stream, GeminiPassthroughStream)
        stream._clock = Clock()
        assert run(stream, [data[:cut], data[cut:]]) == data
        assert stream.usage == Usage(9, 2, 11)
        assert stream.model == "gemini-2.5-flash"
        assert stream.first_token_at == 101.0


def test_passthrough_stream_last_event_without_blank_line_counts() -> None:
    stream = GeminiPassthroughStream()
    data = b'data: {"usageMetadata":{"promptTokenCount":1,"candidatesTokenCount":2}}'
    assert stream.feed(data) == data and stream.finish() == b""
    assert stream.usage == Usage(1, 2, 3)


def test_passthrough_stream_gives_up_telemetry_not_the_stream() -> None:
    stream = GeminiPassthroughStream()
    stream._reader = type(stream._reader)(max_event=16)  # type: ignore[misc]
    big = b"data: " + b"x" * 64
    assert stream.feed(big) == big
    assert stream.feed(b"\n\n" + event({"modelVersion": "m"})) == b"\n\n" + event(
        {"modelVersion": "m"}
    )
    assert stream.finish() == b"" and stream.model is None


# ---------------------------------------------------------------- the OpenAI SDK reads it


def sdk_client(handler: object) -> openai.OpenAI:
    transport = httpx.MockTransport(handler)  # type: ignore[arg-type]
    return openai.OpenAI(
        api_key="k", base_url="http://gw/v1", http_client=httpx.Client(transport=transport)
    )


def test_openai_sdk_parses_translated_stream() -> None:
    translation = CompletionsFromGemini("m")
    stream = translation.stream()
    # Fed in awkward pieces, as the proxy would.
    pieces = [THINKING_STREAM[i : i + 13] for i in range(0, len(THINKING_STREAM), 13)]
    body = run(stream, pieces)

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    chunks = list(
        sdk_client(handler).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "q"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Héllo"
    assert chunks[2].choices[0].finish_reason == "stop"
    assert chunks[2].usage is not None and chunks[2].usage.completion_tokens == 6
    assert chunks[2].usage.prompt_tokens_details is not None
    assert chunks[2].usage.prompt_tokens_details.cached_tokens == 5


def test_openai_sdk_parses_translated_response_and_error() -> None:
    translation = CompletionsFromGemini("m")
    body, _, _ = translation.response_json((RESPONSES / "tool.json").read_bytes())
    error = translation.error_json(
        429, b'{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}'
    )
    responses = iter([httpx.Response(200, content=body), httpx.Response(429, content=error)])

    def handler(request: httpx.Request) -> httpx.Response:
        return next(responses)

    client = sdk_client(handler).with_options(max_retries=0)
    completion = client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": "q"}]
    )
    call = completion.choices[0].message.tool_calls[0]  # type: ignore[index]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert completion.choices[0].finish_reason == "tool_calls"
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(model="m", messages=[{"role": "user", "content": "q"}])
    assert info.value.message.endswith("quota")
    assert info.value.code == "RESOURCE_EXHAUSTED"


def test_build_generate_content_matches_bytes() -> None:
    request = json.loads((REQUESTS / "generation-config.json").read_text())
    body, _ = completions_to_gemini(request)
    assert json.loads(body) == build_generate_content(request)
    # temperature etc. keep the client's numbers
    assert b'"temperature":0.7' in body and b'"topK":40' in body


def test_every_translation_is_independent() -> None:
    # One Translation can open several streams (retries); they share nothing.
    translation = CompletionsFromGemini("m")
    a, b = translation.stream(), translation.stream()
    a.feed(THINKING_STREAM)
    assert b.usage is None and b.model is None
    assert list(itertools.islice(iter(normalize_created(run(b, [THINKING_STREAM]))), 1))


def test_an_unreadable_stream_event_cuts_the_translated_stream() -> None:
    """agentgateway skips it; a translated stream that skipped content would look complete
    while missing some, so agw-fast raises (the exchange then cuts the client's stream)."""
    stream = CompletionsFromGemini("m", Clock()).stream()
    with pytest.raises(TranslationError, match="unreadable Gemini event"):
        stream.feed(b"data: {broken json\n\n")
