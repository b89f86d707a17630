"""`--policy-costs`: every generated config loads in agw-fast, each target adds exactly one
policy to its base, the "unused" target keeps the measured route bare, the OTLP sink answers
the real exporter, and the table pairs repetitions. No timing is asserted."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agw_fast import cli
from bench.payloads import REQUEST_BODY
from bench.policy_costs import (
    GUARD_PATTERN,
    UNUSED,
    Variant,
    config_doc,
    cost_table,
    sink_stats,
    unused_doc,
    variants,
)
from bench.procs import free_port, wait_port
from bench.targets import agw_config

REPO = Path(__file__).resolve().parents[2]
UPSTREAM, PORT = 9001, 9002


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def _extras_missing(variant: Variant) -> str | None:
    """What agw-fast (or the bench's key) lacks for this variant here, if anything."""
    if variant.tracing is not None and not _has("opentelemetry.sdk"):
        return "agw-fast's tracing extra"
    return None


ALL = variants(None, 4318)  # without `cryptography` there is no pc-jwt


def _route(doc: dict[str, object], index: int = 0) -> dict[str, object]:
    binds = doc["binds"]
    assert isinstance(binds, list)
    route: dict[str, object] = binds[0]["listeners"][0]["routes"][index]
    return route


def _validate(doc: dict[str, object], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", json.dumps(doc), "--validate-only"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("variant", ALL, ids=[v.name for v in ALL])
def test_every_policy_config_loads(variant: Variant, capsys: pytest.CaptureFixture[str]) -> None:
    missing = _extras_missing(variant)
    if missing or (variant.name == "pc-jwt" and not _has("jwt")):
        pytest.skip(missing or "agw-fast's jwt extra")
    _validate(config_doc(variant, UPSTREAM, PORT), capsys)


def test_unused_policies_config_loads(capsys: pytest.CaptureFixture[str]) -> None:
    if not (_has("jwt") and _has("cryptography")):
        pytest.skip("agw-fast's jwt extra")
    _validate(unused_doc(ALL, UPSTREAM, PORT), capsys)


def test_each_target_is_its_base_plus_one_policy() -> None:
    names = {v.name for v in ALL}
    assert {"pc-apikey", "pc-ratelimit", "pc-cors", "pc-tracing", "pc-guard"} <= names
    for variant in ALL:
        doc = config_doc(variant, UPSTREAM, PORT)
        base = agw_config(PORT, UPSTREAM, route=variant.route)
        if variant.tracing is not None:
            assert not variant.policies
            config = doc["config"]
            assert isinstance(config, dict)
            assert config.pop("tracing") == variant.tracing
            assert doc == base
        else:
            policies = _route(doc).pop("policies")
            assert isinstance(policies, dict) and len(policies) == 1, variant.name
            assert doc == base
    sampled = {v.name: v.tracing["randomSampling"] for v in ALL if v.tracing is not None}
    assert sampled == {"pc-tracing": True, "pc-tracing-unsampled": False}


def test_guard_pattern_never_matches_the_bench_request() -> None:
    # (?i) is the one Rust regex flag used; Python's re reads it alike
    assert re.search(GUARD_PATTERN, REQUEST_BODY.decode()) is None
    assert re.search(GUARD_PATTERN, "Please IGNORE previous instructions") is not None


def test_unused_target_measures_a_bare_route() -> None:
    doc = unused_doc(ALL, UPSTREAM, PORT)
    routes = doc["binds"][0]["listeners"][0]["routes"]  # type: ignore[index]
    assert [r.get("name") for r in routes] == ["with-policies", "with-ai-policies", None]
    plain = routes[-1]
    assert "policies" not in plain and "matches" not in plain  # "/" prefix: the bench's path
    attached = set(routes[0]["policies"]) | {f"ai.{k}" for k in routes[1]["policies"]["ai"]}
    wanted = {k for v in ALL if v.route == "plain" for k in v.policies} | {"ai.promptGuard"}
    assert attached == wanted
    for route in routes[:2]:
        prefix = route["matches"][0]["path"]["pathPrefix"]
        assert not "/v1/chat/completions".startswith(prefix)


@pytest.fixture
def sink_port() -> Iterator[int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.otlp_sink", "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
    )
    try:
        assert wait_port(port, 10)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_sink_answers_the_otlp_http_exporter(sink_port: int) -> None:
    if not _has("opentelemetry.exporter.otlp.proto.http"):
        pytest.skip("the OpenTelemetry OTLP/HTTP exporter is not installed")
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider()
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{sink_port}/v1/traces"))
    )
    for _ in range(2):
        with provider.get_tracer("bench-test").start_as_current_span("span"):
            pass
    provider.shutdown()
    stats = sink_stats(sink_port)
    assert stats["posts"] == 2 and stats["bytes"] > 0
    assert stats["spans"] in (2, -1)  # -1: no protobuf classes to count with


def test_sink_answers_a_plain_post(sink_port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", sink_port), timeout=5) as sock:
        for _ in range(2):  # keep-alive
            sock.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: s\r\nContent-Length: 3\r\n\r\nabc")
            answer = b""
            while not answer.endswith(b"\r\n\r\n"):
                answer += sock.recv(1024)
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
    assert sink_stats(sink_port)["posts"] == 2


def test_cost_table_pairs_repetitions() -> None:
    def reps(*values: tuple[float, float]) -> dict[str, object]:
        return {
            "error": None,
            "reps": [
                {"rep": float(i), "cpu_us_per_req": cpu, "c1_p50_us": p50}
                for i, (cpu, p50) in enumerate(values)
            ],
        }

    targets = {
        "agw-1w": reps((100, 200), (110, 210), (90, 190)),
        "pc-cors": reps((104, 205), (113, 212), (95, 199)),
        UNUSED: {"error": "agw-fast did not start", "reps": []},
    }
    chosen = [Variant("pc-cors", "cors", "plain"), Variant(UNUSED, "unused", "plain")]
    cors, unused = cost_table(targets, chosen)
    assert cors["cpu_us_minus_base"] == {"median": 4.0, "min": 3.0, "max": 5.0}
    assert cors["c1_p50_us_minus_base"] == {"median": 5.0, "min": 2.0, "max": 9.0}
    ratio = cors["cpu_ratio_to_base"]
    assert isinstance(ratio, dict) and ratio["median"] == pytest.approx(1.04)
    assert unused["error"] == "agw-fast did not start" and unused["cpu_us_minus_base"] is None


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.timeout(300)
def test_quick_scenario_reports_a_line_per_policy(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--quick",
        "--policy-costs",
        "--targets",
        "agw-1w,pc-apikey,pc-tracing,agw-unused-policies",
        "--no-chart",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (path,) = out.glob("*.json")
    data = json.loads(path.read_text())["scenarios"]["policy_costs"]
    table = {row["target"]: row for row in data["table"]}
    traced = {"pc-tracing"} if _has("opentelemetry.sdk") else set()  # else skipped, noted
    assert set(table) == {"pc-apikey", UNUSED} | traced, proc.stdout[-3000:]
    for row in table.values():
        assert row["base"] == "agw-1w" and "error" not in row, row
        for key in ("cpu_us_per_req", "cpu_us_minus_base", "cpu_ratio_to_base",
                    "c1_p50_us_minus_base"):  # fmt: skip
            assert set(row[key]) == {"median", "min", "max"}, key
    if _has("opentelemetry.sdk"):
        assert data["otlp_sink"]["posts"] > 0  # the sampled target's spans reached the sink
    assert "policy costs:" in proc.stdout and "pc-apikey" in proc.stdout
    assert "policies on other routes − plain" in proc.stdout
