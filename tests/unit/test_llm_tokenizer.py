"""`tokenize`: agentgateway's prompt token estimate (num_tokens_from_messages over
get_messages), with the encodings built offline from the rank files agw-fast ships."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agw_fast.llm import tokenizer
from agw_fast.llm.providers.openai import LLMRequestError
from agw_fast.llm.tokenizer import count_prompt_tokens, encoding_for_model, prompt_texts

pytest.importorskip("tiktoken")


@pytest.fixture(scope="module")
def count() -> Callable[[str, str], int]:
    tokenizer.preload()
    return lambda encoding, text: tokenizer._counters[encoding](text)


@pytest.mark.parametrize(
    ("model", "encoding"),
    [
        ("gpt-4o", "o200k_base"),
        ("gpt-4o-mini", "o200k_base"),
        ("gpt-4.1-nano", "o200k_base"),
        ("gpt-5.2-codex", "o200k_base"),
        ("o3-mini", "o200k_base"),
        ("ft:gpt-4o-2024-08-06:acme::abc", "o200k_base"),
        ("gpt-4", "cl100k_base"),
        ("gpt-4-turbo", "cl100k_base"),
        ("gpt-3.5-turbo-0125", "cl100k_base"),
        ("claude-sonnet-4-5", "cl100k_base"),  # names tiktoken-rs does not know
        ("gemini-2.5-pro", "cl100k_base"),
        ("", "cl100k_base"),
        ("davinci", None),  # r50k: agentgateway's "unsupported model"
        ("gpt-oss-20b", None),  # o200k_harmony
        ("gpt2", None),
    ],
)
def test_encoding_per_model_follows_tiktoken_rs(model: str, encoding: str | None) -> None:
    assert encoding_for_model(model) == encoding


def test_known_counts(count: Callable[[str, str], int]) -> None:
    assert count("cl100k_base", "hello world") == 2
    assert count("o200k_base", "hello world") == 2
    # encode_with_special_tokens: a special token in the text is one token.
    assert count("cl100k_base", "<|endoftext|>") == 1
    # 3 per message + 1, the text, 3 for the reply.
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
    assert count_prompt_tokens("completions", body) == 3 + 4 + 2


def test_chat_completions_text_parts_joined_by_a_space(count: Callable[[str, str], int]) -> None:
    body = {
        "model": "gpt-4",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "data:,"}},
                    {"type": "text", "text": "this picture"},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [{"id": "x"}]},
        ],
    }
    assert prompt_texts("completions", body) == ["You are terse.", "Describe this picture", ""]
    expected = 3 + 3 * 4 + count("cl100k_base", "You are terse.")
    expected += count("cl100k_base", "Describe this picture")
    assert count_prompt_tokens("completions", body) == expected


def test_anthropic_messages_system_and_blocks() -> None:
    body = {
        "model": "claude-haiku-4-5",
        "system": [{"type": "text", "text": "rule one"}, {"type": "text", "text": "rule two"}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "a"},
                {"type": "image", "source": {}},
                {"type": "text", "text": "b"},
            ]},
            {"role": "assistant", "content": "c"},
        ],
    }  # fmt: skip
    assert prompt_texts("messages", body) == ["rule one\nrule two", "a b", "c"]
    assert prompt_texts("messages", {"system": "", "messages": []}) == []  # empty: no message


def test_responses_instructions_input_and_items() -> None:
    assert prompt_texts("responses", {"instructions": "be brief", "input": "hi"}) == [
        "be brief", "hi",
    ]  # fmt: skip
    body = {
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "one"},
                {"type": "input_image", "image_url": "x"},
                {"type": "input_text", "text": "two"},
            ]},
            {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"},
            {"role": "tool", "content": "not a message role"},
            {"role": "assistant", "content": "three"},
        ],
    }  # fmt: skip
    assert prompt_texts("responses", body) == ["one\ntwo", "three"]


def test_gemini_contents_and_system_instruction() -> None:
    body = {
        "systemInstruction": {"parts": [{"text": "sys a"}, {"text": "sys b"}]},
        "contents": [
            {"role": "user", "parts": [{"text": "x"}, {"inlineData": {}}, {"text": "y"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f"}}]},
        ],
    }
    assert prompt_texts("generateContent", body) == ["sys a\nsys b", "x y", ""]


def test_uncounted_route_types_and_unsupported_models() -> None:
    for route_type in ("embeddings", "anthropicTokenCount", "passthrough", "detect"):
        assert count_prompt_tokens(route_type, {"model": "gpt-4o", "input": "x"}) is None
    with pytest.raises(LLMRequestError) as info:
        count_prompt_tokens("completions", {"model": "davinci", "messages": []})
    assert (info.value.status, info.value.body) == (
        400, "failed to process LLM request: unsupported model"
    )


def test_encodings_are_built_without_the_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import tiktoken.load

    def no_download(*args: object, **kwargs: object) -> bytes:
        raise AssertionError("tiktoken tried to fetch a file")

    monkeypatch.setattr(tiktoken.load, "read_file", no_download)
    monkeypatch.setattr(tiktoken.load, "read_file_cached", no_download)
    monkeypatch.setattr(tokenizer, "_counters", {})
    tokenizer.preload()
    assert tokenizer._counters["o200k_base"]("hello world") == 2
