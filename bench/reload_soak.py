"""Hot reload under load: wrk against the gateway while its config file changes every 200 ms.

    python -m bench.reload_soak [--seconds 30] [--interval 0.2] [--workers 2] [--connections 32]

The gateway (2 workers) proxies chat completions to the bundled mock LLM. The config
alternates between two versions that differ in a response header, recreate a route's
`localRateLimit` buckets (sent to the workers as memfds on every reload) and, every fifth
reload, add or remove a second bind (a port opened, then drained and closed). A warm-up phase
(wrk plus reloads) lets per-config allocations reach their steady state; then the parent's
and workers' RSS and open descriptors are taken, the soak runs, reloads stop, and they are
taken again. It fails (exit 1) on any failed request, on any non-2xx response, or if a
process grew by more than a few descriptors or MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from bench.payloads import CHAT_PATH, REQUEST_BODY
from bench.procs import Proc, descendants, find_tool, free_port, rss_bytes, wait_port
from bench.wrk import lua_script, run_wrk

__all__ = ["main"]

FD_SLACK = 8  # sockets a process may differ by (idle pooled upstream connections)
RSS_SLACK_MIB = 8.0


def config(port: int, extra_port: int, mock: int, version: int, with_extra: bool) -> str:
    extra = f"""- port: {extra_port}
  listeners:
  - routes:
    - policies: {{directResponse: {{body: "extra", status: 200}}}}
""" if with_extra else ""
    return f"""config:
  statsAddr: "127.0.0.1:0"
  readinessAddr: "127.0.0.1:0"
  adminAddr: "off"
  logging: {{level: warn}}
binds:
- port: {port}
  listeners:
  - routes:
    - name: chat
      policies:
        localRateLimit:
        - {{maxTokens: 100000000, tokensPerFill: 100000000, fillInterval: 1s, type: requests}}
        responseHeaderModifier: {{set: {{x-config-version: "{version}"}}}}
      backends: [{{host: "127.0.0.1:{mock}"}}]
{extra}"""


def fds(pid: int) -> tuple[int, int]:
    """(sockets, other descriptors: memfds, files, pipes) open in `pid`; (-1, -1) if gone."""
    sockets = other = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:"):
                sockets += 1
            else:
                other += 1
    except OSError:
        return -1, -1
    return sockets, other


def sample(root: int) -> dict[int, tuple[int, int, float]]:
    """pid -> (sockets, other descriptors, RSS MiB) of the parent and each child."""
    return {pid: (*fds(pid), rss_bytes(pid) / 2**20) for pid in [root, *descendants(root)]}


def readiness_port(log: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if "readiness listening on" in line:
                return int(line.rsplit(" ", 1)[1])
        time.sleep(0.05)
    raise RuntimeError("no readiness port in the log")


def wait_ready(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz/ready", timeout=2).is_success:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise RuntimeError("the gateway did not turn ready")


class Reloader(threading.Thread):
    def __init__(
        self, path: Path, write: dict[str, int], interval: float, sighup: int | None
    ) -> None:
        super().__init__(daemon=True)
        self.path, self.ports, self.interval = path, write, interval
        self.sighup = sighup  # the gateway's pid: signal each write (else the watch finds it)
        self.count = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            self.count += 1
            text = config(
                self.ports["main"], self.ports["extra"], self.ports["mock"],
                self.count % 2, (self.count // 5) % 2 == 1,
            )
            temporary = self.path.with_suffix(".tmp")
            temporary.write_text(text)
            os.replace(temporary, self.path)  # as editors save: a new inode each time
            if self.sighup is not None:
                os.kill(self.sighup, signal.SIGHUP)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--warmup", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument(
        "--trigger", choices=("sighup", "file"), default="sighup",
        help="sighup: signal after each write (a reload per write); file: the file watch "
        "alone (its 250 ms debounce merges writes)",
    )
    args = parser.parse_args(argv)
    wrk = find_tool("wrk")
    if wrk is None:
        print("wrk not found (apt-get install wrk)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="reload-soak-"))
    mock_port, port, extra = free_port(), free_port(), free_port()
    python = sys.executable
    mock = Proc("mock", [python, "-m", "agw_fast", "mock-llm", "--port", str(mock_port),
                         "--workers", "1"], work / "mock.log").start()  # fmt: skip
    path = work / "gateway.yaml"
    path.write_text(config(port, extra, mock_port, 0, False))
    gateway = Proc("gateway", [python, "-m", "agw_fast", "-f", str(path), "--workers",
                               str(args.workers), "--bind-address", "127.0.0.1"],
                   work / "gateway.log").start()  # fmt: skip
    try:
        if not (wait_port(mock_port, 20, alive=mock) and wait_port(port, 20, alive=gateway)):
            print("servers did not start", file=sys.stderr)
            return 2
        ready_port = readiness_port(gateway.log_path)
        script = lua_script(work / "chat.lua", REQUEST_BODY)
        url = f"http://127.0.0.1:{port}{CHAT_PATH}"
        ports = {"main": port, "extra": extra, "mock": mock_port}

        def soak(seconds: float) -> tuple[int, int, int]:
            hup = gateway.pid if args.trigger == "sighup" else None
            reloader = Reloader(path, ports, args.interval, hup)
            reloader.start()
            result = run_wrk(wrk, url, script=script, connections=args.connections,
                             duration=seconds, threads=2)  # fmt: skip
            reloader.stop.set()
            reloader.join()
            return result.requests, result.errors, reloader.count

        soak(args.warmup)
        path.write_text(config(port, extra, mock_port, 0, False))
        time.sleep(1.0)  # the last reload is debounced (250 ms) and applied
        wait_ready(ready_port)
        before = sample(gateway.pid)
        requests, errors, reloads = soak(args.seconds)
        path.write_text(config(port, extra, mock_port, 0, False))
        time.sleep(1.0)
        wait_ready(ready_port)
        after = sample(gateway.pid)
    finally:
        gateway.stop()
        mock.stop()
    log = gateway.log_path.read_text()
    applied = log.count("config reloaded")
    failures = [line for line in log.splitlines() if "ERROR" in line or "Traceback" in line]
    rows = []
    grew = False
    for pid in sorted(set(before) | set(after)):
        b, a = before.get(pid, (-1, -1, 0.0)), after.get(pid, (-1, -1, 0.0))
        role = "parent" if pid == gateway.pid else "child"
        rows.append({"pid": pid, "role": role, "sockets": [b[0], a[0]], "other_fds": [b[1], a[1]],
                     "rss_mib": [round(b[2], 1), round(a[2], 1)]})  # fmt: skip
        if b[0] < 0 or a[0] < 0:
            grew = True  # a process died or was replaced during the soak
        # Sockets vary with the idle upstream pool; memfds and files must not move at all.
        elif a[0] - b[0] > FD_SLACK or a[1] != b[1] or a[2] - b[2] > RSS_SLACK_MIB:
            grew = True
    report = {
        "seconds": args.seconds, "interval_s": args.interval, "workers": args.workers,
        "trigger": args.trigger,
        "requests": requests, "failed_requests": errors, "reloads_written": reloads,
        "reloads_applied_total": applied, "error_lines": failures[:5], "processes": rows,
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    ok = errors == 0 and not failures and not grew and requests > 0
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
