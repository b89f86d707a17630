"""`--policy-costs`: what each policy costs where it is used, and that it costs nothing where not.

One agw-fast target (1 worker) per policy, each the base route plus exactly that policy:

| target | policy (base `agw-1w` unless said) |
|---|---|
| `pc-jwt` | `jwtAuth` strict, RS256, inline JWKS (the `agw-policies` key and token) |
| `pc-apikey` | `apiKey` strict, one key (the bench's own `Authorization: Bearer sk-…`) |
| `pc-basicauth` | `basicAuth` strict, one `{SHA}` htpasswd user |
| `pc-ratelimit` | `localRateLimit`, a bucket no run drains (checked, never refuses) |
| `pc-cors` | `cors`, every request with an allowed `Origin` |
| `pc-headers` | `requestHeaderModifier`: one set, one add, one remove |
| `pc-tracing` | `config.tracing`, `randomSampling: true`, OTLP/HTTP to a local sink |
| `pc-tracing-unsampled` | the same with `randomSampling: false`: configured, never sampled |
| `pc-guard` | base `agw-ai`: `ai.promptGuard`, one request regex guard (custom, reject) |
| `agw-unused-policies` | all of the above but tracing, on two OTHER routes of the listener |

Tracing is a gateway-wide setting (`config.tracing`), not a route policy: its "not used" case
is `pc-tracing-unsampled`. Translation has its own scenario (`--translate`).

Every target runs in the same interleaved repetitions as its base: per repetition a wrk -c32
saturation run (proxy CPU, user+sys of the process tree, over the measured run only) and then
a wrk -c1 run (`c1_p50_us`, ...). The table (`table` in the scenario's JSON, printed after the
key figures) gives per policy the proxy CPU µs per request, its difference to the base route's
and its ratio to it, paired per repetition (median [min…max]), and the c=1 p50 difference.
`bench/policy_instructions.py` counts instructions per request of the same configs under
callgrind (slow; not part of `make bench`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import statistics
import sys
from dataclasses import dataclass, field
from functools import partial

from bench.harness import FAILURES, Bench, Collector, Rep, interleave, measure_wrk
from bench.payloads import API_KEY, REQUEST_BODY
from bench.policies import BUCKET, ORIGIN, PolicyUnavailable
from bench.procs import Proc, ProcStartError, free_port
from bench.report import _minus, _paired, _ratio, _reps, _values
from bench.targets import CPU_LOAD, Stack, Target, agw_config

__all__ = [
    "UNUSED",
    "Variant",
    "config_doc",
    "cost_table",
    "format_cost_table",
    "policy_costs",
    "sink_stats",
    "start_sink",
    "unused_doc",
    "variants",
]

PLAIN, AI = "agw-1w", "agw-ai"
UNUSED = "agw-unused-policies"
UNUSED_LINE = "all of them but tracing, on 2 other routes"
BASIC_USER, BASIC_PASSWORD = "bench", "bench-password-0001"
# Never in the bench's request body, so the guard checks every request and passes it.
GUARD_PATTERN = r"(?i)ignore (all )?previous instructions"
C1_KEYS = ("p50_us", "p90_us", "p99_us", "rps", "requests")


@dataclass(frozen=True)
class Variant:
    """One policy target: the base route (`plain` or `ai`) plus exactly one policy."""

    name: str
    line: str  # the table's line: which policy, how configured
    route: str  # "plain" | "ai"
    policies: dict[str, object] = field(default_factory=dict)
    tracing: dict[str, object] | None = None  # `config.tracing`
    headers: dict[str, str] = field(default_factory=dict)  # request fields it needs

    @property
    def base(self) -> str:
        return AI if self.route == "ai" else PLAIN


def _basic_auth() -> tuple[dict[str, object], dict[str, str]]:
    digest = base64.b64encode(hashlib.sha1(BASIC_PASSWORD.encode()).digest()).decode()
    credential = base64.b64encode(f"{BASIC_USER}:{BASIC_PASSWORD}".encode()).decode()
    policy: dict[str, object] = {"mode": "strict", "htpasswd": f"{BASIC_USER}:{{SHA}}{digest}\n"}
    return policy, {"Authorization": f"Basic {credential}"}


def _tracing(sink_port: int, sampled: bool) -> dict[str, object]:
    return {
        "otlpEndpoint": f"http://127.0.0.1:{sink_port}",  # the path defaults to /v1/traces
        "otlpProtocol": "http",
        "randomSampling": sampled,
    }


def variants(stack: Stack | None, sink_port: int) -> list[Variant]:
    """The policy targets; `pc-jwt` needs `cryptography` for its key (left out without it,
    with a note on `stack`). `stack` None: a throwaway key (tests)."""
    out: list[Variant] = []
    try:
        if stack is not None:
            route = stack.policy_route()
        else:
            from bench.policies import policy_route

            route = policy_route("RS256")
        out.append(
            Variant(
                "pc-jwt",
                f"jwtAuth (strict, {route.algorithm}, inline JWKS)",
                "plain",
                {"jwtAuth": route.policies["jwtAuth"]},
                headers={"Authorization": route.headers["Authorization"]},
            )
        )
    except PolicyUnavailable as exc:
        if stack is not None:
            stack.notes["pc-jwt"] = f"skipped: {exc}"
    basic, basic_headers = _basic_auth()
    out += [
        Variant(
            "pc-apikey",
            "apiKey (strict, 1 key)",
            "plain",
            {"apiKey": {"mode": "strict", "keys": [{"key": API_KEY, "metadata": {"team": "a"}}]}},
        ),
        Variant(
            "pc-basicauth",
            "basicAuth (strict, {SHA} htpasswd)",
            "plain",
            {"basicAuth": basic},
            headers=basic_headers,
        ),
        Variant(
            "pc-ratelimit",
            "localRateLimit (never refuses)",
            "plain",
            {
                "localRateLimit": [
                    {"maxTokens": BUCKET, "tokensPerFill": BUCKET, "fillInterval": "1s"}
                ]
            },
        ),
        Variant(
            "pc-cors",
            "cors (allowed Origin)",
            "plain",
            {
                "cors": {
                    "allowOrigins": [ORIGIN],
                    "allowMethods": ["GET", "POST", "OPTIONS"],
                    "allowHeaders": ["authorization", "content-type"],
                    "exposeHeaders": ["x-request-id"],
                    "maxAge": "10m",
                }
            },
            headers={"Origin": ORIGIN},
        ),
        Variant(
            "pc-headers",
            "requestHeaderModifier (set, add, remove)",
            "plain",
            {
                "requestHeaderModifier": {
                    "set": {"x-tenant": "bench"},
                    "add": {"x-route": "chat"},
                    "remove": ["user-agent"],
                }
            },
        ),
        Variant(
            "pc-tracing",
            "tracing, 100% sampled (OTLP/HTTP)",
            "plain",
            tracing=_tracing(sink_port, True),
        ),
        Variant(
            "pc-tracing-unsampled",
            "tracing configured, 0% sampled",
            "plain",
            tracing=_tracing(sink_port, False),
        ),
        Variant(
            "pc-guard",
            "promptGuard (1 request regex, reject)",
            "ai",
            {
                "ai": {
                    "promptGuard": {
                        "request": [
                            {"regex": {"action": "reject", "rules": [{"pattern": GUARD_PATTERN}]}}
                        ]
                    }
                }
            },
        ),
    ]
    return out


def config_doc(variant: Variant, upstream_port: int, port: int) -> dict[str, object]:
    """The variant's gateway config: `agw_config`'s route with the one policy."""
    doc = agw_config(port, upstream_port, route=variant.route, policies=variant.policies or None)
    if variant.tracing is not None:
        config = doc["config"]
        assert isinstance(config, dict)
        config["tracing"] = variant.tracing
    return doc


def unused_doc(chosen: list[Variant], upstream_port: int, port: int) -> dict[str, object]:
    """`agw_config`'s plain route, and on the same listener two more routes the bench never
    requests: one with every plain-route policy, one AI route with the AI policies. Their
    longer prefixes sort first, so each request is matched past them."""
    doc = agw_config(port, upstream_port)
    binds = doc["binds"]
    assert isinstance(binds, list)
    listener = binds[0]["listeners"][0]
    plain = listener["routes"][0]
    plain_policies: dict[str, object] = {}
    ai_policies: dict[str, object] = {}
    for variant in chosen:
        (ai_policies if variant.route == "ai" else plain_policies).update(variant.policies)
    ai_route = agw_config(port, upstream_port, route="ai")["binds"]
    assert isinstance(ai_route, list)
    listener["routes"] = [
        {
            "name": "with-policies",
            "matches": [{"path": {"pathPrefix": "/with-policies/"}}],
            "backends": plain["backends"],
            "policies": plain_policies,
        },
        {
            "name": "with-ai-policies",
            "matches": [{"path": {"pathPrefix": "/with-ai-policies/"}}],
            "backends": ai_route[0]["listeners"][0]["routes"][0]["backends"],
            "policies": ai_policies,
        },
        plain,  # unnamed, exactly agw-1w's route: a name alone changes log and metric fields
    ]
    return doc


# --- the OTLP sink ---------------------------------------------------------------------------


def start_sink(stack: Stack) -> tuple[Proc, int]:
    """`bench/otlp_sink.py` in its own process (its CPU is not the proxy's); raises
    ProcStartError."""
    port = free_port()
    argv = [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)]
    proc = Proc(
        "otlp-sink",
        argv,
        stack.work / "logs" / "otlp-sink.log",
        cwd=stack.repo,
        cpu=CPU_LOAD if stack.pin else None,
    )
    proc.start().wait_ready(port)
    return proc, port


def sink_stats(port: int) -> dict[str, int]:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /stats HTTP/1.1\r\nHost: sink\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    stats: dict[str, int] = json.loads(data.partition(b"\r\n\r\n")[2])
    return stats


# --- the scenario ----------------------------------------------------------------------------


def policy_costs(bench: Bench) -> dict[str, object]:
    """Each policy alone on its route (wrk -c32 CPU µs/request, c=1 p50) against the same
    route without it, and every policy on other routes against none (interleaved)."""
    s, stack = bench.settings, bench.stack
    up = stack.upstream()
    if not up.ok:
        return {"error": f"upstream: {up.error}", "targets": {}}
    sink: Proc | None = None
    sink_port = 0
    try:
        sink, sink_port = start_sink(stack)
    except ProcStartError as exc:
        bench.log(f"  ! otlp sink did not start: {exc}: the tracing targets are left out")
    chosen = [v for v in variants(stack, sink_port) if v.tracing is None or sink is not None]
    plain = [v for v in chosen if v.route == "plain"]
    ai = [v for v in chosen if v.route == "ai"]

    def start(variant: Variant) -> Target:
        return stack.agw_doc(
            variant.name,
            partial(config_doc, variant, up.port),
            f"agw-fast, 1 worker, {variant.route} route + {variant.line}",
            headers=variant.headers,
        )

    # Bases first, each followed by its variants: neighbours in time, paired per repetition.
    targets = [stack.agw(PLAIN, up.port), *map(start, plain)]
    targets.append(
        stack.agw_doc(
            UNUSED,
            partial(unused_doc, chosen, up.port),
            "agw-fast, 1 worker, plain route; every policy above but tracing on two other "
            "routes of the listener",
        )
    )
    targets += [stack.agw(AI, up.port, route="ai"), *map(start, ai)]

    def measure(target: Target) -> Rep:
        script = bench.script("post", REQUEST_BODY, target=target)
        rep, _ = measure_wrk(bench, target, script, conns=s.saturation_conns)
        c1, _ = measure_wrk(bench, target, script, conns=1, warm=False)
        return rep | {f"c1_{key}": c1[key] for key in C1_KEYS if key in c1}

    collector = Collector()
    try:
        interleave(bench, targets, measure, collector, "policy costs")
        exported: dict[str, int] | None = None
        if sink is not None:
            try:
                exported = sink_stats(sink_port)
            except (*FAILURES, json.JSONDecodeError) as exc:
                bench.log(f"  ! otlp sink stats: {exc}")
    finally:
        if sink is not None:
            sink.stop()
    result = collector.result(
        method=f"per repetition and target: wrk -t1 -c{s.saturation_conns} -d{s.duration:g}s "
        f"(CPU = utime+stime of the proxy process tree over the measured run), then wrk -c1 "
        f"-d{s.duration:g}s (c1_*); each policy target is its base route plus one policy",
        lines={v.name: v.line for v in chosen} | {UNUSED: UNUSED_LINE},
        bases={v.name: v.base for v in chosen} | {UNUSED: PLAIN},
        otlp_sink=exported,
    )
    targets_data = result["targets"]
    assert isinstance(targets_data, dict)
    if exported is not None:
        # Spans the sink got against the sampled target's measured requests (warm-ups, not
        # counted here, add a few more spans): near 1 means no span was dropped.
        reps = targets_data.get("pc-tracing", {}).get("reps", [])
        measured = sum(r.get("requests", 0) + r.get("c1_requests", 0) for r in reps)
        exported["measured_requests"] = int(measured)
    result["table"] = cost_table(targets_data, [*chosen, _unused_variant()])
    return result


def _unused_variant() -> Variant:
    return Variant(UNUSED, UNUSED_LINE, "plain")


# --- the table -------------------------------------------------------------------------------

Stat = dict[str, float]


def _stat(values: list[float]) -> Stat | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def cost_table(
    targets: dict[str, dict[str, object]], chosen: list[Variant]
) -> list[dict[str, object]]:
    """One row per policy target: CPU µs/request, − and ÷ the base (paired per repetition),
    c=1 p50 − the base; a target that failed has its error and no figures."""
    rows: list[dict[str, object]] = []
    for variant in chosen:
        entry, base = targets.get(variant.name), targets.get(variant.base)
        if entry is None:
            continue
        row: dict[str, object] = {
            "policy": variant.line,
            "target": variant.name,
            "base": variant.base,
        }
        if entry.get("error") or base is None or base.get("error"):
            row["error"] = entry.get("error") or (base or {}).get("error") or "no base"
        mine, theirs = _reps(targets, variant.name), _reps(targets, variant.base)
        row |= {
            "cpu_us_per_req": _stat(_values(mine, "cpu_us_per_req")),
            "base_cpu_us_per_req": _stat(_values(theirs, "cpu_us_per_req")),
            "cpu_us_minus_base": _stat(_paired(mine, theirs, _minus, "cpu_us_per_req")),
            "user_us_minus_base": _stat(_paired(mine, theirs, _minus, "user_us_per_req")),
            "sys_us_minus_base": _stat(_paired(mine, theirs, _minus, "sys_us_per_req")),
            "cpu_ratio_to_base": _stat(_paired(mine, theirs, _ratio, "cpu_us_per_req")),
            "c1_p50_us_minus_base": _stat(_paired(mine, theirs, _minus, "c1_p50_us")),
        }
        rows.append(row)
    return rows


def _cell(stat: object, fmt: str, short: str) -> str:
    if not isinstance(stat, dict):
        return "–"
    text = fmt.format(stat["median"])
    if stat["min"] != stat["max"]:
        text += " [" + short.format(stat["min"]) + "…" + short.format(stat["max"]) + "]"
    return text


def format_cost_table(results: dict[str, object]) -> str | None:
    """The `--policy-costs` table for stdout, or None when the scenario did not run."""
    scenarios = results.get("scenarios", {})
    data = scenarios.get("policy_costs") if isinstance(scenarios, dict) else None
    if not isinstance(data, dict) or not data.get("table"):
        return None
    header = ("policy", "target", "base", "CPU µs/req", "− base", "÷ base", "c=1 p50 − base")
    lines = [header]
    for row in data["table"]:
        lines.append(
            (
                str(row["policy"]),
                str(row["target"]),
                str(row["base"]),
                _cell(row.get("cpu_us_per_req"), "{:.1f}", "{:.0f}"),
                _cell(row.get("cpu_us_minus_base"), "{:+.1f} µs", "{:+.1f}"),
                _cell(row.get("cpu_ratio_to_base"), "{:.3f}×", "{:.3f}"),
                _cell(row.get("c1_p50_us_minus_base"), "{:+.0f} µs", "{:+.0f}")
                + (f"  ERROR: {row['error']}" if row.get("error") else ""),
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "policy costs: proxy CPU per request at wrk -c32 and c=1 p50, paired per repetition "
        "against the same route without the policy; median [min…max]"
    ]
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)
