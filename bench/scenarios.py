"""The bench scenarios. Each returns a JSON-ready dict; none raises for one failed target.

Common shape: `{"method": ..., "targets": {name: {"description", "error", "reps": [...],
"summary": {metric: {"median", "min", "max"}}}}}`. Targets are interleaved inside every
repetition (direct, nginx, agw-fast, ... then again), so slow drifts of the shared machine hit
all of them alike.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from bench.clients import hold_idle_connections, percentiles, send_requests, sse_ttfb
from bench.harness import (
    FAILURES,
    Bench,
    Collector,
    Rep,
    brief,
    check_errors,
    interleave,
    load_cpu,
    measure_wrk,
)
from bench.payloads import CHAT_PATH, REQUEST_BODY, STREAM_REQUEST_BODY
from bench.policy_costs import policy_costs
from bench.procs import (
    cpu_delta,
    cpu_snapshot,
    descendants,
    leaf_pids,
    rss_bytes,
    sockets_per_pid,
)
from bench.streams import streams
from bench.targets import CPU_LOAD, LLM_MODEL, Target
from bench.wrk import run_wrk

__all__ = [
    "SCENARIOS",
    "balance",
    "churn",
    "latency",
    "memory",
    "policy_costs",
    "rate",
    "saturation",
    "sse",
    "streams",
    "translate",
]

# --- scenarios -----------------------------------------------------------------------------


def _main_targets(
    bench: Bench,
    *,
    workers_n: bool,
    tls: bool,
    ai: bool = True,
    policies: bool = False,
    peers: bool = False,
) -> list[Target]:
    stack, up = bench.stack, bench.stack.upstream()
    targets = [up]
    if not up.ok:
        return targets
    targets += [stack.nginx_proxy("nginx", up.port), stack.agw("agw-1w", up.port)]
    if workers_n:
        n = bench.settings.workers
        targets.append(stack.agw(f"agw-{n}w", up.port, workers=n))
    if ai:
        targets.append(stack.agw("agw-ai", up.port, route="ai"))
    if policies:  # right after the plain route it is compared with
        targets.append(stack.agw("agw-policies", up.port, route="policies"))
    if tls and stack.upstream_tls_port is not None:
        targets += [
            stack.nginx_proxy("nginx-tls", stack.upstream_tls_port, tls=True),
            stack.agw("agw-tls", stack.upstream_tls_port, tls=True),
            # Client TLS terminated by the proxy (the certificate the TLS upstream uses).
            stack.nginx_proxy("nginx-https", up.port, https=True),
            stack.agw("agw-https", up.port, https=True),
        ]
    if peers:  # peers only in saturation and c=1 (issue item 5)
        targets += [peer(bench, up.port) for peer in bench.peers]
    return targets


def saturation(bench: Bench) -> dict[str, object]:
    """Closed-loop wrk POST at -c32: req/s, latency, and requests per proxy CPU-second."""
    s = bench.settings
    collector = Collector()
    targets = _main_targets(bench, workers_n=True, tls=True, policies=True, peers=True)
    interleave(
        bench,
        targets,
        lambda t: measure_wrk(
            bench, t, bench.script("post", REQUEST_BODY, target=t), conns=s.saturation_conns
        )[0],
        collector,
        "saturation",
    )
    return collector.result(
        method=f"wrk -t1 -c{s.saturation_conns} -d{s.duration:g}s POST {len(REQUEST_BODY)} B "
        "JSON + Authorization (closed loop); CPU = utime+stime of the proxy process tree "
        "over the measured run",
        connections=s.saturation_conns,
    )


def latency(bench: Bench) -> dict[str, object]:
    """Unloaded latency: one connection, sequential requests (wrk -c1)."""
    collector = Collector()
    targets = _main_targets(bench, workers_n=False, tls=False, policies=True, peers=True)
    interleave(
        bench,
        targets,
        lambda t: measure_wrk(bench, t, bench.script("post", REQUEST_BODY, target=t), conns=1)[0],
        collector,
        "latency c=1",
    )
    return collector.result(
        method=f"wrk -t1 -c1 -d{bench.settings.duration:g}s POST; added = target − direct, "
        "per repetition (paired), then the median"
    )


def _saturation_rps(bench: Bench, target: Target) -> float:
    """agw-fast's own saturation rate: from this run's saturation scenario, else measured."""
    sat = bench.results.get("saturation", {}).get("targets", {})
    assert isinstance(sat, dict)
    summary = sat.get(target.name, {}).get("summary", {})
    if "rps" in summary:
        return float(summary["rps"]["median"])
    script = bench.script("post", REQUEST_BODY)
    rep, _ = measure_wrk(
        bench,
        target,
        script,
        conns=bench.settings.saturation_conns,
        duration=max(1.0, bench.settings.duration / 2),
    )
    return rep["rps"]


def rate(bench: Bench) -> dict[str, object]:
    """Latency at a fixed offered rate (50% of agw-fast's saturation), open loop."""
    s = bench.settings
    targets = _main_targets(bench, workers_n=False, tls=False)
    agw = next((t for t in targets if t.name == "agw-1w" and t.ok), None)
    basis, basis_rps = "agw-1w", 0.0
    if agw is not None:
        try:
            basis_rps = _saturation_rps(bench, agw)
        except FAILURES as exc:
            bench.log(f"  ! rate: could not measure agw-fast saturation: {exc}")
    if basis_rps <= 0:  # agw-fast is down: fall back to nginx so the baselines still run
        nginx = next((t for t in targets if t.name == "nginx" and t.ok), None)
        basis = "nginx"
        basis_rps = _saturation_rps(bench, nginx) if nginx else 2000.0
    offered = min(s.rate_fraction * basis_rps, s.rate_max)
    bench.log(
        f"  rate: offering {offered:,.0f} req/s "
        f"({s.rate_fraction:.0%} of {basis} saturation {basis_rps:,.0f}, cap {s.rate_max:,.0f})"
    )

    def measure(target: Target) -> Rep:
        before = cpu_snapshot(target.pids)
        argv = [
            sys.executable,
            "-m",
            "bench.openloop",
            "--port",
            str(target.port),
            "--rate",
            f"{offered:.1f}",
            "--duration",
            f"{s.duration:g}",
            "--warmup",
            f"{max(0.2, min(1.0, s.warmup)):g}",
        ]
        if load_cpu(bench) is not None:
            argv = ["taskset", "-c", str(CPU_LOAD), *argv]
        proc = subprocess.run(
            argv,
            cwd=bench.stack.repo,
            capture_output=True,
            text=True,
            timeout=s.duration + 60,
            check=True,
        )
        cpu = cpu_delta(before, cpu_snapshot(target.pids))
        data = json.loads(proc.stdout)
        check_errors(data["errors"] + data["incomplete"], data["requests"])
        rep: Rep = {
            "offered_rps": data["offered_rps"],
            "achieved_rps": data["achieved_rps"],
            "requests": float(data["requests"]),
            "errors": float(data["errors"] + data["incomplete"]),
            **{f"{k}_us": float(v) for k, v in data["latency_us"].items()},
            **{f"service_{k}_us": float(v) for k, v in data["service_us"].items()},
            **{f"send_lag_{k}_us": float(v) for k, v in data["send_lag_us"].items()},
        }
        if target.pids and data["requests"]:
            rep["proxy_cpu_us_per_req"] = cpu.cpu_s / data["requests"] * 1e6
        return rep

    collector = Collector()
    interleave(bench, targets, measure, collector, "rate")
    return collector.result(
        method="open loop (bench/openloop.py, Python asyncio): request i scheduled at "
        "t0 + i/rate, latency measured from the scheduled send time (no coordinated "
        "omission); timer granularity ≈1 ms adds up to ~1 ms send lag to every target alike",
        offered_rps=offered,
        basis=basis,
        basis_saturation_rps=basis_rps,
    )


def sse(bench: Bench) -> dict[str, object]:
    """SSE: time to first event added over direct, and proxy CPU per relayed event."""
    s, stack = bench.settings, bench.stack
    # (a) TTFB: 3 events 1 ms apart, sequential requests on one keep-alive connection.
    up = stack.sse_upstream(3, 0.001)
    targets = [up]
    if up.ok:
        targets += [
            stack.nginx_proxy("nginx-sse", up.port),
            stack.agw("agw-sse", up.port),
            stack.agw("agw-sse-ai", up.port, route="ai"),
        ]

    def ttfb(target: Target) -> Rep:
        result = sse_ttfb(target.port, s.ttfb_requests)
        rep: Rep = percentiles(result.samples_us, (50.0, 90.0, 99.0))
        return {f"{k}_us": v for k, v in rep.items()} | {
            "events": float(result.events_per_response)
        }

    ttfb_collector = Collector()
    interleave(bench, targets, ttfb, ttfb_collector, "sse ttfb")
    for target in targets[1:]:
        stack.stop(target)

    # (b) CPU per event: many slow concurrent streams through wrk.
    up_load = stack.sse_upstream(s.sse_events, s.sse_delay)
    load_targets = [up_load]
    events = 0
    if up_load.ok:
        load_targets += [
            stack.nginx_proxy("nginx-sse-load", up_load.port),
            stack.agw("agw-sse-load", up_load.port),
            stack.agw("agw-sse-load-ai", up_load.port, route="ai"),
        ]
        try:
            events = sse_ttfb(up_load.port, 1, warmup=0).events_per_response
        except FAILURES as exc:
            bench.log(f"  ! sse: could not count events per stream: {exc}")
    script = bench.script("post-stream", STREAM_REQUEST_BODY)

    def load(target: Target) -> Rep:
        rep, result = measure_wrk(
            bench, target, script, conns=s.sse_conns, body=STREAM_REQUEST_BODY
        )
        relayed = result.requests * events
        rep["events_per_s"] = relayed / result.duration_s if result.duration_s else 0.0
        if "proxy_cpu_s" in rep and relayed:
            rep["cpu_per_event_us"] = rep["proxy_cpu_s"] / relayed * 1e6
        return rep

    load_collector = Collector()
    interleave(bench, load_targets, load, load_collector, "sse load")
    return {
        "upstream": stack.notes.get("sse_upstream", "unknown"),
        "ttfb": ttfb_collector.result(
            method=f"{s.ttfb_requests} sequential streaming POSTs on one keep-alive connection, "
            "3 events 1 ms apart; time from send to the first `data:` byte"
        ),
        "load": load_collector.result(
            method=f"wrk -c{s.sse_conns} streaming POSTs, {s.sse_events} content events "
            f"{s.sse_delay * 1e3:g} ms apart; proxy CPU / (responses × events per response)",
            events_per_response=events,
        ),
    }


# The `llm:` routes of the translate scenario: the untranslated baseline first (ratios divide
# by it), then the translated one.
LLM_TARGETS = ("agw-llm-openai", "agw-llm-anthropic")


def translate(bench: Bench) -> dict[str, object]:
    """`llm:` routes to the mock LLM, an OpenAI client: provider openAI (untranslated) vs
    anthropic (translated to /v1/messages and back); JSON at -c32 and SSE CPU per event."""
    s, stack = bench.settings, bench.stack
    # One mock LLM for both parts (the sse scenario's load upstream): it answers chat
    # completions and /v1/messages alike; the event count and spacing only apply to streams.
    up = stack.sse_upstream(s.sse_events, s.sse_delay)
    targets = [up]
    if up.ok:
        targets += [
            stack.nginx_proxy("nginx-llm", up.port),
            *(stack.agw(name, up.port, route=name.removeprefix("agw-")) for name in LLM_TARGETS),
        ]

    # (a) JSON: closed loop, as saturation (the Python mock is the slow part; CPU per
    # request stays valid).
    json_script = bench.script("post", REQUEST_BODY)
    json_collector = Collector()
    interleave(
        bench,
        targets,
        lambda t: measure_wrk(bench, t, json_script, conns=s.saturation_conns)[0],
        json_collector,
        "llm json",
    )

    # (b) SSE: events counted per target from one real stream through it, as the client sees
    # them (a translated stream has its own count: Anthropic's message_start, ping, block
    # start/stop events become no OpenAI chunk; the finish and usage chunks are added).
    events: dict[str, int] = {}
    upstream_events: dict[str, int] = {}
    if up.ok:
        try:
            upstream_events["/v1/messages"] = sse_ttfb(
                up.port,
                1,
                warmup=0,
                path="/v1/messages",
                headers={"anthropic-version": "2023-06-01"},
            ).events_per_response
            upstream_events[CHAT_PATH] = sse_ttfb(up.port, 1, warmup=0).events_per_response
        except FAILURES as exc:
            bench.log(f"  ! translate: could not count the mock's events: {exc}")
    stream_script = bench.script("post-stream", STREAM_REQUEST_BODY)

    def load(target: Target) -> Rep:
        if target.name not in events:
            events[target.name] = sse_ttfb(target.port, 1, warmup=0).events_per_response
        rep, result = measure_wrk(
            bench, target, stream_script, conns=s.sse_conns, body=STREAM_REQUEST_BODY
        )
        relayed = result.requests * events[target.name]
        rep["events_per_response"] = float(events[target.name])
        rep["events_per_s"] = relayed / result.duration_s if result.duration_s else 0.0
        if "proxy_cpu_s" in rep and relayed:
            rep["cpu_per_event_us"] = rep["proxy_cpu_s"] / relayed * 1e6
            rep["cpu_per_stream_us"] = rep["proxy_cpu_s"] / result.requests * 1e6
        return rep

    sse_collector = Collector()
    interleave(bench, targets, load, sse_collector, "llm sse")
    return {
        "upstream": stack.notes.get("sse_upstream", "unknown"),
        "json": json_collector.result(
            method=f"wrk -t1 -c{s.saturation_conns} -d{s.duration:g}s POST {len(REQUEST_BODY)} B "
            f"chat completion (model {LLM_MODEL}) to `llm:` routes whose params.baseUrl is the "
            "mock LLM; CPU = utime+stime of the proxy process tree over the measured run"
        ),
        "sse": sse_collector.result(
            method=f"wrk -c{s.sse_conns} streaming POSTs, mock LLM {s.sse_events} content events "
            f"{s.sse_delay * 1e3:g} ms apart; proxy CPU / (responses × events per response "
            "as the client receives them, counted per target)",
            events_per_response=events,
            upstream_events_per_response=upstream_events,
        ),
    }


def _tree_rss(pid: int, key: str = "VmRSS") -> int:
    return sum(rss_bytes(p, key) for p in descendants(pid))


def memory(bench: Bench) -> dict[str, object]:
    """Userspace bytes per idle keep-alive connection; RSS of idle workers."""
    s, stack = bench.settings, bench.stack
    up = stack.upstream()
    idle = Collector()
    names = [("nginx", "nginx"), ("agw-1w", "agw")] if up.ok else []
    for rep_index in range(s.reps):
        for name, kind in names:
            # A fresh process per repetition: memory freed by the last one is not reused.
            target = (
                stack.nginx_proxy(name, up.port) if kind == "nginx" else stack.agw(name, up.port)
            )
            if not target.ok:
                if target.kind != "skipped":
                    idle.fail(target, target.error or "not started")
                stack.stop(target)
                continue
            try:
                send_requests(target.port, 20)
                time.sleep(0.2)
                root = target.procs[0].pid
                base, base_anon = _tree_rss(root), _tree_rss(root, "RssAnon")
                with hold_idle_connections(target.port, s.idle_conns):
                    time.sleep(0.5)
                    held, held_anon = _tree_rss(root), _tree_rss(root, "RssAnon")
                rep: Rep = {
                    "conns": float(s.idle_conns),
                    "rss_before": float(base),
                    "rss_after": float(held),
                    "bytes_per_conn": (held - base) / s.idle_conns,
                    "anon_bytes_per_conn": (held_anon - base_anon) / s.idle_conns,
                }
                idle.add(target, rep | {"rep": float(rep_index)})
                bench.log(f"  memory rep {rep_index + 1}/{s.reps} {name}: " + brief(rep))
            except FAILURES as exc:
                bench.log(f"  ! memory {name}: {exc}")
                idle.fail(target, f"{type(exc).__name__}: {exc}")
            finally:
                stack.stop(target)

    workers = Collector()
    if up.ok:
        n = s.workers
        for name, count in (("agw-1w", 1), (f"agw-{n}w", n)):
            target = stack.agw(name, up.port, workers=count)
            if not target.ok:
                if target.kind != "skipped":
                    workers.fail(target, target.error or "not started")
                continue
            try:
                send_requests(target.port, 4 * count, conns=2 * count)
                time.sleep(0.3)
                root = target.procs[0].pid
                leaves = leaf_pids(root)
                leaf_rss = [rss_bytes(p) for p in leaves]
                tree = descendants(root)
                workers.add(
                    target,
                    {
                        "processes": float(len(tree)),
                        "worker_rss": statistics.median(leaf_rss) if leaf_rss else 0.0,
                        "worker_rss_max": float(max(leaf_rss, default=0)),
                        "tree_rss": float(_tree_rss(root)),
                    },
                )
            except FAILURES as exc:
                workers.fail(target, f"{type(exc).__name__}: {exc}")
            finally:
                stack.stop(target)
    return {
        "idle": idle.result(
            method=f"{s.idle_conns} client keep-alive connections, one request each, held idle; "
            "VmRSS delta of the proxy process tree / connections (kernel socket buffers "
            "not included); fresh proxy process per repetition"
        ),
        "workers": workers.result(
            method="VmRSS of each worker (leaf process) after a few requests, idle"
        ),
    }


def churn(bench: Bench) -> dict[str, object]:
    """`Connection: close` on every request: new connections per proxy CPU-second."""
    s = bench.settings
    script = bench.script("post-close", REQUEST_BODY, close=True)
    up = bench.stack.upstream()
    targets = [up]
    if up.ok:
        targets += [bench.stack.nginx_proxy("nginx", up.port), bench.stack.agw("agw-1w", up.port)]

    def measure(target: Target) -> Rep:
        rep, _ = measure_wrk(bench, target, script, conns=s.churn_conns, warm=False)
        if "req_per_cpu_s" in rep:
            rep["conns_per_cpu_s"] = rep["req_per_cpu_s"]
        return rep

    collector = Collector()
    interleave(bench, targets, measure, collector, "churn")
    return collector.result(
        method=f"wrk -c{s.churn_conns} with `Connection: close` (one request per connection); "
        "new connections per proxy CPU-second"
    )


def balance(bench: Bench) -> dict[str, object]:
    """Share of connections per worker at 64 connections, SO_REUSEPORT vs a shared socket."""
    s, stack = bench.settings, bench.stack
    script = bench.script("post", REQUEST_BODY)
    up = stack.upstream()
    collector = Collector()
    workers = s.workers
    targets = []
    if up.ok:
        targets = [
            stack.agw(f"agw-{workers}w-{mode}", up.port, workers=workers, listen_mode=mode)
            for mode in ("reuseport", "shared")
        ]

    def measure(target: Target) -> Rep:
        root = target.procs[0].pid
        worker_pids = leaf_pids(root)
        before = cpu_snapshot([root])
        duration = max(1.0, s.duration)
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(
                run_wrk,
                bench.wrk,
                target.url(CHAT_PATH),
                script=script,
                connections=s.balance_conns,
                duration=duration,
                cpu=load_cpu(bench),
            )
            time.sleep(min(duration / 2, 2.0))
            counts = sockets_per_pid(worker_pids, target.port)
            result = future.result()
        cpu = cpu_delta(before, cpu_snapshot([root]))
        total = sum(counts.values())
        if total == 0:
            raise ValueError(f"no accepted connections found on workers {worker_pids}")
        shares = sorted((c / total for c in counts.values()), reverse=True)
        cpu_shares = sorted((cpu.per_pid_s.get(p, 0.0) for p in worker_pids), reverse=True)
        cpu_total = sum(cpu_shares) or 1.0
        rep: Rep = {
            "workers": float(len(worker_pids)),
            "conns_counted": float(total),
            "max_deviation": max(abs(share * len(shares) - 1) for share in shares),
            "rps": result.rps,
        }
        rep |= {f"conn_share_{i}": share for i, share in enumerate(shares)}
        rep |= {f"cpu_share_{i}": c / cpu_total for i, c in enumerate(cpu_shares)}
        return rep

    interleave(bench, targets, measure, collector, "balance")
    return collector.result(
        method=f"{workers} workers, wrk -c{s.balance_conns}; accepted sockets counted per worker "
        "mid-run from /proc/<pid>/fd and /proc/net/tcp; max_deviation = max |share × workers − 1| "
        "(shares sorted, largest first)",
        workers=workers,
    )


SCENARIOS: dict[str, Callable[[Bench], dict[str, object]]] = {
    "saturation": saturation,
    "latency": latency,
    "rate": rate,
    "sse": sse,
    "translate": translate,
    "policy_costs": policy_costs,
    "memory": memory,
    "churn": churn,
    "balance": balance,
    "streams": streams,
}
