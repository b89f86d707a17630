"""The access log: one line per request, written in one batch per event-loop turn.

Access lines are formatted after the response is complete and written with one write syscall
for many requests, so logging stays off the critical section of the hot path. Secrets never
reach a line: no header values are logged (unless an `accessLog.add` expression asks).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from agw_fast.log import format_fields

__all__ = ["AccessLog"]


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
        # A blocking write, as nginx's access log: a reader that stops reading stdout stalls
        # the worker rather than lose lines (run the gateway under something that reads it).
        # One write per loop turn keeps the syscalls off the per-request path.
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
        except OSError:
            pass  # stdout closed: nowhere to log to
