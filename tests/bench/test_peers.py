"""The bench's peer gateways (`--peer`): selection, the Portkey request fields in the wrk
script, the reply check, skips for a missing install, and the peer table. No network, no
install, no timing: the peers themselves run only in `bench/run.py --peer ...`.
"""

from __future__ import annotations

import http.server
import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from bench import peers
from bench.harness import Bench, Settings
from bench.payloads import RESPONSE_BODY
from bench.peer_portkey import portkey_headers, write_loopback_shim
from bench.peers import PEERS, check_reply, parse_peers, peer_details
from bench.report import format_peer_table, key_figures, peer_rows
from bench.run import parse_args
from bench.targets import Stack, Target, Tools

NO_TOOLS = Tools(None, None, None, None)


def _bench(tmp_path: Path) -> Bench:
    stack = Stack(tmp_path / "work", tmp_path, NO_TOOLS, log=lambda _: None)
    return Bench(stack, Settings.quick(), tmp_path / "work", lambda _: None, {}, [])


# --- selection --------------------------------------------------------------------------------


def test_peer_names_parse_in_registry_order() -> None:
    assert parse_peers(["all"]) == ["portkey", "litellm"]
    assert parse_peers(["litellm,portkey"]) == ["portkey", "litellm"]
    assert parse_peers(["litellm", "Portkey", "litellm"]) == ["portkey", "litellm"]
    assert parse_peers([]) == []
    with pytest.raises(ValueError, match="unknown peer 'kong'"):
        parse_peers(["portkey,kong"])


def test_run_flag_takes_lists_and_all(capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_args(["--peer", "portkey,litellm"]).peer == ["portkey", "litellm"]
    assert parse_args(["--peer", "all", "--saturation"]).peer == list(PEERS)
    assert parse_args([]).peer == []
    with pytest.raises(SystemExit):
        parse_args(["--peer", "nope"])
    assert "unknown peer 'nope'" in capsys.readouterr().err


def test_makefile_bench_runs_the_peers() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    recipe = makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
    assert "bench/run.py --peer all" in recipe


# --- the Portkey request ------------------------------------------------------------------


def test_portkey_wrk_script_carries_its_routing_headers(tmp_path: Path) -> None:
    headers = portkey_headers(8123)
    target = Target("portkey", "peer", "Portkey", 9000, headers=headers)
    script = _bench(tmp_path).script("post", b'{"model":"m"}', target=target)
    assert script.name == "post-portkey.lua"
    text = script.read_text()
    assert 'wrk.headers["x-portkey-provider"] = "openai"' in text
    assert 'wrk.headers["x-portkey-custom-host"] = "http://127.0.0.1:8123/v1"' in text
    assert 'wrk.headers["Authorization"] = "Bearer ' in text  # the default fields stay
    plain = _bench(tmp_path).script("post", b'{"model":"m"}')
    assert "x-portkey" not in plain.read_text()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_loopback_shim_binds_a_hostless_listen_to_127_0_0_1(tmp_path: Path) -> None:
    # What the gateway's `serve({fetch, port})` does: listen(port, undefined, callback).
    program = (
        "import net from 'node:net';"
        "const s = net.createServer();"
        "s.listen(0, undefined, () => { console.log(s.address().address); s.close(); });"
    )
    shim = write_loopback_shim(tmp_path)
    node = shutil.which("node") or "node"
    argv = [node, "--import", str(shim), "--input-type=module", "-e", program]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert proc.stdout.strip() == "127.0.0.1", proc.stderr


# --- a peer that cannot be installed is a note, not a crash ---------------------------------


def test_portkey_without_node_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda _name: None)
    bench = _bench(tmp_path)
    target = peers.portkey_target(bench, 8080)
    assert target.kind == "skipped" and not target.ok
    note = bench.stack.notes["portkey"]
    assert note.startswith("skipped: node and npm are needed")
    assert "\n" not in note


def test_portkey_install_failure_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: f"/usr/bin/{name}")

    def offline(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(argv, 1, "", "npm error\nnpm error code EAI_AGAIN\n")

    monkeypatch.setattr(subprocess, "run", offline)
    bench = _bench(tmp_path)
    target = peers.portkey_target(bench, 8080)
    assert target.kind == "skipped"
    assert bench.stack.notes["portkey"] == (
        "skipped: npm install @portkey-ai/gateway@1.15.2: npm error code EAI_AGAIN"
    )


def test_litellm_install_failure_is_skipped_with_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(argv: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        error = "ERROR: Could not find a version that satisfies the requirement litellm\n"
        return subprocess.CompletedProcess(argv, 1, "", "WARNING: retrying\n" + error)

    monkeypatch.setattr(subprocess, "run", offline)
    bench = _bench(tmp_path)
    target = peers.litellm_target(bench, 8080)
    assert target.kind == "skipped"
    note = bench.stack.notes["litellm"]
    assert note.startswith(f"skipped: pip install litellm[proxy]=={peers.LITELLM_VERSION}: ERROR")


# --- the reply check ----------------------------------------------------------------------


class _Answer(http.server.BaseHTTPRequestHandler):
    status = 200
    body = RESPONSE_BODY
    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        self.rfile.read(int(self.headers["Content-Length"]))
        type(self).seen.append(dict(self.headers))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *_: object) -> None:
        pass


def _serve(status: int, body: bytes) -> Iterator[tuple[int, type[_Answer]]]:
    handler = type("Handler", (_Answer,), {"status": status, "body": body, "seen": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def upstream() -> Iterator[tuple[int, type[_Answer]]]:
    yield from _serve(200, RESPONSE_BODY)


def test_reply_check_passes_the_upstreams_answer(upstream: tuple[int, type[_Answer]]) -> None:
    port, _ = upstream
    relayed = json.loads(RESPONSE_BODY) | {"id": "chatcmpl-relayed", "system_fingerprint": None}
    for peer_port, handler in _serve(200, json.dumps(relayed).encode()):
        assert check_reply(peer_port, {"x-portkey-provider": "openai"}, port) is None
        assert handler.seen[0]["x-portkey-provider"] == "openai"  # the target's own fields


@pytest.mark.parametrize(
    ("status", "body", "shown"),
    [
        (400, b'{"status":"failure","message":"Invalid custom host"}', "answered 400"),
        (200, b'{"choices":[{"message":{"content":"from elsewhere"}}]}', "answered 200"),
        (200, b"not json", "not json"),
    ],
)
def test_reply_check_refuses_anything_else(
    upstream: tuple[int, type[_Answer]], status: int, body: bytes, shown: str
) -> None:
    port, _ = upstream
    for peer_port, _handler in _serve(status, body):
        problem = check_reply(peer_port, {}, port)
        assert problem is not None and shown in problem and "\n" not in problem


def test_reply_check_names_a_peer_that_does_not_answer(
    upstream: tuple[int, type[_Answer]],
) -> None:
    port, _ = upstream
    problem = check_reply(1, {}, port)  # nothing listens on port 1
    assert problem is not None and problem.startswith("no answer to the bench request")


# --- JSON and table -----------------------------------------------------------------------


def _rep(rep: int, **values: float) -> dict[str, float]:
    return {"rep": float(rep), **values}


def _results() -> dict[str, Any]:
    def target(*reps: dict[str, float], error: str | None = None) -> dict[str, Any]:
        return {"description": "", "error": error, "reps": list(reps)}

    saturation = {
        "direct": target(_rep(0, rps=1e5), _rep(1, rps=1e5)),
        "nginx": target(_rep(0, req_per_cpu_s=60_000.0), _rep(1, req_per_cpu_s=50_000.0)),
        "agw-1w": target(_rep(0, req_per_cpu_s=12_000.0), _rep(1, req_per_cpu_s=10_000.0)),
        "litellm": target(_rep(0, req_per_cpu_s=150.0), _rep(1, req_per_cpu_s=125.0)),
    }
    latency = {
        "direct": target(_rep(0, p50_us=50.0, p99_us=90.0), _rep(1, p50_us=60.0, p99_us=100.0)),
        "nginx": target(_rep(0, p50_us=80.0, p99_us=140.0), _rep(1, p50_us=90.0, p99_us=150.0)),
        "agw-1w": target(_rep(0, p50_us=150.0, p99_us=250.0), _rep(1, p50_us=160.0, p99_us=0.0)),
        "litellm": target(
            _rep(0, p50_us=8050.0, p99_us=12090.0), _rep(1, p50_us=9060.0, p99_us=13100.0)
        ),
    }
    return {
        "commit_short": "abcdef12",
        "machine": {"nginx": "nginx version: nginx/1.22.1", "packages": {"agw-fast": "0.1.0"}},
        "scenarios": {"saturation": {"targets": saturation}, "latency": {"targets": latency}},
        "notes": {"portkey": "skipped: node and npm are needed (Debian packages `nodejs`, `npm`)"},
        "peers": {
            "portkey": {"version": "1.15.2", "installed": None},
            "litellm": {"version": "1.80.17", "installed": "1.80.17"},
        },
    }


def test_peer_rows_pair_ratios_and_added_latency() -> None:
    rows = {row["proxy"]: row for row in peer_rows(_results())}
    assert list(rows) == ["nginx", "agw-1w", "portkey", "litellm"]  # agw-ai did not run
    litellm = rows["litellm"]
    assert litellm["version"] == "1.80.17" and litellm["error"] is None
    assert litellm["req_per_cpu_s"] == {"median": 137.5, "min": 125.0, "max": 150.0}
    assert litellm["ratio_to_nginx"]["median"] == pytest.approx((150 / 60_000 + 125 / 50_000) / 2)
    assert litellm["added_p50_us"] == {"median": 8500.0, "min": 8000.0, "max": 9000.0}
    assert litellm["added_p99_us"]["median"] == 12500.0
    assert rows["nginx"]["version"] == "1.22.1"
    assert rows["agw-1w"]["version"] == "0.1.0 (abcdef12)"
    assert rows["portkey"]["error"].startswith("skipped: node and npm")
    json.dumps(rows)  # JSON-ready


def test_peer_table_is_markdown_with_the_skip_named() -> None:
    table = format_peer_table(_results()).splitlines()
    assert table[0].startswith("| proxy | version | req per proxy CPU-s | × nginx |")
    assert table[1] == "|---|---|---:|---:|---:|---:|"
    litellm = next(line for line in table if line.startswith("| LiteLLM"))
    assert litellm == (
        "| LiteLLM proxy (Python) | 1.80.17 | 138 [125…150] | 0.0025× | +8.5 ms [+8.0 ms…+9.0 ms] "
        "| +12.5 ms [+12.0 ms…+13.0 ms] |"
    )
    portkey = next(line for line in table if line.startswith("| Portkey"))
    assert "skipped: node and npm are needed" in portkey
    assert format_peer_table({"peers": {}}) == ""


def test_key_figures_list_each_peer() -> None:
    figures = {row.figure for row in key_figures(_results())}
    assert {"litellm: req per proxy CPU-s", "litellm: added latency c=1 p99"} <= figures


def test_peer_details_record_version_and_method(tmp_path: Path) -> None:
    for name in PEERS:
        details = peer_details(name, tmp_path)
        assert details["version"] == PEERS[name].version
        assert details["installed"] is None  # nothing installed under tmp_path
        assert details["method"] and details["runtime"]
