"""wrk runner: Lua request scripts, the run itself, and parsing of its results.

The Lua `done()` hook prints one `BENCH_JSON {...}` line with exact integer-µs percentiles
(p50 … p99.9); the human-readable `--latency` text is parsed as a fallback.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench.payloads import API_KEY

__all__ = ["WrkError", "WrkResult", "lua_script", "parse_wrk_text", "run_wrk"]

_DONE_HOOK = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,' ..
    '"timeouts":%d,"mean_us":%.1f,"stdev_us":%.1f,"max_us":%d,' ..
    '"p50_us":%d,"p75_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"""


def _lua_string(data: bytes) -> str:
    """A Lua long-bracket string literal holding `data` verbatim."""
    text = data.decode()
    level = 0
    while f"]{'=' * level}]" in text:
        level += 1
    eq = "=" * level
    return f"[{eq}[{text}]{eq}]"


def _lua_quoted(text: str) -> str:
    """A double-quoted Lua literal of a header name or value (visible ASCII and space)."""
    if any(not " " <= ch <= "~" for ch in text):
        raise ValueError(f"not a header field text: {text!r}")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def lua_script(
    path: Path, body: bytes, *, close: bool = False, headers: dict[str, str] | None = None
) -> Path:
    """A POST like an OpenAI SDK's: JSON body, Authorization, optional `Connection: close`;
    `headers` replace the default fields of the same name or add to them."""
    fields = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {API_KEY}",
    } | (headers or {})
    if close:
        fields["Connection"] = "close"
    lines = ['wrk.method = "POST"', f"wrk.body = {_lua_string(body)}"]
    lines += [
        f"wrk.headers[{_lua_quoted(name)}] = {_lua_quoted(value)}" for name, value in fields.items()
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + _DONE_HOOK)
    return path


class WrkError(RuntimeError):
    pass


@dataclass(frozen=True)
class WrkResult:
    requests: int
    duration_s: float
    errors: int  # connect + read + write + timeouts + non-2xx/3xx responses
    latency_us: dict[str, float]  # p50, p75, p90, p99, p999, mean, max

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


def run_wrk(
    wrk: str,
    url: str,
    *,
    script: Path,
    connections: int,
    duration: float,
    threads: int = 1,
    timeout_s: float = 10.0,
    cpu: int | None = None,
) -> WrkResult:
    """Run wrk once (bounded: wrk stops itself after `duration`, we kill it 30 s later).

    wrk only takes whole seconds (`-d1s`, `--timeout 10s`), so both are rounded up.
    """
    seconds = max(1, math.ceil(duration - 1e-9))
    argv = [
        wrk,
        f"-t{threads}",
        f"-c{connections}",
        f"-d{seconds}s",
        f"--timeout={max(1, math.ceil(timeout_s))}s",
        "--latency",
        "-s",
        str(script),
        url,
    ]
    if cpu is not None:
        argv = ["taskset", "-c", str(cpu), *argv]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish within {seconds + 30}s") from exc
    if proc.returncode != 0:
        raise WrkError(f"wrk failed ({proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    return parse_wrk_output(proc.stdout)


def parse_wrk_output(stdout: str) -> WrkResult:
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
            errors = sum(
                data[k]
                for k in (
                    "connect_errors",
                    "read_errors",
                    "write_errors",
                    "status_errors",
                    "timeouts",
                )
            )
            latency = {
                k[:-3]: float(data[k])
                for k in ("p50_us", "p75_us", "p90_us", "p99_us", "p999_us", "mean_us", "max_us")
            }
            return WrkResult(data["requests"], data["duration_us"] / 1e6, errors, latency)
    return parse_wrk_text(stdout)


_UNITS_US = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_DURATION = r"([0-9.]+)(us|ms|s|m|h)"


def _to_us(value: str, unit: str) -> float:
    return float(value) * _UNITS_US[unit]


def parse_wrk_text(stdout: str) -> WrkResult:
    """Parse wrk's own summary (used when the Lua `done` hook printed nothing)."""
    total = re.search(r"(\d+) requests in ([0-9.]+)(us|ms|s|m|h)", stdout)
    if total is None:
        raise WrkError(f"unrecognised wrk output: {stdout[-300:]!r}")
    requests = int(total.group(1))
    duration_s = _to_us(total.group(2), total.group(3)) / 1e6
    latency: dict[str, float] = {}
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)(?:\.0+)?%\s+" + _DURATION, stdout, re.M):
        latency[f"p{pct}"] = _to_us(value, unit)
    stats = re.search(r"Latency\s+" + _DURATION + r"\s+" + _DURATION + r"\s+" + _DURATION, stdout)
    if stats:
        latency["mean"] = _to_us(stats.group(1), stats.group(2))
        latency["max"] = _to_us(stats.group(5), stats.group(6))
    errors = 0
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", stdout
    )
    if socket_errors:
        errors += sum(int(g) for g in socket_errors.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", stdout)
    if non2xx:
        errors += int(non2xx.group(1))
    return WrkResult(requests, duration_s, errors, latency)
