"""The PNG: latency percentiles per target, one panel per latency scenario (log µs).

matplotlib is not a dependency of agw-fast: it is imported (or pip-installed into the venv,
when allowed) only here, only when a chart is asked for.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from bench.report import Results, section

__all__ = ["load_matplotlib", "plot_latency"]


def load_matplotlib(*, allow_install: bool, log: Callable[[str], None]) -> ModuleType | None:
    """matplotlib's pyplot (Agg), pip-installing it into this venv if allowed; else None."""
    try:
        importlib.import_module("matplotlib")
    except ImportError:
        in_venv = sys.prefix != sys.base_prefix
        if not (allow_install and in_venv):
            log(
                "chart skipped: matplotlib is not installed "
                "(pip install matplotlib, or run without --no-install)"
            )
            return None
        log("installing matplotlib into the venv for the chart (bench only) ...")
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "matplotlib"],
            capture_output=True,
            text=True,
            timeout=600,
        )
        if proc.returncode != 0:
            log(f"chart skipped: pip install matplotlib failed: {proc.stderr.strip()[-300:]}")
            return None
    matplotlib = importlib.import_module("matplotlib")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


_PANELS = (
    (("latency",), "Unloaded (wrk -c1)", ("p50", "p75", "p90", "p99", "p999")),
    (("saturation",), "Saturation (wrk -c32, closed loop)", ("p50", "p75", "p90", "p99", "p999")),
    (("rate",), "Fixed rate (open loop)", ("p50", "p90", "p99", "p999")),
    (("sse", "ttfb"), "SSE time to first event", ("p50", "p90", "p99")),
    (
        ("translate", "json"),
        "llm: JSON, mock LLM origin (wrk -c32)",
        ("p50", "p75", "p90", "p99", "p999"),
    ),
)


def _role(name: str) -> str:
    """Same colour for the same kind of server in every panel (`nginx-sse`, `nginx-llm` are
    `nginx`)."""
    if name.startswith("direct"):
        return "direct"
    role = name.replace("-sse-load", "").replace("-sse", "").removesuffix("-llm")
    return "agw-1w" if role == "agw" else role


def plot_latency(results: Results, path: Path, plt: ModuleType) -> bool:
    """One panel per latency scenario: median percentile curves per target (log µs)."""
    panels = [(p, title, pts) for p, title, pts in _PANELS if section(results, *p)]
    if not panels:
        return False
    cols = 2 if len(panels) > 1 else 1
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    roles = list(dict.fromkeys(_role(n) for p, _, _ in panels for n in section(results, *p)))
    palette = plt.get_cmap("tab10").colors
    colours = {role: palette[i % len(palette)] for i, role in enumerate(roles)}
    for ax, (sec_path, title, points) in zip(axes.flat, panels, strict=False):
        if sec_path == ("rate",):
            offered = results["scenarios"]["rate"].get("offered_rps", 0)
            title += f", {offered:,.0f} req/s"
        for name, entry in section(results, *sec_path).items():
            summary = entry.get("summary", {})
            ys = [summary.get(f"{p}_us", {}).get("median") for p in points]
            xs = [i for i, y in enumerate(ys) if y]
            if xs:
                colour = colours[_role(name)]
                ax.plot(xs, [ys[i] for i in xs], marker="o", label=name, color=colour)
        ax.set_title(title, fontsize=10)
        ax.set_xticks(range(len(points)))
        ax.set_xticklabels([p.replace("p999", "p99.9") for p in points])
        ax.set_yscale("log")
        ax.set_ylabel("µs")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    machine = results.get("machine", {})
    fig.suptitle(
        f"agw-fast bench {results.get('date', '')[:16]} {results.get('commit_short', '')} "
        f"({results.get('mode', '')}; {machine.get('cpu_model', '')}, {machine.get('cores', '?')} "
        "cores; medians)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
