"""agw-fast benchmark: one command, everything on 127.0.0.1, results under bench/results/.

    python bench/run.py                   # every scenario, 3 interleaved repetitions
    python bench/run.py --quick           # all scenarios, short (a smoke run, ~1 min)
    python bench/run.py --saturation --latency --reps 5 --duration 10
    python bench/run.py --peer all --saturation --latency   # + Portkey and LiteLLM

See bench/README.md for what each scenario measures and how.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import chart, history, report  # noqa: E402
from bench.harness import Bench, Settings  # noqa: E402
from bench.micro import run_micro  # noqa: E402
from bench.peers import PEERS, parse_peers, peer_details  # noqa: E402
from bench.policy_costs import format_cost_table  # noqa: E402
from bench.procs import raise_nofile_limit  # noqa: E402
from bench.scenarios import SCENARIOS  # noqa: E402
from bench.targets import Stack, Tools  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
SCHEMA_VERSION = 1
_PACKAGES = ("agw-fast", "uvloop", "h11", "httptools", "PyYAML", "certifi", "matplotlib")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="agw-fast benchmark suite",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="With no scenario flag every scenario runs (and the micro-benchmarks).",
    )
    group = parser.add_argument_group("scenarios")
    for name, fn in SCENARIOS.items():
        group.add_argument(
            f"--{name.replace('_', '-')}",
            action="store_true",
            help=(fn.__doc__ or "").strip().replace("%", "%%"),
        )
    group.add_argument("--micro", action="store_true", help="micro-benchmarks of hot-path pieces")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short version of every selected scenario (1 rep, 1 s runs)",
    )
    parser.add_argument("--reps", type=int, help="interleaved repetitions (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measured run (default 5)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load before each run")
    parser.add_argument("--workers", type=int, help="agw-fast workers for the N-worker target")
    parser.add_argument("--idle-conns", type=int, help="idle connections for --memory (5000)")
    parser.add_argument("--rate-max", type=float, help="cap on the open-loop offered rate")
    parser.add_argument(
        "--stream-count", type=int, help="concurrent streams for --streams (10000; quick 500)"
    )
    parser.add_argument("--stream-events", type=int, help="events per stream for --streams (50)")
    parser.add_argument(
        "--stream-interval", type=float, help="seconds between a stream's events (0.1)"
    )
    parser.add_argument(
        "--targets",
        help="comma-separated fnmatch patterns of targets to run, "
        "e.g. 'nginx*,agw-1w' (direct always runs)",
    )
    parser.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAMES",
        help="also measure peer gateways in saturation and c=1: comma-separated, or `all` ("
        + ", ".join(f"{p.name} {p.version}" for p in PEERS.values())
        + "; installed once into bench/.work/peers)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin load generator + upstream to CPU 0 and the proxy to CPU 1",
    )
    parser.add_argument(
        "--agw-cmd",
        help="command that starts agw-fast (default: the venv's "
        "agw-fast, else `python -m agw_fast`); also $AGW_FAST_CMD",
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="results directory (default bench/results; bench/.work/results for --quick)",
    )
    parser.add_argument("--work", type=Path, default=BENCH / ".work", help="scratch directory")
    parser.add_argument("--no-chart", action="store_true", help="do not draw the PNG")
    parser.add_argument(
        "--no-install", action="store_true", help="never pip-install matplotlib for the chart"
    )
    parser.add_argument(
        "--install-deps",
        action="store_true",
        help="apt-get install wrk and nginx-light when missing (needs root)",
    )
    args = parser.parse_args(argv)
    try:
        args.peer = parse_peers(args.peer)
    except ValueError as exc:
        parser.error(str(exc))
    return args


def settings_from(args: argparse.Namespace) -> Settings:
    settings = Settings.quick() if args.quick else Settings()
    overrides = {
        "reps": args.reps,
        "duration": args.duration,
        "warmup": args.warmup,
        "workers": args.workers,
        "idle_conns": args.idle_conns,
        "rate_max": args.rate_max,
        "stream_count": args.stream_count,
        "stream_events": args.stream_events,
        "stream_interval": args.stream_interval,
    }
    for key, value in overrides.items():
        if value is not None:
            setattr(settings, key, value)
    settings.pin = args.pin
    return settings


def install_deps(tools: Tools, log: Any) -> Tools:
    packages = [pkg for pkg, path in (("wrk", tools.wrk), ("nginx-light", tools.nginx)) if not path]
    if not packages:
        return tools
    if os.geteuid() != 0:
        log(f"--install-deps needs root; run: sudo apt-get install -y {' '.join(packages)}")
        return tools
    log(f"apt-get install -y {' '.join(packages)} ...")
    for cmd in (
        ["apt-get", "install", "-y", *packages],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", *packages],
    ):
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=900,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
        if cmd[1] == "install" and proc.returncode == 0:
            break
    return Tools.detect()


# --- machine and commit --------------------------------------------------------------------


def git_commit(repo: Path) -> str | None:
    """HEAD's commit id, read from the .git directory (no git process)."""
    git = repo / ".git"
    if git.is_file():  # a worktree: "gitdir: <path>"
        git = (repo / git.read_text().split(":", 1)[1].strip()).resolve()
    try:
        head = (git / "HEAD").read_text().strip()
    except OSError:
        return None
    if not head.startswith("ref:"):
        return head or None
    ref = head.split(":", 1)[1].strip()
    common = git
    try:  # a worktree's branches live in the main repository's git directory
        common = (git / (git / "commondir").read_text().strip()).resolve()
    except OSError:
        pass
    for base in (git, common):
        try:
            return (base / ref).read_text().strip()
        except OSError:
            pass
    try:
        for line in (common / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        pass
    return None


def _tool_version(argv: list[str]) -> str | None:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    text = (proc.stdout + proc.stderr).strip().splitlines()
    return text[0].strip() if text else None


def machine_info(tools: Tools) -> dict[str, Any]:
    cpu_model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_total = 0
    try:
        mem_total = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    packages = {}
    for name in _PACKAGES:
        try:
            packages[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {
        "cpu_model": cpu_model,
        "cores": os.cpu_count(),
        "memory_bytes": mem_total,
        "kernel": platform.release(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "packages": packages,
        "wrk": _tool_version([tools.wrk, "-v"]) if tools.wrk else None,
        "nginx": _tool_version([tools.nginx, "-v"]) if tools.nginx else None,
        "openssl": _tool_version([tools.openssl, "version"]) if tools.openssl else None,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[:3],
    }


def result_path(out: Path, date: dt.datetime, short: str) -> Path:
    stem = f"{date:%Y-%m-%d}-{short}"
    path, n = out / f"{stem}.json", 2
    while path.exists():
        path, n = out / f"{stem}-{n}.json", n + 1
    return path


# --- main --------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", flush=True)

    selected = [name for name in SCENARIOS if getattr(args, name)]
    run_micro_bench = args.micro or not (selected or args.micro)
    if not selected and not args.micro:
        selected = list(SCENARIOS)
    settings = settings_from(args)

    tools = Tools.detect()
    if args.install_deps:
        tools = install_deps(tools, log)
    for line in tools.missing():
        log(f"missing: {line}")
    if selected and tools.wrk is None:
        log(
            "cannot run load scenarios without wrk: apt-get install -y wrk "
            "(or rerun with --install-deps as root)"
        )
        return 2

    nofile = raise_nofile_limit(2 * settings.idle_conns + 4096)
    if nofile < settings.idle_conns + 1024:
        settings.idle_conns = max(100, nofile - 1024)
        log(f"open-file limit is {nofile}: --memory uses {settings.idle_conns} idle connections")

    now = dt.datetime.now().astimezone()
    commit = git_commit(REPO)
    mode = "quick" if args.quick else "full"
    out = args.out or (args.work / "results" if args.quick else BENCH / "results")
    out.mkdir(parents=True, exist_ok=True)
    work = args.work.resolve()

    stack = Stack(
        work,
        REPO,
        tools,
        agw_cmd=shlex.split(args.agw_cmd) if args.agw_cmd else None,
        pin=args.pin,
        log=log,
    )
    if args.targets:
        # Peers asked for with --peer run whatever --targets selects.
        stack.only = [p.strip() for p in args.targets.split(",") if p.strip()] + args.peer
    bench = Bench(stack, settings, work, log, {}, [PEERS[name].start for name in args.peer])
    log(
        f"agw-fast command: {' '.join(stack.agw_cmd)}; mode {mode}; reps {settings.reps}; "
        f"{settings.duration:g} s runs; scenarios: {', '.join(selected) or '-'}"
    )
    results: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "date": now.isoformat(timespec="seconds"),
        "commit": commit,
        "commit_short": (commit or "nocommit")[:8],
        "mode": mode,
        "argv": sys.argv[1:] if argv is None else argv,
        "settings": vars(settings).copy(),
        "machine": machine_info(tools),
        "peers": {name: {} for name in args.peer},  # filled in after the run (versions)
        "scenarios": {},
    }
    try:
        for name in selected:
            log(f"== {name}")
            try:
                bench.results[name] = SCENARIOS[name](bench)
            except Exception as exc:  # one broken scenario must not lose the others
                log(f"  ! scenario {name} failed: {type(exc).__name__}: {exc}")
                bench.results[name] = {"error": f"{type(exc).__name__}: {exc}", "targets": {}}
            stack.stop_proxies()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured so far")
    finally:
        stack.close()
    results["scenarios"] = bench.results
    results["notes"] = stack.notes
    results["peers"] = {name: peer_details(name, work) for name in args.peer}
    if run_micro_bench:
        log("== micro")
        results["micro"] = run_micro(quick=args.quick, log=log)
    results["elapsed_s"] = round(time.monotonic() - started, 1)

    rows = report.key_figures(results)
    results["key_figures"] = report.rows_json(rows)
    if args.peer:
        results["peer_table"] = report.peer_rows(results)
    path = result_path(out, now, results["commit_short"])
    path.write_text(json.dumps(results, indent=1, default=str) + "\n")

    print()
    print(report.format_details(results))
    print()
    print(
        f"agw-fast bench, {mode} mode, commit {results['commit_short']}, "
        f"{settings.reps} rep(s): medians [min…max]; ratios paired per repetition"
    )
    print(report.format_table(rows))
    cost_table = format_cost_table(results)
    if cost_table:
        print()
        print(cost_table)
    for name, note in sorted(stack.notes.items()):
        if note.startswith("skipped:"):
            print(f"{name} {note}")
    print()
    if args.peer:
        print(f"Against other gateways ({now:%Y-%m-%d}, {settings.reps} rep(s), same upstream)")
        print(report.format_peer_table(results))
        print()
    if not args.no_chart:
        plt = chart.load_matplotlib(allow_install=not args.no_install, log=log)
        if plt is not None and chart.plot_latency(results, path.with_suffix(".png"), plt):
            log(f"chart: {path.with_suffix('.png')}")
    history_path = history.write_history(out)
    log(f"results: {path}")
    log(f"history: {history_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
