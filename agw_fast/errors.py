"""Errors that carry their meaning: a config path, or the HTTP status they imply."""

from __future__ import annotations

__all__ = ["ConfigError", "ProxyError"]


class ConfigError(Exception):
    """A configuration problem, located by a path such as `binds[0].listeners[0].routes[1]`.

    `str()` is the one-line message the CLI prints after `config error: `.
    """

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


class ProxyError(Exception):
    """A request failure with the status and body agentgateway would send (plain text unless
    `content_type` says otherwise)."""

    def __init__(self, status: int, body: str, *, content_type: bytes = b"text/plain") -> None:
        super().__init__(body)
        self.status = status
        self.body = body
        self.content_type = content_type
