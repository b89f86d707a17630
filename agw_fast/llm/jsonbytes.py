"""JSON from UTF-8 bytes, the one decoding path the LLM modules share."""

from __future__ import annotations

import json

__all__ = ["loads"]

_decode = json.JSONDecoder().decode


def loads(data: bytes) -> object:
    """`json.loads` for UTF-8 bytes, minus its per-call encoding sniffing: LLM APIs speak
    UTF-8, and invalid UTF-8 raises UnicodeDecodeError, a ValueError like bad JSON."""
    return _decode(data.decode("utf-8"))
