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
import sys

__all__ = ["AccessLog", "configure_logging", "logger"]

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


def _text_value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\n'):
        return json.dumps(text)
    return text


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
            line = "info request " + " ".join(
                f"{key}={_text_value(value)}" for key, value in fields.items() if value is not None
            )
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
