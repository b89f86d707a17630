"""The bytes the bench sends and the upstreams answer with (an SDK-like chat completion)."""

from __future__ import annotations

import json

__all__ = [
    "API_KEY",
    "CHAT_PATH",
    "REQUEST_BODY",
    "RESPONSE_BODY",
    "STREAM_REQUEST_BODY",
    "request_bytes",
    "sse_event",
    "sse_final_events",
]

CHAT_PATH = "/v1/chat/completions"
API_KEY = "sk-bench-0000000000000000000000000000000000000000"

_REQUEST = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {
            "role": "user",
            "content": "Explain in one sentence why an HTTP reverse proxy in front of an LLM API "
            "should reuse its upstream connections.",
        },
    ],
    "max_tokens": 64,
    "temperature": 0.2,
    "user": "bench-user-0001",
}

# ~300 B, like an OpenAI SDK call; the streaming variant asks for usage in the last event.
REQUEST_BODY = json.dumps(_REQUEST, separators=(",", ":")).encode()
STREAM_REQUEST_BODY = json.dumps(
    {**_REQUEST, "stream": True, "stream_options": {"include_usage": True}},
    separators=(",", ":"),
).encode()

# 345 B `chat.completion`, served by the nginx upstream with `return 200 '...'`: it must
# stay free of `'` and `$` (nginx string syntax and variables).
RESPONSE_BODY = json.dumps(
    {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion",
        "created": 1732406400,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Reuse skips TCP+TLS handshake"},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 42, "completion_tokens": 9, "total_tokens": 51},
        "system_fingerprint": "fp_bench",
    },
    separators=(",", ":"),
).encode()


def request_bytes(
    host: str,
    path: str = CHAT_PATH,
    body: bytes = REQUEST_BODY,
    *,
    close: bool = False,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A complete HTTP/1.1 POST as an SDK would send it; `headers` replace the default
    fields of the same name or add to them."""
    fields = {
        "Host": host,
        "User-Agent": "agw-fast-bench/1",
        "Accept": "application/json",
        "Content-Type": "application/json",
        "Authorization": f"Bearer {API_KEY}",
    } | (headers or {})
    fields["Content-Length"] = str(len(body))
    if close:
        fields["Connection"] = "close"
    head = f"POST {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items())
    return (head + "\r\n").encode() + body


def sse_event(index: int) -> bytes:
    """One `chat.completion.chunk` event (~150 B on the wire), as OpenAI streams them."""
    chunk = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1732406400,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": {"content": f"tok{index} "}, "finish_reason": None}],
    }
    return b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n"


def sse_final_events(completion_tokens: int) -> bytes:
    """The usage event (`stream_options.include_usage`) and the `[DONE]` terminator."""
    usage = {
        "id": "chatcmpl-bench0001",
        "object": "chat.completion.chunk",
        "created": 1732406400,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {
            "prompt_tokens": 42,
            "completion_tokens": completion_tokens,
            "total_tokens": 42 + completion_tokens,
        },
    }
    return b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\ndata: [DONE]\n\n"
