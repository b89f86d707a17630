"""The `process_*` metrics Prometheus client libraries export, one series per worker.

Read from `/proc` by the process serving `/metrics` when it is scraped, so the workers pay
nothing: each worker publishes its pid in its metrics slot (`SharedSlots.pid`). The series
carry a `worker` label (the slot index, stable across a worker's replacement) rather than
being summed: an open-fd count or a start time has no meaningful sum, and a single busy or
leaking worker is what an operator looks for (`sum(process_resident_memory_bytes)` gives the
gateway's total). A replaced worker's CPU counter starts again from zero, which Prometheus
treats as a counter reset.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

__all__ = ["ProcessStats", "read_process", "render_process_metrics"]

_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _boot_time() -> float:
    try:
        with open("/proc/stat", "rb") as stat:
            for line in stat:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except OSError:
        pass
    return 0.0


_BOOT = _boot_time()

# (cpu seconds, resident bytes, virtual bytes, open fds, max fds, start time)
ProcessStats = tuple[float, int, int, int, int, float]


def read_process(pid: int, parent: int | None = None) -> ProcessStats | None:
    """`pid`'s stats from /proc, or None if it is gone (or, given `parent`, is not a
    child of it: a pid from shared memory may be stale and reused by another process)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            text = file.read()
        # The command name may hold spaces and parentheses: fields follow the last ")".
        fields = text[text.rindex(b")") + 2 :].split()
        if parent is not None and int(fields[1]) != parent:
            return None
        open_fds = len(os.listdir(f"/proc/{pid}/fd"))
        max_fds = 0
        with open(f"/proc/{pid}/limits", "rb") as file:
            for line in file:
                if line.startswith(b"Max open files"):
                    soft = line.split()[3]
                    max_fds = int(soft) if soft.isdigit() else 0
    except (OSError, ValueError, IndexError):
        return None
    # proc(5): field 14 utime, 15 stime, 22 starttime (clock ticks), 23 vsize (bytes),
    # 24 rss (pages); `fields` starts at field 3.
    cpu = (int(fields[11]) + int(fields[12])) / _TICKS
    start = _BOOT + int(fields[19]) / _TICKS
    return cpu, int(fields[21]) * _PAGE, int(fields[20]), open_fds, max_fds, start


_METRICS = (
    ("process_cpu_seconds_total", "counter", "User and system CPU time spent, in seconds"),
    ("process_resident_memory_bytes", "gauge", "Resident memory size, in bytes"),
    ("process_virtual_memory_bytes", "gauge", "Virtual memory size, in bytes"),
    ("process_open_fds", "gauge", "Open file descriptors"),
    ("process_max_fds", "gauge", "The open-file limit"),
    ("process_start_time_seconds", "gauge", "Start time since the Unix epoch, in seconds"),
)


def render_process_metrics(workers: Iterable[tuple[int, ProcessStats]]) -> bytes:
    """The text exposition of each (worker index, its stats)."""
    rows = list(workers)
    if not rows:
        return b""
    out: list[str] = []
    for column, (name, kind, help_text) in enumerate(_METRICS):
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")
        for index, stats in rows:
            value = stats[column]
            text = repr(float(value)) if isinstance(value, float) else str(value)
            out.append(f'{name}{{worker="{index}"}} {text}')
    out.append("")
    return "\n".join(out).encode()
