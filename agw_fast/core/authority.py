"""The one host:port splitter for request authorities (Host values), IPv6 literals included."""

from __future__ import annotations

__all__ = ["split_authority"]


def split_authority(authority: bytes) -> tuple[bytes, bytes]:
    """(host, ":port" or b"") of a Host value; `[v6]` literals keep their brackets.

    Never raises: a malformed value splits somewhere harmless and then matches nothing.
    """
    if authority.startswith(b"["):
        end = authority.find(b"]")
        if end != -1:
            return authority[: end + 1], authority[end + 1 :]
        return authority, b""
    colon = authority.rfind(b":")
    if colon == -1:
        return authority, b""
    return authority[:colon], authority[colon:]
