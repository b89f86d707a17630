"""Peer gateways measured with the same saturation and c=1 scenarios (`--peer litellm`).

LiteLLM runs from its own virtualenv under bench/.work/peers, pinned to a release older than
the compromised 1.107.0. It is never imported into the project's environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from bench.harness import Bench
from bench.payloads import API_KEY
from bench.procs import Proc, ProcStartError, free_port
from bench.targets import CPU_PROXY, Target

__all__ = ["LITELLM_VERSION", "PEERS", "ensure_litellm", "litellm_target"]

# 1.107.0 was a compromised release: stay below it. 1.106.0 is the newest 1.106.x whose
# `[proxy]` extra resolves on the package index here (later ones pin an unreleased certifi).
LITELLM_VERSION = os.environ.get("BENCH_LITELLM_VERSION", "1.106.0")
SECONDS = 1.0


def _venv_dir(work: Path) -> Path:
    return work / "peers" / f"litellm-{LITELLM_VERSION}"


def ensure_litellm(work: Path, log: Callable[[str], None]) -> Path:
    """Create the peer venv and install `litellm[proxy]==VERSION` once; returns its CLI."""
    venv = _venv_dir(work)
    cli = venv / "bin" / "litellm"
    if cli.exists():
        return cli
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (one time) ...")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    proc = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--quiet",
            f"litellm[proxy]=={LITELLM_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0 or not cli.exists():
        raise ProcStartError(f"litellm install failed: {proc.stderr.strip()[-400:]}")
    return cli


def _litellm_config(path: Path, upstream_port: int) -> Path:
    # The bench request asks for gpt-4o-mini; LiteLLM forwards it to the local upstream.
    path.write_text(
        "model_list:\n"
        "  - model_name: gpt-4o-mini\n"
        "    litellm_params:\n"
        "      model: openai/gpt-4o-mini\n"
        f"      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-bench-upstream\n"
        "litellm_settings:\n"
        "  drop_params: true\n"
        "  telemetry: false\n"
        # The bench's own key doubles as the master key: requests are authenticated, as in
        # any real deployment (LiteLLM refuses to start without one).
        "general_settings:\n"
        f"  master_key: {API_KEY}\n"
    )
    return path


def litellm_target(bench: Bench, upstream_port: int) -> Target:
    """LiteLLM proxy, 1 worker, in front of the same upstream (cached per run)."""
    stack = bench.stack

    def build() -> Target:
        desc = f"LiteLLM proxy {LITELLM_VERSION}, 1 worker"
        try:
            cli = ensure_litellm(stack.work, bench.log)
        except (OSError, subprocess.SubprocessError, ProcStartError) as exc:
            return Target("litellm", "peer", desc, error=str(exc))
        port = free_port()
        config = _litellm_config(stack.work / "litellm.yaml", upstream_port)
        env = dict(os.environ)
        # No network here: use the bundled model-cost map, no telemetry, quiet logs.
        env |= {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        }
        argv = [
            str(cli),
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ]
        proc = Proc(
            "litellm",
            argv,
            stack.work / "logs" / "litellm.log",
            cwd=stack.work,
            env=env,
            cpu=CPU_PROXY if stack.pin else None,
        )
        try:
            proc.start().wait_ready(port, timeout=180 * SECONDS)
        except ProcStartError as exc:
            return Target("litellm", "peer", desc, error=str(exc))
        return Target("litellm", "peer", desc, port, [proc])

    return stack.cached("litellm", build)


PEERS: dict[str, Callable[[Bench, int], Target]] = {"litellm": litellm_target}
