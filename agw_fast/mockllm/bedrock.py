"""AWS Bedrock's Converse API for the mock: `POST /model/{model}/converse[-stream]`.

Replies follow the shapes of agentgateway's Bedrock fixtures: a `ConverseResponse` JSON, or
the AWS event stream (messageStart, contentBlockDelta..., contentBlockStop, messageStop,
metadata) in binary frames. Errors are Bedrock's `{"message": ...}` with `x-amzn-errortype`.
Pure functions, as apis.py.
"""

from __future__ import annotations

import json
from typing import Any

from agw_fast.llm.translate.bedrock_eventstream import encode_message

from .apis import ApiError, Completion, text_tokens

__all__ = ["SIGV4_SCHEME", "check_auth", "converse_frames", "converse_response", "error_body"]

SIGV4_SCHEME = b"AWS4-HMAC-SHA256 "
_DUMPS = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_ERROR_TYPES = {400: "ValidationException", 403: "AccessDeniedException",
                404: "ResourceNotFoundException", 429: "ThrottlingException"}  # fmt: skip


def check_auth(authorization: bytes | None) -> None:
    """A SigV4 signature (not verified here: the mock has no secret) or a Bedrock API key."""
    if authorization is None or not (
        authorization.startswith(SIGV4_SCHEME) or authorization.startswith(b"Bearer ")
    ):
        raise ApiError(403, "Missing Authentication Token")


def error_body(status: int, message: str) -> tuple[bytes, bytes]:
    """(the error JSON, its `x-amzn-errortype` header line)."""
    kind = _ERROR_TYPES.get(status, "InternalServerException" if status >= 500
                            else "ValidationException")  # fmt: skip
    return _DUMPS({"message": message}).encode(), b"x-amzn-errortype: %s\r\n" % kind.encode()


def _plan(payload: dict[str, Any], completion: Completion) -> tuple[int, tuple[str, ...], str]:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "A conversation must start with a user message.")
    config = payload.get("inferenceConfig")
    limit = config.get("maxTokens") if isinstance(config, dict) else None
    pieces, cut = completion.take(limit if isinstance(limit, int) else None)
    input_tokens = text_tokens(messages, payload.get("system"))
    return input_tokens, pieces, "max_tokens" if cut else "end_turn"


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"inputTokens": input_tokens, "outputTokens": output_tokens,
            "totalTokens": input_tokens + output_tokens}  # fmt: skip


def converse_response(payload: dict[str, Any], completion: Completion) -> dict[str, Any]:
    input_tokens, pieces, stop = _plan(payload, completion)
    return {
        "output": {"message": {"role": "assistant", "content": [{"text": "".join(pieces)}]}},
        "stopReason": stop,
        "usage": _usage(input_tokens, len(pieces)),
        "metrics": {"latencyMs": 1},
    }


def _frame(event: str, doc: dict[str, Any]) -> bytes:
    headers = {":event-type": event, ":content-type": "application/json",
               ":message-type": "event"}  # fmt: skip
    return encode_message(headers, _DUMPS(doc).encode())


def converse_frames(payload: dict[str, Any], completion: Completion) -> list[bytes]:
    """The event stream, one frame per list item (each sent as it would be generated)."""
    input_tokens, pieces, stop = _plan(payload, completion)
    frames = [_frame("messageStart", {"role": "assistant"})]
    frames += [_frame("contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": piece}})
               for piece in pieces]  # fmt: skip
    frames.append(_frame("contentBlockStop", {"contentBlockIndex": 0}))
    frames.append(_frame("messageStop", {"stopReason": stop}))
    frames.append(_frame("metadata", {"usage": _usage(input_tokens, len(pieces)),
                                      "metrics": {"latencyMs": 1}}))  # fmt: skip
    return frames
