"""The measuring machinery every scenario shares.

`Settings` (what to run and how long), `Bench` (servers + settings), interleaved repetitions
with per-target error capture (`interleave`, `Collector`), aggregation (`summarize`), and one
wrk run with the proxy tree's CPU accounted over the measured window (`measure_wrk`).
"""

from __future__ import annotations

import os
import statistics
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from bench.clients import ClientError, send_requests
from bench.payloads import CHAT_PATH, REQUEST_BODY
from bench.procs import cpu_delta, cpu_snapshot
from bench.targets import CPU_LOAD, Stack, Target
from bench.wrk import WrkError, WrkResult, lua_script, run_wrk

__all__ = [
    "FAILURES",
    "Bench",
    "Collector",
    "Rep",
    "Settings",
    "brief",
    "check_errors",
    "interleave",
    "load_cpu",
    "measure_wrk",
    "summarize",
]

Rep = dict[str, float]
MAX_ERROR_RATE = 0.01  # above this a repetition is recorded as a failure, not as numbers
FAILURES = (WrkError, ClientError, OSError, subprocess.SubprocessError, ValueError)


@dataclass
class Settings:
    reps: int = 3
    duration: float = 5.0  # measured seconds per wrk run
    warmup: float = 1.0  # unmeasured load before each measured run
    workers: int = max(2, os.cpu_count() or 2)
    saturation_conns: int = 32
    idle_conns: int = 5000
    ttfb_requests: int = 400
    sse_conns: int = 256
    sse_events: int = 50
    sse_delay: float = 0.002
    churn_conns: int = 16
    balance_conns: int = 64
    rate_fraction: float = 0.5
    rate_max: float = 6000.0  # the Python open-loop generator keeps up to ~6k req/s here
    stream_count: int = 10_000  # --streams: concurrent slow SSE streams (bench/streams.py)
    stream_events: int = 50  # content events per stream
    stream_interval: float = 0.1  # seconds between a stream's events
    pin: bool = False

    @classmethod
    def quick(cls) -> Settings:
        return cls(
            reps=1,
            duration=1.0,
            warmup=0.0,
            idle_conns=500,
            ttfb_requests=50,
            sse_conns=64,
            sse_events=20,
            rate_max=1000.0,
            stream_count=500,
            stream_events=30,
        )


@dataclass
class Bench:
    """What every scenario needs: the servers, the settings, tools and scratch space."""

    stack: Stack
    settings: Settings
    work: Path
    log: Callable[[str], None]
    results: dict[str, dict[str, object]]  # scenarios finished so far (rate reads saturation)
    peers: list[Callable[[Bench, int], Target]]

    @property
    def wrk(self) -> str:
        assert self.stack.tools.wrk is not None, "wrk is required"
        return self.stack.tools.wrk

    def script(
        self, name: str, body: bytes, *, close: bool = False, target: Target | None = None
    ) -> Path:
        """The wrk script `name`; with a `target` that needs its own request fields (a JWT),
        that target's variant `<name>-<target>.lua`."""
        if target is not None and target.headers:
            path = self.work / "lua" / f"{name}-{target.name}.lua"
            return lua_script(path, body, close=close, headers=target.headers)
        return lua_script(self.work / "lua" / f"{name}.lua", body, close=close)


# --- aggregation -------------------------------------------------------------------------


def summarize(reps: list[Rep]) -> dict[str, dict[str, float]]:
    """Median, min and max of every numeric metric across repetitions."""
    keys: list[str] = []
    for rep in reps:
        keys += [
            k for k, v in rep.items() if isinstance(v, int | float) and k not in keys and k != "rep"
        ]
    out: dict[str, dict[str, float]] = {}
    for key in keys:
        values = [float(rep[key]) for rep in reps if isinstance(rep.get(key), int | float)]
        if values:
            out[key] = {
                "median": statistics.median(values),
                "min": min(values),
                "max": max(values),
            }
    return out


class Collector:
    """Per-target repetitions and errors, in the order targets were first seen."""

    def __init__(self) -> None:
        self.targets: dict[str, dict[str, object]] = {}

    def entry(self, target: Target) -> dict[str, object]:
        return self.targets.setdefault(
            target.name,
            {"description": target.description, "error": target.error, "reps": []},
        )

    def add(self, target: Target, rep: Rep) -> None:
        reps = self.entry(target)["reps"]
        assert isinstance(reps, list)
        reps.append(rep)

    def fail(self, target: Target, message: str) -> None:
        entry = self.entry(target)
        entry["error"] = entry["error"] or message

    def result(self, **extra: object) -> dict[str, object]:
        for entry in self.targets.values():
            reps = entry["reps"]
            assert isinstance(reps, list)
            entry["summary"] = summarize(reps)
        return {**extra, "targets": self.targets}


def interleave(
    bench: Bench,
    targets: Iterable[Target],
    measure: Callable[[Target], Rep],
    collector: Collector,
    label: str,
) -> None:
    targets = [t for t in targets if t.kind != "skipped"]
    for rep in range(bench.settings.reps):
        for target in targets:
            if not target.ok:
                collector.fail(target, target.error or "not started")
                continue
            dead = [p.name for p in target.procs if p.returncode() is not None]
            if dead:
                collector.fail(target, f"process exited: {target.procs[0].log_tail(5)}")
                continue
            try:
                result = measure(target)
            except FAILURES as exc:
                bench.log(f"  ! {label} {target.name} rep {rep + 1}: {exc}")
                collector.fail(target, f"{type(exc).__name__}: {exc}")
                continue
            collector.add(target, result | {"rep": float(rep)})
            bench.log(
                f"  {label} rep {rep + 1}/{bench.settings.reps} {target.name}: " + brief(result)
            )


def brief(rep: Rep) -> str:
    shown = []
    for key, fmt in (
        ("rps", "{:,.0f} req/s"),
        ("req_per_cpu_s", "{:,.0f} req/CPU-s"),
        ("p50_us", "p50 {:,.0f} µs"),
        ("p99_us", "p99 {:,.0f} µs"),
        ("cpu_per_event_us", "{:.1f} µs CPU/event"),
        ("bytes_per_conn", "{:,.0f} B/conn"),
        ("max_deviation", "max dev {:.0%}"),
        ("errors", "errors {:.0f}"),
    ):
        if key in rep and (key != "errors" or rep[key]):
            shown.append(fmt.format(rep[key]))
    return ", ".join(shown)


# --- wrk measurement with CPU accounting --------------------------------------------------


def _warm(bench: Bench, target: Target, script: Path, conns: int, body: bytes) -> None:
    if bench.settings.warmup >= 1 or target.scheme != "http":  # send_requests speaks plain HTTP
        run_wrk(
            bench.wrk,
            target.url(CHAT_PATH),
            script=script,
            connections=conns,
            duration=max(bench.settings.warmup, 1.0),
            cpu=load_cpu(bench),
        )
    else:
        send_requests(target.port, 20, body=body, conns=min(conns, 4), headers=target.headers)


def check_errors(errors: float, requests: float) -> None:
    """Failed responses make every per-request figure a lie (a fast 502 is cheap): refuse."""
    if errors > MAX_ERROR_RATE * max(requests, 1):
        raise WrkError(
            f"{errors:.0f} failed responses out of {requests:.0f} (non-2xx, socket "
            "errors or timeouts): see the target's log in bench/.work/logs"
        )


def load_cpu(bench: Bench) -> int | None:
    """The CPU for load generators under --pin (via `taskset`, part of util-linux)."""
    return CPU_LOAD if bench.stack.pin and bench.stack.tools.taskset else None


def measure_wrk(
    bench: Bench,
    target: Target,
    script: Path,
    *,
    conns: int,
    body: bytes = REQUEST_BODY,
    duration: float | None = None,
    warm: bool = True,
) -> tuple[Rep, WrkResult]:
    """One wrk run; the CPU of the proxy tree (and the upstream) over that run only."""
    if warm:
        _warm(bench, target, script, conns, body)
    proxy_pids, upstream_pids = target.pids, bench.stack.upstream_pids
    before = cpu_snapshot(proxy_pids), cpu_snapshot(upstream_pids)
    result = run_wrk(
        bench.wrk,
        target.url(CHAT_PATH),
        script=script,
        connections=conns,
        duration=duration or bench.settings.duration,
        cpu=load_cpu(bench),
    )
    proxy = cpu_delta(before[0], cpu_snapshot(proxy_pids))
    upstream = cpu_delta(before[1], cpu_snapshot(upstream_pids))
    check_errors(result.errors, result.requests)
    rep: Rep = {
        "rps": result.rps,
        "requests": float(result.requests),
        "errors": float(result.errors),
        **{f"{k}_us": v for k, v in result.latency_us.items()},
        "upstream_cpu_s": upstream.cpu_s,
    }
    if proxy_pids and result.requests:
        rep |= {
            "proxy_cpu_s": proxy.cpu_s,
            "proxy_cores": proxy.cpu_s / result.duration_s,
            "req_per_cpu_s": result.requests / proxy.cpu_s if proxy.cpu_s else 0.0,
            "cpu_us_per_req": proxy.cpu_s / result.requests * 1e6,
            "user_us_per_req": proxy.user_s / result.requests * 1e6,
            "sys_us_per_req": proxy.sys_s / result.requests * 1e6,
        }
    return rep, result
