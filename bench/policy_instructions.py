"""Instructions per request of each `--policy-costs` target, counted by callgrind.

CPU time on a shared 2-core machine swings by several per cent between runs; the number of
instructions a request executes does not. For each target (the base routes `agw-1w` and
`agw-ai`, one target per policy, `agw-unused-policies`) agw-fast runs under
`valgrind --tool=callgrind` twice, serving N1 and then N2 keep-alive requests on one
connection; the worker's (the busiest process's) total instructions give

    instructions per request = (I(N2) − I(N1)) / (N2 − N1)

so start-up, imports, the first requests' one-time work and shutdown cancel out. The configs
are exactly the bench's (bench/policy_costs.py), against the same origin (nginx, else the mock
LLM) and, for the tracing targets, the same OTLP sink. Spans still queued when a worker stops
are flushed at shutdown in both runs; the batches sent during the N2 − N1 requests count.

Slow (a minute or more per target): not part of `make bench`.

    python -m bench.policy_instructions                     # every target, N1=200, N2=1200
    python -m bench.policy_instructions --targets 'agw-1w,pc-cors' --json /tmp/ipr.json
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.clients import send_requests  # noqa: E402
from bench.policy_costs import (  # noqa: E402
    AI,
    PLAIN,
    UNUSED,
    UNUSED_LINE,
    config_doc,
    start_sink,
    unused_doc,
    variants,
)
from bench.procs import free_port, wait_port  # noqa: E402
from bench.targets import Stack, Tools, agw_config  # noqa: E402

__all__ = ["Case", "cases", "instructions_per_request", "main"]

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT = 600.0  # seconds: Python's start-up under callgrind is ~50× slower


@dataclass(frozen=True)
class Case:
    name: str
    line: str
    base: str | None
    doc: Callable[[int], dict[str, object]]
    headers: dict[str, str]


def cases(stack: Stack, upstream_port: int, sink_port: int) -> list[Case]:
    chosen = variants(stack, sink_port)
    out = [
        Case(PLAIN, "plain route", None, partial(agw_config, upstream_port=upstream_port), {}),
        Case(
            AI,
            "AI route",
            None,
            partial(agw_config, upstream_port=upstream_port, route="ai"),
            {},
        ),
    ]
    out += [
        Case(v.name, v.line, v.base, partial(config_doc, v, upstream_port), v.headers)
        for v in chosen
    ]
    out.append(Case(UNUSED, UNUSED_LINE, PLAIN, partial(unused_doc, chosen, upstream_port), {}))
    return out


def _total_instructions(out: Path, prefix: str, supervisor: int) -> int:
    """The worker's instruction total: the busiest process but the supervisor (valgrind's
    own pid, which execs Python; at small N its start-up outweighs a worker's requests)."""
    best = 0
    for path in out.glob(f"{prefix}.*"):
        if not path.suffix[1:].isdigit() or int(path.suffix[1:]) == supervisor:
            continue
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                best = max(best, int(line.split()[1]))
    if best == 0:
        raise RuntimeError(f"no worker profile {out / prefix}.<pid>")
    return best


def _run(case: Case, requests: int, out: Path, valgrind: str) -> int:
    port = free_port()
    config = out / f"{case.name}.json"
    config.write_text(json.dumps(case.doc(port), indent=2))
    prefix = f"cg.{case.name}.{requests}"
    for old in out.glob(f"{prefix}.*"):
        old.unlink()
    argv = [
        valgrind,
        "--tool=callgrind",
        f"--callgrind-out-file={out / prefix}.%p",
        sys.executable,
        "-m",
        "agw_fast",
        "-f",
        str(config),
        "--workers",
        "1",
        "--bind-address",
        "127.0.0.1",
    ]
    env = os.environ | {"PYTHONPATH": str(REPO)}
    with (out / f"{prefix}.log").open("wb") as log:
        proc = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        if not wait_port(port, START_TIMEOUT):
            raise RuntimeError(f"{case.name}: agw-fast did not start; see {out / prefix}.log")
        time.sleep(1.0)  # the worker's accept loop, not only its socket
        send_requests(port, requests, headers=case.headers)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=START_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return _total_instructions(out, prefix, proc.pid)


def instructions_per_request(case: Case, n1: int, n2: int, out: Path, valgrind: str) -> float:
    low = _run(case, n1, out, valgrind)
    high = _run(case, n2, out, valgrind)
    return (high - low) / (n2 - n1)


def format_table(rows: list[dict[str, object]]) -> str:
    header = ("policy", "target", "base", "instructions/req", "− base", "÷ base")
    lines: list[tuple[str, ...]] = [header]
    by_name = {str(row["target"]): row for row in rows}
    for row in rows:
        value = row.get("instructions_per_request")
        base = by_name.get(str(row["base"])) if row["base"] else None
        base_value = base.get("instructions_per_request") if base else None
        cells = [str(row["policy"]), str(row["target"]), str(row["base"] or "–")]
        if not isinstance(value, float):
            cells += [f"ERROR: {row.get('error')}", "", ""]
        elif isinstance(base_value, float):
            cells += [
                f"{value / 1e3:,.1f}k",
                f"{(value - base_value) / 1e3:+,.1f}k",
                f"{value / base_value:.3f}×",
            ]
        else:
            cells += [f"{value / 1e3:,.1f}k", "–", "–"]
        lines.append(tuple(cells))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = []
    for i, line in enumerate(lines):
        text.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            text.append("  ".join("-" * w for w in widths))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n1", type=int, default=200, help="requests in the first run")
    parser.add_argument("--n2", type=int, default=1200, help="requests in the second run")
    parser.add_argument("--targets", help="comma-separated fnmatch patterns (default: all)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--work", type=Path, default=REPO / "bench" / ".work", help="scratch")
    args = parser.parse_args(argv)
    if args.n2 <= args.n1:
        parser.error("--n2 must be larger than --n1")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        print("valgrind is not installed (Debian package `valgrind`)", file=sys.stderr)
        return 2
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    work = args.work.resolve()
    out = work / "callgrind"
    out.mkdir(parents=True, exist_ok=True)
    stack = Stack(work, REPO, Tools.detect(), log=log)
    rows: list[dict[str, object]] = []
    sink = None
    try:
        up = stack.upstream()
        if not up.ok:
            log(f"upstream did not start: {up.error}")
            return 1
        sink, sink_port = start_sink(stack)
        patterns = [p.strip() for p in (args.targets or "*").split(",") if p.strip()]
        for case in cases(stack, up.port, sink_port):
            if not any(fnmatch.fnmatchcase(case.name, p) for p in patterns):
                continue
            row: dict[str, object] = {"policy": case.line, "target": case.name, "base": case.base}
            try:
                value = instructions_per_request(case, args.n1, args.n2, out, valgrind)
                row["instructions_per_request"] = value
                log(f"{case.name}: {value:,.0f} instructions/request")
            except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
                row["error"] = f"{type(exc).__name__}: {exc}"
                log(f"{case.name}: {row['error']}")
            rows.append(row)
    finally:
        if sink is not None:
            sink.stop()
        stack.close()
    print(
        f"instructions per request, callgrind, (I({args.n2}) − I({args.n1})) / "
        f"{args.n2 - args.n1}, worker process"
    )
    print(format_table(rows))
    if args.json:
        args.json.write_text(json.dumps({"n1": args.n1, "n2": args.n2, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
