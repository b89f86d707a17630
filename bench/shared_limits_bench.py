"""What shared limits (`--limits`, counted in Redis) cost per request, next to local ones.

    python -m bench.shared_limits_bench [--duration S] [--reps N] [--quick]

One agw-fast worker per target, each a `directResponse` route (no upstream: the limit's cost
is not diluted by proxying), wrk -c32 closed loop, interleaved repetitions, medians:
  none        the route without limits
  local       localRateLimit (a 10^9-token bucket: checked on every request, never refuses)
  shared      the same bucket shared through Redis (`shareLocalRateLimits`)
  shared-key  a per-key budget instead (`key: request.headers["x-key"]`, one CEL evaluation
              per request), 10^9 requests
CPU is the gateway's process tree (utime + stime) per request; Redis' own CPU is shown apart.
Needs wrk and redis-server (bench/ensure_tools.sh installs them as root).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench.procs import cpu_delta, cpu_snapshot, free_port, wait_port
from bench.wrk import run_wrk

__all__ = ["main"]

WORK = Path(__file__).resolve().parent / ".work" / "shared-limits"
BIG = 10**9


def _config(port: int, limited: bool) -> str:
    policies: dict[str, object] = {"directResponse": {"status": 200, "body": "ok"}}
    if limited:
        policies["localRateLimit"] = [
            {"maxTokens": BIG, "tokensPerFill": BIG, "fillInterval": "1s"}
        ]
    doc = {
        "config": {"statsAddr": "off", "adminAddr": "off", "readinessAddr": "off"},
        "binds": [{"port": port, "listeners": [{"routes": [{"name": "r",
                                                           "policies": policies}]}]}],
    }
    return json.dumps(doc)


def _limits(redis_port: int, keyed: bool) -> str:
    text = f'redis: {{url: "redis://127.0.0.1:{redis_port}/0", keyPrefix: "bench:"}}\n'
    if keyed:
        text += (
            "budgets:\n- {name: per-key, key: 'request.headers[\"x-key\"]', "
            f"maxTokens: {BIG}, fillInterval: 1s}}\n"
        )
    else:
        text += "shareLocalRateLimits: true\n"
    return text


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with open(log, "wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="1 rep of 2 s")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.duration = 1, 2.0
    wrk, redis_server = shutil.which("wrk"), shutil.which("redis-server")
    if wrk is None or redis_server is None:
        print("shared limits bench: needs wrk and redis-server (bash bench/ensure_tools.sh)",
              file=sys.stderr)
        return 1
    WORK.mkdir(parents=True, exist_ok=True)
    script = WORK / "get.lua"
    script.write_text('wrk.method = "GET"\nwrk.headers["x-key"] = "bench-key"\n')
    redis_port = free_port()
    procs = [_start([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1",
                     "--save", "", "--appendonly", "no"], WORK / "redis.log")]
    redis_proc = procs[0]
    targets: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        wait_port(redis_port, 10)
        for name, limited, limits in (
            ("none", False, None), ("local", True, None),
            ("shared", True, _limits(redis_port, keyed=False)),
            ("shared-key", False, _limits(redis_port, keyed=True)),
        ):
            port = free_port()
            config = WORK / f"{name}.json"
            config.write_text(_config(port, limited))
            cmd = [sys.executable, "-m", "agw_fast", "-f", str(config), "--workers", "1",
                   "--bind-address", "127.0.0.1"]
            if limits is not None:
                (WORK / f"{name}-limits.yaml").write_text(limits)
                cmd += ["--limits", str(WORK / f"{name}-limits.yaml")]
            proc = _start(cmd, WORK / f"{name}.log")
            procs.append(proc)
            if not wait_port(port, 20):
                print(f"{name}: did not start; see {WORK / (name + '.log')}", file=sys.stderr)
                return 1
            targets[name] = (proc, port)
        results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in targets}
        for _ in range(args.reps):
            for name, (proc, port) in targets.items():
                url = f"http://127.0.0.1:{port}/"
                run_wrk(wrk, url, script=script, connections=args.connections, duration=1)
                before = cpu_snapshot([proc.pid, redis_proc.pid])
                result = run_wrk(wrk, url, script=script, connections=args.connections,
                                 duration=args.duration)
                after = cpu_snapshot([proc.pid, redis_proc.pid])
                delta = cpu_delta(before, after)
                redis_s = delta.per_pid_s.get(redis_proc.pid, 0.0)
                total = result.requests or 1
                if result.errors:
                    print(f"{name}: {result.errors} errors (non-2xx included)", file=sys.stderr)
                results[name].append((
                    result.rps,
                    (delta.cpu_s - redis_s) / total * 1e6,
                    redis_s / total * 1e6,
                ))
                time.sleep(0.2)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    base = statistics.median(r[1] for r in results["local"])
    print(f"\nshared limits: wrk -c{args.connections} -d{args.duration:g}s GET, 1 worker, "
          f"directResponse route, median of {args.reps}")
    print(f"{'target':<12} {'req/s':>10} {'gw CPU µs/req':>14} {'vs local':>9} "
          f"{'redis µs/req':>13}")
    for name, rows in results.items():
        rps = statistics.median(r[0] for r in rows)
        cpu = statistics.median(r[1] for r in rows)
        redis_cpu = statistics.median(r[2] for r in rows)
        print(f"{name:<12} {rps:>10.0f} {cpu:>14.1f} {cpu - base:>+9.1f} {redis_cpu:>13.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
