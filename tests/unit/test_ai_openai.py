from __future__ import annotations

import gzip
import json
import zlib

import pytest

from agw_fast.errors import ProxyError
from agw_fast.llm.providers.openai import (
    LLMRequestError,
    RouteTypeResolver,
    decode_request_body,
    default_path,
    resolve_route_type,
    rewrite_request_body,
)

CHAT = b'{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'


# --- rewrite_request_body -------------------------------------------------------------------


def test_unchanged_body_is_returned_as_the_same_object() -> None:
    out = rewrite_request_body(CHAT, model_override=None)
    assert out.body is CHAT
    assert not out.changed
    assert out.model == "gpt-4o-mini"
    assert out.stream is False


def test_override_equal_to_body_model_changes_nothing() -> None:
    out = rewrite_request_body(CHAT, model_override="gpt-4o-mini")
    assert out.body is CHAT
    assert not out.changed


def test_override_replaces_model_and_reserialises_compactly() -> None:
    body = b'{ "model" : "foo", "messages" : [ ] }'
    out = rewrite_request_body(body, model_override="command")
    assert out.changed
    assert out.model == "command"
    assert out.body == b'{"model":"command","messages":[]}'


def test_override_inserts_a_missing_model() -> None:
    out = rewrite_request_body(b'{"messages":[]}', model_override="command")
    assert json.loads(out.body) == {"messages": [], "model": "command"}
    assert out.model == "command"


@pytest.mark.parametrize(
    "body",
    [b'{"messages":[]}', b'{"model":null}', b'{"model":3}', b'{"model":["a"]}'],
)
def test_missing_or_non_string_model_is_400(body: bytes) -> None:
    with pytest.raises(LLMRequestError) as info:
        rewrite_request_body(body, model_override=None)
    err = info.value
    assert err.status == 400
    assert err.message == "missing field: model not specified"
    assert str(err) == "failed to process LLM request: missing field: model not specified"
    assert isinstance(err, ProxyError)
    assert err.body == str(err)


def test_invalid_json_message() -> None:
    with pytest.raises(LLMRequestError) as info:
        rewrite_request_body(b"", model_override="m")
    assert info.value.status == 400
    assert info.value.message == "invalid JSON: Expecting value: line 1 column 1 (char 0)"


@pytest.mark.parametrize(
    "body", [b"[1,2]", b'"model"', b"42", b"null", b"\xff\xfe\xfa", b"[" * 100_000]
)
def test_non_object_or_undecodable_body_is_400(body: bytes) -> None:
    with pytest.raises(LLMRequestError) as info:
        rewrite_request_body(body, model_override="m")
    assert info.value.status == 400
    assert info.value.message.startswith("invalid JSON: ")


def test_stream_options_injected_when_absent() -> None:
    body = b'{"model":"m","stream":true,"messages":[]}'
    out = rewrite_request_body(body, model_override=None)
    assert out.changed and out.stream
    assert (
        out.body
        == b'{"model":"m","stream":true,"messages":[],"stream_options":{"include_usage":true}}'
    )


def test_null_stream_options_counts_as_absent() -> None:
    body = b'{"model":"m","stream":true,"stream_options":null}'
    out = rewrite_request_body(body, model_override=None)
    assert out.body == b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'


@pytest.mark.parametrize("stream_options", [b'{"include_usage":false}', b"{}", b"[]", b"1"])
def test_client_stream_options_are_left_alone(stream_options: bytes) -> None:
    body = b'{"model":"m","stream":true,"stream_options":' + stream_options + b"}"
    out = rewrite_request_body(body, model_override=None)
    assert out.body is body
    assert out.stream


@pytest.mark.parametrize("stream", [b"false", b'"true"', b"1", b"null"])
def test_only_literal_true_streams(stream: bytes) -> None:
    body = b'{"model":"m","stream":' + stream + b"}"
    out = rewrite_request_body(body, model_override=None)
    assert out.body is body
    assert out.stream is False


def test_include_usage_false_skips_injection() -> None:
    body = b'{"model":"m","stream":true}'
    out = rewrite_request_body(body, model_override=None, include_usage=False)
    assert out.body is body
    assert out.stream


def test_unicode_is_preserved_unescaped() -> None:
    body = '{"model":"x","messages":[{"content":"héllo 😀 \\u00e9"}]}'.encode()
    out = rewrite_request_body(body, model_override="y")
    assert out.body == '{"model":"y","messages":[{"content":"héllo 😀 é"}]}'.encode()


def test_lone_surrogate_survives_reserialisation() -> None:
    body = b'{"model":"x","content":"\\ud800"}'
    out = rewrite_request_body(body, model_override="y")
    assert json.loads(out.body) == {"model": "y", "content": "\ud800"}


def test_log_fields() -> None:
    body = b'{"model":"m","temperature":0.2,"top_p":1,"max_tokens":64}'
    out = rewrite_request_body(body, model_override=None)
    assert (out.temperature, out.top_p, out.max_tokens) == (0.2, 1, 64)
    body = b'{"model":"m","temperature":"hot","max_completion_tokens":9,"max_tokens":64}'
    out = rewrite_request_body(body, model_override=None)
    assert (out.temperature, out.top_p, out.max_tokens) == (None, None, 9)
    out = rewrite_request_body(b'{"model":"m","temperature":true}', model_override=None)
    assert out.temperature is None


# --- route types ----------------------------------------------------------------------------


def test_empty_routes_mean_completions() -> None:
    assert resolve_route_type("/v1/embeddings", ()) == "completions"
    assert RouteTypeResolver([])("/anything") == "completions"


def test_longest_suffix_wins_regardless_of_order() -> None:
    routes = [
        ("/completions", "passthrough"),
        ("/chat/completions", "completions"),
        ("/v1/messages", "messages"),
        ("/messages/count_tokens", "anthropicTokenCount"),
    ]
    resolve = RouteTypeResolver(routes)
    assert resolve("/v1/chat/completions") == "completions"
    assert resolve("/v1/completions") == "passthrough"
    assert resolve("/v1/messages") == "messages"
    assert resolve("/v1/messages/count_tokens") == "anthropicTokenCount"
    assert resolve("/v1/models") == "completions"


def test_wildcard_is_the_fallback_not_a_match_for_everything() -> None:
    routes = [("*", "passthrough"), ("/v1/models", "models")]
    resolve = RouteTypeResolver(routes)
    assert resolve("/v1/models") == "models"
    assert resolve("/v1/chat/completions") == "passthrough"
    assert resolve_route_type("/x", [("*", "detect")]) == "detect"


def test_query_is_ignored() -> None:
    resolve = RouteTypeResolver([("/embeddings", "embeddings")])
    assert resolve("/v1/embeddings?x=1") == "embeddings"
    assert resolve("/v1/chat?q=/embeddings") == "completions"


def test_equal_length_suffixes_keep_config_order() -> None:
    resolve = RouteTypeResolver([("/ab", "detect"), ("/b", "x"), ("/zb", "y")])
    assert resolve("/ab") == "detect"
    resolve = RouteTypeResolver([("ab", "first"), ("ab", "second")])
    assert resolve("/ab") == "first"


# --- default path ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route_type", "expected"),
    [
        ("completions", "/v1/chat/completions"),
        ("responses", "/v1/responses"),
        ("embeddings", "/v1/embeddings"),
        ("realtime", "/v1/realtime"),
        ("rerank", "/v1/rerank"),
        ("messages", "/v1/chat/completions"),
        ("detect", "/v1/chat/completions"),
    ],
)
def test_default_path(route_type: str, expected: str) -> None:
    assert default_path(route_type, None) == expected


def test_default_path_with_prefix() -> None:
    assert default_path("completions", "/compatibility/v1") == (
        "/compatibility/v1/chat/completions"
    )
    assert default_path("embeddings", "/openai/v1/") == "/openai/v1/embeddings"
    assert default_path("completions", "") == "/chat/completions"


# --- decode_request_body --------------------------------------------------------------------


def test_identity_returns_the_same_object() -> None:
    assert decode_request_body(CHAT, None, 1024) is CHAT
    assert decode_request_body(CHAT, "identity", 1024) is CHAT
    assert decode_request_body(CHAT, "", 1024) is CHAT


def test_identity_over_limit_is_413() -> None:
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(CHAT, None, len(CHAT) - 1)
    assert info.value.status == 413
    assert str(info.value) == "failed to process LLM request: request was too large"


@pytest.mark.parametrize("coding", ["gzip", "x-gzip", "GZIP", " gzip "])
def test_gzip(coding: str) -> None:
    assert decode_request_body(gzip.compress(CHAT), coding, 1024) == CHAT


def test_gzip_multiple_members_and_zero_padding() -> None:
    body = gzip.compress(CHAT[:10]) + gzip.compress(CHAT[10:]) + b"\x00\x00"
    assert decode_request_body(body, "gzip", 1024) == CHAT


def test_deflate_zlib_and_raw() -> None:
    assert decode_request_body(zlib.compress(CHAT), "deflate", 1024) == CHAT
    raw = zlib.compressobj(wbits=-15)
    body = raw.compress(CHAT) + raw.flush()
    assert decode_request_body(body, "deflate", 1024) == CHAT


def test_stacked_codings_are_undone_right_to_left() -> None:
    body = gzip.compress(zlib.compress(CHAT))
    assert decode_request_body(body, "deflate, gzip", 1024) == CHAT


def test_exact_limit_is_allowed() -> None:
    assert decode_request_body(gzip.compress(CHAT), "gzip", len(CHAT)) == CHAT
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(gzip.compress(CHAT), "gzip", len(CHAT) - 1)
    assert info.value.status == 413


def test_decompression_bomb_is_413_without_inflating_it() -> None:
    bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
    assert len(bomb) < 100_000
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(bomb, "gzip", 2 * 1024 * 1024)
    assert info.value.status == 413


def test_bomb_split_across_members_is_413() -> None:
    member = gzip.compress(b"a" * 600_000)
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(member * 4, "gzip", 2_000_000)
    assert info.value.status == 413


@pytest.mark.parametrize("coding", ["br", "zstd", "compress", "gzip, br"])
def test_unknown_encoding_is_415(coding: str) -> None:
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(CHAT, coding, 1024)
    assert info.value.status == 415
    assert "unsupported content encoding" in info.value.message


@pytest.mark.parametrize(
    ("body", "coding"),
    [
        (b"not gzip at all", "gzip"),
        (gzip.compress(CHAT)[:-12], "gzip"),
        (gzip.compress(CHAT) + b"garbage", "gzip"),
        (b"\x78\x9c\x00garbage", "deflate"),
    ],
)
def test_corrupt_or_truncated_is_400(body: bytes, coding: str) -> None:
    with pytest.raises(LLMRequestError) as info:
        decode_request_body(body, coding, 1024)
    assert info.value.status == 400
    assert info.value.message.startswith(f"invalid {coding} body")
