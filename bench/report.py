"""Turn scenario results into the key figures (the issue's targets) and the stdout tables.

Ratios are *paired*: each repetition's agw-fast figure is divided by the same repetition's
nginx (or direct) figure — they ran back to back — and the median of those ratios is reported
with its min–max.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

__all__ = [
    "Results",
    "Row",
    "Stat",
    "format_details",
    "format_number",
    "format_peer_table",
    "format_table",
    "key_figures",
    "peer_rows",
    "rows_json",
    "section",
]

Results = dict[str, Any]
POLICIES = "policies route"  # agw-policies: plain route + jwtAuth, localRateLimit, cors
# The translate scenario's `llm:` routes (OpenAI client; mock LLM origin).
LLM_PLAIN, LLM_TRANSLATED = "agw-llm-openai", "agw-llm-anthropic"
UNTRANSLATED = "llm: openAI"
TRANSLATED = "llm: anthropic (translated)"
Reps = dict[int, dict[str, float]]
KiB = 1024
MiB = 1024 * KiB


@dataclass(frozen=True)
class Stat:
    median: float
    min: float
    max: float

    @classmethod
    def of(cls, values: list[float]) -> Stat | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None


@dataclass(frozen=True)
class Row:
    figure: str
    unit: str  # "rate", "us", "ms", "bytes", "ratio", "pct"
    agw: Stat | None
    nginx: Stat | None
    direct: Stat | None
    ratio: Stat | None
    ratio_of: str  # what the ratio divides by: "nginx", "direct", ...
    target: str
    met: bool | None  # None: no target, or not measurable this run


# --- access to results ----------------------------------------------------------------------


def section(results: Results, *path: str) -> dict[str, Any]:
    node: Any = results.get("scenarios", {})
    for key in path:
        node = node.get(key, {}) if isinstance(node, dict) else {}
    return node.get("targets", {}) if isinstance(node, dict) else {}


def _reps(section: dict[str, Any], name: str | None) -> Reps:
    if name is None or name not in section:
        return {}
    return {int(rep.get("rep", i)): rep for i, rep in enumerate(section[name].get("reps", []))}


def _find(section: dict[str, Any], prefix: str) -> str | None:
    return next((name for name in section if name.startswith(prefix)), None)


def _values(reps: Reps, metric: str) -> list[float]:
    return [float(rep[metric]) for rep in reps.values() if metric in rep]


def _paired(
    a: Reps, b: Reps, fn: Callable[[float, float], float | None], metric: str
) -> list[float]:
    out = []
    for index in sorted(set(a) & set(b)):
        if metric in a[index] and metric in b[index]:
            value = fn(float(a[index][metric]), float(b[index][metric]))
            if value is not None:
                out.append(value)
    return out


def _ratio(x: float, y: float) -> float | None:
    return x / y if y else None


def _minus(x: float, y: float) -> float:
    return x - y


# --- key figures ------------------------------------------------------------------------------


def _ratio_row(
    section: dict[str, Any],
    figure: str,
    metric: str,
    agw: str,
    *,
    nginx: str | None = "nginx",
    direct: str | None = "direct",
    unit: str = "rate",
    minimum: float | None = None,
    maximum: float | None = None,
    ratio_to: str | None = None,
) -> Row | None:
    """agw-fast vs nginx on one metric; target as a bound on the paired ratio. With
    `ratio_to` the ratio divides by that target instead (e.g. the plain agw-fast route)."""
    if agw not in section:  # not run (filtered out, or the scenario did not run)
        return None
    agw_reps, nginx_reps = _reps(section, agw), _reps(section, nginx)
    base = ratio_to or nginx
    ratio = Stat.of(_paired(agw_reps, _reps(section, base), _ratio, metric))
    target, met = "–", None
    if minimum is not None:
        target = f"≥ {minimum:g}× nginx"
        met = None if ratio is None else ratio.median >= minimum
    elif maximum is not None:
        target = f"≤ {maximum:g}× nginx"
        met = None if ratio is None else ratio.median <= maximum
    return Row(
        figure,
        unit,
        Stat.of(_values(agw_reps, metric)),
        Stat.of(_values(nginx_reps, metric)),
        Stat.of(_values(_reps(section, direct), metric)),
        ratio,
        base or "nginx",
        target,
        met,
    )


def _cost_row(section: dict[str, Any], figure: str, metric: str, agw: str, base: str) -> Row | None:
    """What `agw` adds over `base` (another agw-fast target of the same run) on one metric:
    the paired difference, and the paired ratio to `base`."""
    if agw not in section or base not in section:
        return None
    agw_reps, base_reps = _reps(section, agw), _reps(section, base)
    return Row(
        figure,
        "us+",
        Stat.of(_paired(agw_reps, base_reps, _minus, metric)),
        None,
        None,
        Stat.of(_paired(agw_reps, base_reps, _ratio, metric)),
        base,
        "–",
        None,
    )


def _added_row(
    section: dict[str, Any],
    figure: str,
    metric: str,
    agw: str,
    *,
    nginx: str,
    direct: str | None,
    max_added_us: float | None = None,
    max_vs_nginx: float | None = None,
) -> Row | None:
    """Added latency over direct (paired per repetition), for agw-fast and for nginx."""
    agw_reps, nginx_reps, direct_reps = (
        _reps(section, agw),
        _reps(section, nginx),
        _reps(section, direct),
    )
    if agw not in section:
        return None
    agw_added = _paired(agw_reps, direct_reps, _minus, metric)
    nginx_added = _paired(nginx_reps, direct_reps, _minus, metric)
    ratio_values = []
    for index in sorted(set(agw_reps) & set(nginx_reps) & set(direct_reps)):
        if all(metric in r[index] for r in (agw_reps, nginx_reps, direct_reps)):
            base = direct_reps[index][metric]
            denominator = nginx_reps[index][metric] - base
            if denominator > 0:
                ratio_values.append((agw_reps[index][metric] - base) / denominator)
    ratio, added = Stat.of(ratio_values), Stat.of(agw_added)
    target, met = "–", None
    if max_added_us is not None:
        target = f"≤ +{max_added_us:g} µs"
        met = None if added is None else added.median <= max_added_us
    elif max_vs_nginx is not None:
        target = f"≤ {max_vs_nginx:g}× nginx added"
        met = None if ratio is None else ratio.median <= max_vs_nginx
    return Row(
        figure,
        "us+",
        added,
        Stat.of(nginx_added),
        Stat.of(_values(direct_reps, metric)),
        ratio,
        "nginx added",
        target,
        met,
    )


def key_figures(results: Results) -> list[Row]:
    """The issue's targets table (and context rows), from one run's results."""
    rows: list[Row | None] = []
    sat = section(results, "saturation")
    n_workers = next(
        (n for n in sat if n.startswith("agw-") and n.endswith("w") and n != "agw-1w"), None
    )
    rows += [
        _ratio_row(
            sat, "req per proxy CPU-s, 1 worker, plain", "req_per_cpu_s", "agw-1w", minimum=0.25
        ),
        _ratio_row(sat, "req per proxy CPU-s, AI route", "req_per_cpu_s", "agw-ai", minimum=0.20),
        _ratio_row(sat, "req/s at c=32, 1 worker, plain", "rps", "agw-1w"),
        _ratio_row(sat, "req/s at c=32, AI route", "rps", "agw-ai"),
    ]
    if n_workers:
        rows.append(_ratio_row(sat, f"req/s at c=32, {n_workers[4:-1]} workers", "rps", n_workers))
        # The issue: N workers keep >= 0.9x one worker's requests per proxy CPU-second (no
        # cross-worker overhead), paired per repetition.
        scaling = _ratio_row(
            sat,
            f"req per proxy CPU-s, {n_workers[4:-1]} workers ÷ 1 worker",
            "req_per_cpu_s",
            n_workers,
            direct=None,
            ratio_to="agw-1w",
            minimum=0.9,
        )
        if scaling is not None:
            scaling = replace(scaling, target="≥ 0.9× 1 worker")
        rows.append(scaling)
    rows += [
        _ratio_row(
            sat,
            "user µs per request, 1 worker",
            "user_us_per_req",
            "agw-1w",
            unit="us",
            direct=None,
        ),
        _ratio_row(
            sat, "sys µs per request, 1 worker", "sys_us_per_req", "agw-1w", unit="us", direct=None
        ),
        _ratio_row(
            sat,
            "req per proxy CPU-s, TLS upstream",
            "req_per_cpu_s",
            "agw-tls",
            nginx="nginx-tls",
            direct=None,
        ),
    ]
    rows += [
        _ratio_row(
            sat,
            "req per proxy CPU-s, HTTPS listener",
            "req_per_cpu_s",
            "agw-https",
            nginx="nginx-https",
            direct=None,
        ),
        # The three edge policies (jwtAuth, localRateLimit, cors) on the plain route.
        _ratio_row(sat, f"req per proxy CPU-s, {POLICIES}", "req_per_cpu_s", "agw-policies"),
        _ratio_row(
            sat,
            f"req per proxy CPU-s, {POLICIES} ÷ plain",
            "req_per_cpu_s",
            "agw-policies",
            direct=None,
            ratio_to="agw-1w",
        ),
        _cost_row(
            sat,
            f"proxy CPU µs per request, {POLICIES} − plain",
            "cpu_us_per_req",
            "agw-policies",
            "agw-1w",
        ),
    ]
    lat = section(results, "latency")
    for route, agw in (("plain", "agw-1w"), ("AI route", "agw-ai")):
        rows += [
            _added_row(
                lat,
                f"added latency c=1 p50, {route}",
                "p50_us",
                agw,
                nginx="nginx",
                direct="direct",
                max_added_us=100,
            ),
            _added_row(
                lat,
                f"added latency c=1 p99, {route}",
                "p99_us",
                agw,
                nginx="nginx",
                direct="direct",
                max_added_us=200,
            ),
        ]
    for metric in ("p50_us", "p99_us"):
        label = metric[:-3]
        rows += [
            _added_row(
                lat,
                f"added latency c=1 {label}, {POLICIES}",
                metric,
                "agw-policies",
                nginx="nginx",
                direct="direct",
            ),
            _cost_row(
                lat, f"latency c=1 {label}, {POLICIES} − plain", metric, "agw-policies", "agw-1w"
            ),
        ]
    rate = section(results, "rate")
    offered = results.get("scenarios", {}).get("rate", {}).get("offered_rps")
    for metric in ("p50_us", "p99_us", "p999_us"):
        label = metric[:-3].replace("p999", "p99.9")
        rows.append(
            _ratio_row(
                rate,
                f"latency {label} at {offered or 0:,.0f} req/s (open loop)",
                metric,
                "agw-1w",
                unit="us",
            )
        )
    ttfb = section(results, "sse", "ttfb")
    load = section(results, "sse", "load")
    for suffix, route in (("", "plain"), ("-ai", "AI route")):
        rows.append(
            _added_row(
                ttfb,
                f"SSE first event added p50, {route}",
                "p50_us",
                f"agw-sse{suffix}",
                nginx="nginx-sse",
                direct=_find(ttfb, "direct"),
                max_vs_nginx=2.0,
            )
        )
    for suffix, route in (("", "plain"), ("-ai", "AI route")):
        rows.append(
            _ratio_row(
                load,
                f"proxy CPU per SSE event, {route}",
                "cpu_per_event_us",
                f"agw-sse-load{suffix}",
                nginx="nginx-sse-load",
                direct=None,
                unit="us",
                maximum=1.3,
            )
        )
    rows += _translate_rows(results)
    rows += _policy_cost_rows(results)
    idle = section(results, "memory", "idle")
    row = _ratio_row(
        idle,
        "userspace bytes per idle keep-alive conn",
        "bytes_per_conn",
        "agw-1w",
        direct=None,
        unit="bytes",
    )
    if row is not None:
        met = None if row.agw is None else row.agw.median <= 4 * KiB
        rows.append(replace(row, target="≤ 4 KiB", met=met))
    workers = section(results, "memory", "workers")
    n_name = next((n for n in workers if n != "agw-1w"), None)
    if n_name:
        rows.append(
            _ratio_row(
                workers,
                f"RSS per idle worker ({n_name})",
                "worker_rss",
                n_name,
                nginx=None,
                direct=None,
                unit="bytes",
            )
        )
    rows.append(
        _ratio_row(
            section(results, "churn"),
            "new conns per proxy CPU-s (churn)",
            "conns_per_cpu_s",
            "agw-1w",
            direct=None,
        )
    )
    bal = section(results, "balance")
    for mode, bound in (("reuseport", 0.25), ("shared", None)):
        name = next((n for n in bal if n.endswith(mode)), None)
        values = _values(_reps(bal, name), "max_deviation")
        if name:
            stat = Stat.of(values)
            met = None if stat is None or bound is None else stat.median <= bound
            rows.append(
                Row(
                    f"worker conn share max deviation, {mode}",
                    "pct",
                    stat,
                    None,
                    None,
                    None,
                    "",
                    "≤ ±25%" if bound else "–",
                    met,
                )
            )
    from bench.streams import stream_rows  # bench.streams builds Rows: import it late

    rows += stream_rows(results)
    for peer in results.get("peers", []):
        rows += [
            _ratio_row(sat, f"{peer}: req per proxy CPU-s", "req_per_cpu_s", peer),
            _added_row(
                lat,
                f"{peer}: added latency c=1 p50",
                "p50_us",
                peer,
                nginx="nginx",
                direct="direct",
            ),
            _added_row(
                lat,
                f"{peer}: added latency c=1 p99",
                "p99_us",
                peer,
                nginx="nginx",
                direct="direct",
            ),
        ]
    return [row for row in rows if row is not None]


def _translate_rows(results: Results) -> list[Row | None]:
    """The `llm:` routes against nginx in front of the same mock LLM, and the translated
    route against the untranslated one (paired ratio and difference)."""
    rows: list[Row | None] = []
    parts = (
        ("json", "req per proxy CPU-s", "req_per_cpu_s", "proxy CPU µs per request"),
        ("sse", "proxy CPU per SSE event", "cpu_per_event_us", "proxy CPU µs per SSE event"),
    )
    for part, figure, metric, cost in parts:
        data = section(results, "translate", part)
        unit = "rate" if part == "json" else "us"
        kind = "JSON" if part == "json" else "stream"
        for agw, route in ((LLM_PLAIN, UNTRANSLATED), (LLM_TRANSLATED, TRANSLATED)):
            rows.append(
                _ratio_row(
                    data,
                    f"{figure}, {route} {kind}",
                    metric,
                    agw,
                    nginx="nginx-llm",
                    direct=None,
                    unit=unit,
                )
            )
        rows += [
            _ratio_row(
                data,
                f"{figure}, translated ÷ untranslated {kind}",
                metric,
                LLM_TRANSLATED,
                nginx="nginx-llm",
                direct=None,
                unit=unit,
                ratio_to=LLM_PLAIN,
            ),
            _cost_row(
                data,
                f"{cost}, translated − untranslated",
                "cpu_us_per_req" if part == "json" else metric,
                LLM_TRANSLATED,
                LLM_PLAIN,
            ),
        ]
    return rows


# --- against other gateways (--peer) ------------------------------------------------------------

# The project's own targets shown beside the peers, in this order, and how the table names them.
_PEER_TABLE_OWN = (
    ("nginx", "nginx (reference proxy, no LLM logic)"),
    ("agw-1w", "agw-fast plain route, 1 worker"),
    ("agw-ai", "agw-fast AI route, 1 worker"),
)
_PEER_LABELS = {"portkey": "Portkey gateway (Node.js)", "litellm": "LiteLLM proxy (Python)"}


def _own_version(results: Results, name: str) -> str:
    machine = results.get("machine", {})
    if name == "nginx":
        text = str(machine.get("nginx") or "")
        return text.rsplit("/", 1)[-1] if "/" in text else text or "?"
    version = machine.get("packages", {}).get("agw-fast", "?")
    return f"{version} ({results.get('commit_short', '?')})"


def peer_rows(results: Results) -> list[dict[str, Any]]:
    """One row per proxy: nginx and agw-fast's plain and AI routes, then each peer. Figures
    are medians over repetitions with [min, max]; the ratio to nginx and the added c=1
    latency (target − direct) are paired per repetition, as in the key figures."""
    peers = results.get("peers") or {}
    if not peers:
        return []
    sat, lat = section(results, "saturation"), section(results, "latency")
    notes = results.get("notes", {})
    nginx_sat, direct_lat = _reps(sat, "nginx"), _reps(lat, "direct")
    names = [(name, label, _own_version(results, name)) for name, label in _PEER_TABLE_OWN]
    for name in peers:
        details = peers[name] if isinstance(peers, dict) else {}
        version = details.get("installed") or details.get("version") or "?"
        names.append((name, _PEER_LABELS.get(name, name), str(version)))
    rows = []
    for name, label, version in names:
        if name not in sat and name not in lat and name not in notes:
            continue  # not selected in this run
        sat_reps, lat_reps = _reps(sat, name), _reps(lat, name)

        def stat(values: list[float]) -> dict[str, float] | None:
            found = Stat.of(values)
            return None if found is None else asdict(found)

        error = notes.get(name) or sat.get(name, {}).get("error") or lat.get(name, {}).get("error")
        rows.append(
            {
                "proxy": name,
                "label": label,
                "version": version,
                "req_per_cpu_s": stat(_values(sat_reps, "req_per_cpu_s")),
                "ratio_to_nginx": stat(_paired(sat_reps, nginx_sat, _ratio, "req_per_cpu_s")),
                "added_p50_us": stat(_paired(lat_reps, direct_lat, _minus, "p50_us")),
                "added_p99_us": stat(_paired(lat_reps, direct_lat, _minus, "p99_us")),
                "error": error,
            }
        )
    return rows


def _span(stat: dict[str, float] | None, fmt: Callable[[float], str]) -> str:
    if stat is None:
        return "–"
    low, high = fmt(stat["min"]), fmt(stat["max"])
    return fmt(stat["median"]) + ("" if low == high else f" [{low}…{high}]")


def _rate(value: float) -> str:
    return f"{value / 1000:.1f}k" if value >= 10_000 else f"{value:,.0f}"


def _ratio_text(value: float) -> str:
    return f"{value:.2f}×" if value >= 0.01 else f"{value:.4f}×"


def _added(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value / 1000:+.1f} ms"
    return f"{value:+,.0f} µs"


def format_peer_table(results: Results) -> str:
    """The peers beside nginx and agw-fast, as a Markdown table (paste-ready)."""
    rows = peer_rows(results)
    if not rows:
        return ""
    lines = [
        "| proxy | version | req per proxy CPU-s | × nginx | added at c=1, p50 | p99 |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        if row["req_per_cpu_s"] is None and row["added_p50_us"] is None:
            why = (row["error"] or "no result").replace("|", "/").replace("\n", " ")
            lines.append(f"| {row['label']} | {row['version']} | {why[:160]} | | | |")
            continue
        lines.append(
            f"| {row['label']} | {row['version']} | {_span(row['req_per_cpu_s'], _rate)} | "
            f"{_span(row['ratio_to_nginx'], _ratio_text)} | "
            f"{_span(row['added_p50_us'], _added)} | {_span(row['added_p99_us'], _added)} |"
        )
    return "\n".join(lines)


# --policy-costs: a policy on other routes must cost the plain route nothing. Met when the
# paired differences straddle zero (some repetitions cheaper, some dearer: no cost this run
# can tell from noise) or their median is within this share of the plain route's µs.
# bench/policy_instructions.py gives the exact figure in instructions.
UNUSED_NOISE = 0.03


def _policy_cost_rows(results: Results) -> list[Row | None]:
    """Every policy attached to other routes of the listener, against none (the per-policy
    table is bench/policy_costs.py's)."""
    data = section(results, "policy_costs")
    row = _cost_row(
        data,
        "proxy CPU µs per request, policies on other routes − plain",
        "cpu_us_per_req",
        "agw-unused-policies",
        "agw-1w",
    )
    plain = Stat.of(_values(_reps(data, "agw-1w"), "cpu_us_per_req"))
    if row is None or row.agw is None or plain is None:
        return [row]
    spread = row.agw
    met = spread.min <= 0 <= spread.max or abs(spread.median) <= UNUSED_NOISE * plain.median
    target = f"≈ 0: Δ range spans 0 or |Δ| ≤ {UNUSED_NOISE:.0%} of plain"
    return [replace(row, target=target, met=met)]


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [asdict(row) for row in rows]


# --- text table ------------------------------------------------------------------------------


def format_number(value: float, unit: str) -> str:
    if unit == "pct":
        return f"{value:.0%}"
    if unit == "bytes":
        if abs(value) >= MiB:
            return f"{value / MiB:.1f} MiB"
        return f"{value:,.0f} B"
    if unit == "us+":
        return f"{value:+,.0f} µs" if abs(value) >= 10 else f"{value:+.1f} µs"
    if unit == "us":
        return f"{value:,.0f} µs" if abs(value) >= 100 else f"{value:.1f} µs"
    if unit == "ms":
        return f"{value:,.0f} ms" if abs(value) >= 100 else f"{value:.1f} ms"
    if abs(value) >= 10_000:
        return f"{value / 1000:,.1f}k"
    return f"{value:,.0f}"


def _short(value: float, unit: str) -> str:
    """A range end: 3 significant digits, no unit (the median beside it carries it)."""
    if unit == "pct":
        return f"{value:.0%}"
    sign = "+" if unit == "us+" and value > 0 else ""
    magnitude = abs(value)
    if unit == "bytes" and magnitude >= MiB:
        return f"{value / MiB:.1f}M"
    if magnitude >= 10_000:
        return f"{sign}{value / 1000:.0f}k"
    if magnitude >= 1000:
        return f"{sign}{value / 1000:.1f}k"
    if magnitude >= 10:
        return f"{sign}{value:.0f}"
    return f"{sign}{value:.1f}"


def _cell(stat: Stat | None, unit: str, *, spread: bool = True) -> str:
    if stat is None:
        return "–"
    text = format_number(stat.median, unit)
    if spread and stat.min != stat.max:
        text += f" [{_short(stat.min, unit)}…{_short(stat.max, unit)}]"
    return text


def format_table(rows: list[Row], *, spread: bool = True) -> str:
    header = ("figure", "agw-fast", "nginx", "direct", "ratio", "target", "met?")
    lines = [header]
    for row in rows:
        direct_unit = "us" if row.unit == "us+" else row.unit
        ratio = (
            "–"
            if row.ratio is None
            else (
                f"{row.ratio.median:.2f}× {row.ratio_of}"
                + (
                    f" [{row.ratio.min:.2f}…{row.ratio.max:.2f}]"
                    if spread and row.ratio.min != row.ratio.max
                    else ""
                )
            )
        )
        met = {True: "yes", False: "NO", None: "–" if row.target == "–" else "n/a"}[row.met]
        lines.append(
            (
                row.figure,
                _cell(row.agw, row.unit, spread=spread),
                _cell(row.nginx, row.unit, spread=spread),
                _cell(row.direct, direct_unit, spread=spread),
                ratio,
                row.target,
                met,
            )
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for i, line in enumerate(lines):
        out.append("  ".join(cell.ljust(widths[j]) for j, cell in enumerate(line)).rstrip())
        if i == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def format_details(results: Results) -> str:
    """Per-scenario medians of every target, for the log (the JSON has everything)."""
    out: list[str] = []

    def walk(label: str, node: dict[str, Any]) -> None:
        if "targets" in node:
            out.append(f"[{label}] {node.get('method', '')}")
            for name, entry in node["targets"].items():
                summary = entry.get("summary", {})
                shown = ", ".join(
                    f"{k}={v['median']:,.1f}" for k, v in summary.items() if k in _DETAIL_KEYS
                )
                error = f"  ERROR: {entry['error']}" if entry.get("error") else ""
                out.append(f"  {name:<18} {shown}{error}")
        for key, child in node.items():
            if isinstance(child, dict) and key != "targets":
                walk(f"{label}.{key}", child)

    for name, node in results.get("scenarios", {}).items():
        walk(name, node)
    return "\n".join(out)


_DETAIL_KEYS = {
    "rps",
    "req_per_cpu_s",
    "proxy_cores",
    "user_us_per_req",
    "sys_us_per_req",
    "p50_us",
    "p99_us",
    "p999_us",
    "errors",
    "cpu_per_event_us",
    "cpu_per_stream_us",
    "events_per_response",
    "events_per_s",
    "bytes_per_conn",
    "worker_rss",
    "conns_per_cpu_s",
    "max_deviation",
    "achieved_rps",
    "complete",
    "dropped",
    "stalled",
    "gap_max_ms",
    "bytes_per_stream",
    "hold_cpu_per_event_us",
}
