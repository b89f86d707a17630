"""`agw-fast demo`: the gateway on the bundled demo config, in front of the bundled mock LLM.

Runs with no API key and no internet: two mock LLMs start as child processes, a healthy one
on $MOCK_LLM_PORT (default 18000) and one that fails every request on $MOCK_FLAKY_PORT
(18001), and the gateway serves `demo.yaml`: the binds form on $DEMO_PORT (3000) and the
`llm:` form on $DEMO_LLM_PORT (4000).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from agw_fast.config.load import load_config_file
from agw_fast.errors import ConfigError
from agw_fast.serve import serve

__all__ = ["DEMO_CONFIG", "run_demo"]

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")


def _wait_for_line(process: subprocess.Popen[str], timeout: float) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line:
            return line.strip()
        if process.poll() is not None:
            break
    return ""


def run_demo(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="agw-fast demo")
    parser.add_argument("-f", "--file", type=Path, default=DEMO_CONFIG)
    parser.add_argument("--port", type=int, default=int(os.environ.get("DEMO_PORT", 3000)))
    parser.add_argument(
        "--mock-port", type=int, default=int(os.environ.get("MOCK_LLM_PORT", 18000))
    )
    parser.add_argument(
        "--flaky-port", type=int, default=int(os.environ.get("MOCK_FLAKY_PORT", 18001))
    )
    parser.add_argument(
        "--llm-port", type=int, default=int(os.environ.get("DEMO_LLM_PORT", 4000))
    )
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        print("agw-fast demo: --workers must be at least 1", file=sys.stderr)
        return 2
    mocks = [
        _start_mock(args.mock_port, "--chunk-delay", "0.05"),
        _start_mock(args.flaky_port, "--fail-status", "503"),
    ]
    try:
        for mock in mocks:
            ready = _wait_for_line(mock, 10.0)
            if "listening" not in ready:
                print(f"agw-fast demo: the mock LLM did not start ({ready or 'no output'})",
                      file=sys.stderr)
                return 1
        os.environ["MOCK_LLM_PORT"] = str(args.mock_port)
        os.environ["MOCK_FLAKY_PORT"] = str(args.flaky_port)
        os.environ["DEMO_PORT"] = str(args.port)
        os.environ["DEMO_LLM_PORT"] = str(args.llm_port)
        chat = (
            "-H 'content-type: application/json' "
            "-d '{\"model\":\"%s\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'"
        )
        print(
            f"agw-fast demo: gateway on http://127.0.0.1:{args.port} -> mock LLM on "
            f"127.0.0.1:{args.mock_port}. Try:\n"
            f"  curl -s http://127.0.0.1:{args.port}/v1/chat/completions "
            "-H 'content-type: application/json' "
            "-d '{\"model\":\"any\",\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n"
            f"  curl -sN http://127.0.0.1:{args.port}/v1/chat/completions "
            "-H 'content-type: application/json' "
            "-d '{\"model\":\"any\",\"stream\":true,"
            "\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}]}'\n"
            "  curl -s http://127.0.0.1:15020/metrics | grep token_usage\n"
            f"The llm: form on http://127.0.0.1:{args.llm_port} (two providers, failover):\n"
            f"  curl -s http://127.0.0.1:{args.llm_port}/v1/models\n"
            f"  curl -s http://127.0.0.1:{args.llm_port}/v1/chat/completions "
            + chat % "claude/haiku" + "   # OpenAI in, Anthropic out\n"
            f"  curl -s http://127.0.0.1:{args.llm_port}/v1/chat/completions "
            + chat % "resilient" + "   # 503 once, then the backup\n"
            "Stop with Ctrl-C.",
            flush=True,
        )
        try:
            config = load_config_file(args.file, os.environ)
        except ConfigError as error:
            print(f"config error: {error}", file=sys.stderr)
            return 1
        except OSError as error:
            print(f"agw-fast demo: cannot read {args.file}: {error.strerror}", file=sys.stderr)
            return 1
        return serve(config, workers=args.workers, bind_address="127.0.0.1")
    finally:
        for mock in mocks:
            mock.terminate()
        for mock in mocks:
            try:
                mock.wait(5)
            except subprocess.TimeoutExpired:
                mock.kill()


def _start_mock(port: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "agw_fast", "mock-llm", "--host", "127.0.0.1", "--port",
         str(port), *flags],
        stdout=subprocess.PIPE,
        text=True,
    )
