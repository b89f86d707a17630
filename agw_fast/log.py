"""Logging setup and the access log.

Access lines are formatted after the response is complete and written in one batch per
event-loop iteration (one write syscall for many requests), so logging stays off the
critical section of the hot path. Secrets never reach a line: we log no header values.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import sys

__all__ = ["AccessLog", "configure_logging", "format_fields", "logger", "text_value"]

logger = logging.getLogger("agw_fast")

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


def configure_logging(level: str) -> int:
    """Set the package log level from `config.logging.level`; returns the numeric level."""
    numeric = _LEVELS.get(level.split(",")[0].strip().lower(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(numeric)
    logger.propagate = False
    return numeric


# Values with whitespace, quotes or "=" (or empty) are quoted so a line stays parseable.
_NEEDS_QUOTES = re.compile(r'[\s"=]|^$').search


def text_value(value: object) -> str:
    """A value as it appears after `key=` in a text line (quoted when it must be)."""
    text = value if type(value) is str else str(value)
    if _NEEDS_QUOTES(text):
        return json.dumps(text)
    return text


def format_fields(fields: dict[str, object]) -> str:
    """`key=value` pairs of a text line; None values are left out."""
    return " ".join(
        f"{key}={text_value(value)}" for key, value in fields.items() if value is not None
    )


class AccessLog:
    """One line per request on stdout, agentgateway's field names, batched per loop turn."""

    def __init__(self, loop: asyncio.AbstractEventLoop, fmt: str, fd: int | None = None) -> None:
        self.loop = loop
        self.json = fmt == "json"
        self.fd = sys.stdout.fileno() if fd is None else fd
        self.lines: list[str] = []

    def emit(self, fields: dict[str, object]) -> None:
        if self.json:
            line = json.dumps({"level": "info", "message": "request", **fields})
        else:
            line = "info request " + format_fields(fields)
        self.emit_line(line)

    def emit_line(self, line: str) -> None:
        if not self.lines:
            self.loop.call_soon(self.flush)
        self.lines.append(line)

    def flush(self) -> None:
        if not self.lines:
            return
        data = ("\n".join(self.lines) + "\n").encode("utf-8", "replace")
        self.lines.clear()
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except BlockingIOError:
            pass  # a full stdout pipe must not stall the proxy: drop the rest of the batch
        except OSError:
            pass
