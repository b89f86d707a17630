"""The concurrent slow-streams scenario (bench/streams.py): its stream reader, and a small run.

No timing is asserted: the smoke run only proves that the upstream, the client and the
gateway with 2 workers carry every stream to its `[DONE]` and that the report has its fields.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bench.streams import _EVENT, EventStream, _chunk, _tail

REPO = Path(__file__).resolve().parents[2]
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
WIRE = HEAD + b"".join(_chunk(_EVENT % (i, 1000 + i)) for i in range(3)) + _tail(3)


@pytest.mark.parametrize("step", [1, 2, 5, 64, len(WIRE)])
def test_reader_finds_every_event_at_any_split(step: int) -> None:
    reader = EventStream()
    found = []
    for i in range(0, len(WIRE), step):
        found += reader.feed(WIRE[i : i + step])
    assert found == [(0, 1000), (1, 1001), (2, 1002)]
    assert reader.done and reader.ended and not reader.error
    assert reader.other == 2  # the finish event and the usage event


def test_reader_follows_events_split_across_chunks() -> None:
    # A proxy may re-chunk: one event in two chunks, two events in one.
    payload = b"".join(_EVENT % (i, 7) for i in range(2))
    cut = len(payload) // 3
    wire = HEAD + _chunk(payload[:cut]) + _chunk(payload[cut:]) + b"0\r\n\r\n"
    reader = EventStream()
    assert reader.feed(wire) == [(0, 7), (1, 7)]
    assert reader.ended and not reader.done  # no [DONE]: the client counts it incomplete


def test_reader_reports_an_error_status_and_bad_framing() -> None:
    reader = EventStream()
    assert reader.feed(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n") == []
    assert reader.error == "status 502"
    reader = EventStream()
    reader.feed(HEAD + b"zz\r\n")
    assert reader.error == "bad chunk size"


@pytest.mark.skipif(shutil.which("wrk") is None, reason="bench/run.py needs wrk")
@pytest.mark.timeout(300)
def test_streams_scenario_carries_every_stream(tmp_path: Path) -> None:
    out = tmp_path / "results"
    argv = [
        sys.executable,
        str(REPO / "bench" / "run.py"),
        "--quick",
        "--streams",
        "--stream-count",
        "50",
        "--stream-events",
        "3",
        "--stream-interval",
        "0.02",
        "--targets",
        "agw-streams*",
        "--no-chart",
        "--out",
        str(out),
        "--work",
        str(tmp_path / "work"),
    ]
    proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=280)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    data = json.loads(next(out.glob("*.json")).read_text())
    scenario = data["scenarios"]["streams"]
    assert scenario["plan"]["streams"] == 50 and scenario["plan"]["events"] == 3
    targets = scenario["targets"]
    assert set(targets) == {"direct-streams", "agw-streams", "agw-streams-ai"}
    for name, entry in targets.items():
        assert entry["error"] is None, f"{name}: {entry['error']}"
        (rep,) = entry["reps"]
        assert rep["requested"] == 50
        assert rep["complete"] == 50 and rep["dropped"] == 0, (name, rep)
        assert rep["events_received"] == rep["events_expected"] == 150
        assert rep["out_of_order"] == 0
        for field in (
            "stalled",
            "gap_p99_ms",
            "gap_max_ms",
            "stream_max_gap_p99_ms",
            "first_event_p99_ms",
            "transit_p99_ms",
            "peak_streaming",
            "accept_queue_max",
            "client_cpu_s",
            "upstream_cpu_s",
        ):
            assert field in rep, (name, field)
    agw = targets["agw-streams"]["reps"][0]
    for field in ("rss_before", "rss_peak", "bytes_per_stream", "proxy_cpu_s", "cpu_per_event_us"):
        assert field in agw, field
    figures = {row["figure"]: row for row in data["key_figures"]}
    row = figures["50 slow SSE streams, 2 workers: dropped or stalled"]
    assert row["target"] == "none dropped or stalled"
    assert "50 slow SSE streams, 2 workers, AI route: bytes per stream" in figures
