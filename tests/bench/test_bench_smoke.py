"""The bench's quickest mode runs end to end and writes a complete result file.

No timing is asserted: on a shared 2-core machine any threshold would be flaky. The test only
proves that the harness starts everything, measures, and reports (`make bench-quick` in CI).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx", "/sbin/nginx") if os.access(p, os.X_OK)), None
)

pytestmark = pytest.mark.skipif(
    shutil.which("wrk") is None, reason="wrk is not installed (apt-get install -y wrk)"
)


@pytest.mark.timeout(400)  # the run itself may take its 300 s; pyproject's 60 s is for tests
def test_quick_bench_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--quick",
        "--saturation",
        "--latency",
        "--sse",
        "--translate",
        "--memory",
        "--micro",
        "--targets",
        "nginx,nginx-sse,agw-1w,agw-sse,agw-policies,nginx-llm,agw-llm-*",
        "--idle-conns",
        "100",
        "--no-chart",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = list(out.glob("*.json"))
    assert len(files) == 1, proc.stdout[-2000:]
    data = json.loads(files[0].read_text())

    for key in (
        "schema",
        "date",
        "commit_short",
        "mode",
        "machine",
        "settings",
        "scenarios",
        "key_figures",
        "micro",
    ):
        assert key in data, key
    assert data["mode"] == "quick"
    for key in ("cpu_model", "cores", "kernel", "python", "packages"):
        assert key in data["machine"], key
    assert set(data["scenarios"]) == {"saturation", "latency", "sse", "translate", "memory"}
    assert (out / "HISTORY.md").read_text().count("| quick |") == 1
    assert "figure" in proc.stdout and "agw-fast" in proc.stdout

    saturation = data["scenarios"]["saturation"]["targets"]
    direct = saturation["direct"]
    assert direct["error"] is None and direct["summary"]["rps"]["median"] > 0
    if NGINX is None:
        print("nginx not installed: nginx targets skipped")
    else:
        nginx = saturation["nginx"]
        assert nginx["error"] is None, nginx["error"]
        assert nginx["summary"]["req_per_cpu_s"]["median"] > 0
    agw = saturation["agw-1w"]
    assert agw["error"] is None, f"agw-fast failed in the bench: {agw['error']}"
    assert agw["summary"]["req_per_cpu_s"]["median"] > 0
    assert "p50_us" in data["scenarios"]["latency"]["targets"]["agw-1w"]["summary"]
    # The policies route (jwtAuth + localRateLimit + cors) runs, or is skipped with the
    # install line when agw-fast's jwt extra is missing: never a failed target.
    if "agw-policies" in data["notes"]:
        assert "pip install 'agw-fast[" in data["notes"]["agw-policies"]
        assert "agw-policies skipped: " in proc.stdout
    else:
        policies = saturation["agw-policies"]
        assert policies["error"] is None, f"agw-policies failed: {policies['error']}"
        assert policies["summary"]["req_per_cpu_s"]["median"] > 0
        assert policies["summary"]["errors"]["median"] == 0
        latency = data["scenarios"]["latency"]["targets"]["agw-policies"]
        assert "p50_us" in latency["summary"], latency["error"]
    ttfb = data["scenarios"]["sse"]["ttfb"]["targets"]
    assert "p50_us" in ttfb["agw-sse"]["summary"], ttfb["agw-sse"]["error"]
    # The `llm:` routes, untranslated (openAI) and translated (anthropic), JSON and SSE.
    translate = data["scenarios"]["translate"]
    for name in ("agw-llm-openai", "agw-llm-anthropic"):
        for part, metric in (("json", "req_per_cpu_s"), ("sse", "cpu_per_event_us")):
            entry = translate[part]["targets"][name]
            assert entry["error"] is None, f"{name} {part} failed: {entry['error']}"
            assert entry["summary"][metric]["median"] > 0
            assert entry["summary"]["errors"]["median"] == 0
    # A translated stream reaches the client as OpenAI chunks, not Anthropic events.
    events = translate["sse"]["events_per_response"]
    assert events["agw-llm-anthropic"] > 0 and events["agw-llm-openai"] > 0
    assert translate["sse"]["upstream_events_per_response"]["/v1/messages"] > 0
    idle = data["scenarios"]["memory"]["idle"]["targets"]["agw-1w"]
    assert "bytes_per_conn" in idle["summary"], idle["error"]
    figures = {row["figure"] for row in data["key_figures"]}
    assert "req per proxy CPU-s, 1 worker, plain" in figures
    assert "req per proxy CPU-s, translated ÷ untranslated JSON" in figures
    assert "proxy CPU per SSE event, translated ÷ untranslated stream" in figures
    assert "proxy CPU per SSE event, llm: anthropic (translated) stream" in proc.stdout
    if "agw-policies" not in data["notes"]:
        assert "req per proxy CPU-s, policies route ÷ plain" in figures
