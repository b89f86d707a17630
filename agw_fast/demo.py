"""`agw-fast demo`: the gateway on the bundled demo config, in front of the bundled mock LLM.

Runs with no API key and no internet: the mock LLM starts as a child process on
$MOCK_LLM_PORT (default 18000) and the gateway serves `demo.yaml` on $DEMO_PORT (3000).
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
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args(argv)
    if args.workers < 1:
        print("agw-fast demo: --workers must be at least 1", file=sys.stderr)
        return 2
    mock = subprocess.Popen(
        [
            sys.executable, "-m", "agw_fast", "mock-llm",
            "--host", "127.0.0.1", "--port", str(args.mock_port), "--chunk-delay", "0.05",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        ready = _wait_for_line(mock, 10.0)
        if "listening" not in ready:
            print(f"agw-fast demo: the mock LLM did not start ({ready or 'no output'})",
                  file=sys.stderr)
            return 1
        os.environ["MOCK_LLM_PORT"] = str(args.mock_port)
        os.environ["DEMO_PORT"] = str(args.port)
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
        mock.terminate()
        try:
            mock.wait(5)
        except subprocess.TimeoutExpired:
            mock.kill()
