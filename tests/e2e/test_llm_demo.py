"""`agw-fast demo`: the gateway on its bundled config in front of the bundled mock LLM, driven as
its banner says (the curl commands, done with httpx), then stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.conftest import (
    _LISTEN_RE,
    _STATS_RE,
    DEADLINE,
    Process,
    _start,
    _wait_accepting,
    _wait_for,
    access_log_lines,
    metric_total,
    poll,
    scrape_metrics,
    unused_port,
)

MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[Process, dict[str, int]]]:
    # Free ports found by binding port 0 and releasing them: a tiny race we accept.
    ports = {name: unused_port() for name in
             ("DEMO_PORT", "MOCK_LLM_PORT", "DEMO_STATS_PORT", "DEMO_READY_PORT",
              "DEMO_LLM_PORT", "MOCK_FLAKY_PORT")}
    assert len(set(ports.values())) == len(ports)
    log = tmp_path / "demo.log"
    proc = _start(["demo"], log, {name: str(port) for name, port in ports.items()})
    try:
        (port,) = _wait_for(log, _LISTEN_RE, proc)[:1]
        assert port in (ports["DEMO_PORT"], ports["DEMO_LLM_PORT"])
        port = ports["DEMO_PORT"]
        assert _wait_for(log, _STATS_RE, proc)[0] == ports["DEMO_STATS_PORT"]
        _wait_accepting(port)
        yield Process(proc, log, port), ports
    finally:
        # The demo runs in its own session: whatever is left of it (gateway workers, the mock)
        # goes with its process group.
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(DEADLINE)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def accepting(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_demo_serves_completions_and_stops_on_sigterm(
    demo: tuple[Process, dict[str, int]],
) -> None:
    process, ports = demo
    base = f"http://127.0.0.1:{process.port}"
    banner = process.output()
    assert f"curl -s http://127.0.0.1:{process.port}/v1/chat/completions" in banner

    response = httpx.post(f"{base}/v1/chat/completions", json={"model": "any",
                          "messages": MESSAGES}, timeout=DEADLINE)
    assert response.status_code == 200, response.text
    completion = response.json()
    assert completion["object"] == "chat.completion"
    assert completion["model"] == "mock-gpt-4o"
    assert completion["choices"][0]["message"]["content"]

    stream = httpx.post(f"{base}/v1/chat/completions", json={"model": "any", "stream": True,
                        "messages": MESSAGES}, timeout=DEADLINE)
    assert stream.status_code == 200
    assert stream.headers["content-type"].startswith("text/event-stream")
    assert b'"model":"mock-gpt-4o"' in stream.content
    assert stream.content.endswith(b"data: [DONE]\n\n")

    token_count = "agentgateway_gen_ai_client_token_usage_count"
    samples = poll(lambda: scrape_metrics(ports["DEMO_STATS_PORT"]),
                   lambda s: metric_total(s, token_count, gen_ai_token_type="input") >= 2,
                   what="token usage of both requests")
    assert metric_total(samples, token_count, gen_ai_request_model="mock-gpt-4o",
                        gen_ai_token_type="output") == 2
    ready = httpx.get(f"http://127.0.0.1:{ports['DEMO_READY_PORT']}/healthz/ready",
                      timeout=DEADLINE)
    assert ready.status_code == 200

    lines = poll(lambda: access_log_lines(process.output()), lambda found: len(found) >= 2,
                 what="two access log lines")
    assert [line["gen_ai.request.model"] for line in lines] == ["mock-gpt-4o"] * 2

    # The llm: form, as the banner shows it: the models, a translated call, the failover.
    llm = f"http://127.0.0.1:{ports['DEMO_LLM_PORT']}"
    assert f"curl -s {llm}/v1/models" in banner
    _wait_accepting(ports["DEMO_LLM_PORT"])
    models = httpx.get(f"{llm}/v1/models", timeout=DEADLINE).json()
    assert [m["id"] for m in models["data"]] == ["claude/*", "gpt-4o", "resilient"]
    translated = httpx.post(f"{llm}/v1/chat/completions", json={
        "model": "claude/haiku", "messages": MESSAGES}, timeout=DEADLINE)
    assert translated.status_code == 200, translated.text
    assert translated.json()["object"] == "chat.completion"
    assert translated.json()["model"] == "haiku"
    first = httpx.post(f"{llm}/v1/chat/completions", json={
        "model": "resilient", "messages": MESSAGES}, timeout=DEADLINE)
    assert first.status_code == 503  # the failing provider's own answer, once
    for _ in range(3):
        after = httpx.post(f"{llm}/v1/chat/completions", json={
            "model": "resilient", "messages": MESSAGES}, timeout=DEADLINE)
        assert after.status_code == 200 and after.json()["model"] == "haiku"
    assert "demo-secret-key" not in process.output()

    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(DEADLINE) == 0
    # The demo took its mock down with it, and nothing listens any more.
    poll(lambda: [accepting(ports[name]) for name in ports], lambda found: not any(found),
         what="the demo's ports to close")
    assert "Traceback" not in process.output()
