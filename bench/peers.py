"""Peer gateways measured with the same saturation and c=1 scenarios (`--peer portkey,litellm`,
`--peer all`): the gateways users would pick instead, installed from the package registries
into bench/.work/peers/ (never into the project's environment), one process each, in front
of the same upstream on the same route.

Before a peer is measured it must answer the bench's request with the upstream's own reply
(status 200, the upstream's message): a peer that answers errors is a failed target, never
numbers. A peer that cannot be installed here (no node/npm, no registry) is skipped with one
line in the run's notes.
"""

from __future__ import annotations

import http.client
import json
import os
import platform
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.harness import FAILURES, Bench, load_cpu
from bench.payloads import API_KEY, CHAT_PATH, REQUEST_BODY
from bench.peer_portkey import (
    PORTKEY_PACKAGE,
    PORTKEY_VERSION,
    PortkeyUnavailable,
    ensure_portkey,
    portkey_argv,
    portkey_headers,
    portkey_installed,
)
from bench.procs import Proc, ProcStartError, free_port
from bench.targets import CPU_PROXY, Stack, Target
from bench.wrk import run_wrk

__all__ = [
    "LITELLM_VERSION",
    "PEERS",
    "Peer",
    "PeerUnavailable",
    "check_reply",
    "ensure_litellm",
    "litellm_target",
    "parse_peers",
    "peer_details",
    "portkey_target",
]

# LiteLLM 1.80.17, inspected before pinning (see bench/README.md, "Peers"): the 1.82 line was
# compromised upstream (1.82.7/1.82.8: a credential stealer, in 1.82.8 also a `litellm_init.pth`
# start-up hook; BerriAI/litellm#24512) and the index no longer lists 1.107.x. 1.80.17 predates
# both; its wheel is pure Python (py3-none-any, poetry-core), holds only `litellm/` and its
# dist-info, no `.pth`, every file matches RECORD, and no exec of decoded data. The 1.106.x
# wheels carry a 37 MB native `rust_bridge` that cannot be read the same way. Its `[proxy]`
# extra pins litellm-enterprise 0.1.27 and litellm-proxy-extras 0.4.23 exactly.
LITELLM_VERSION = os.environ.get("BENCH_LITELLM_VERSION", "1.80.17")
SECONDS = 1.0
REPLY_TIMEOUT = 60 * SECONDS  # LiteLLM's first request imports a lot
# Unmeasured load right after a peer starts (on top of every run's own warm-up): V8 compiles
# Portkey's hot path over its first thousands of requests, and its req per CPU-second more than
# doubled across three 5 s repetitions without this. A server that has run a while is the state
# users see.
PEER_WARMUP_MAX = 10 * SECONDS


class PeerUnavailable(RuntimeError):
    """The peer cannot be installed in this environment: skipped, not failed."""


@dataclass(frozen=True)
class Peer:
    name: str
    version: str
    start: Callable[[Bench, int], Target]  # (bench, upstream port) -> running target
    method: str  # how it is installed, started and routed (goes into the JSON)


# --- checks and helpers shared by the peers ------------------------------------------------


def _content(body: bytes) -> str | None:
    """The assistant message of a `chat.completion` JSON body, or None."""
    try:
        doc = json.loads(body)
        content = doc["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


def _post(port: int, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    fields = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "Authorization": f"Bearer {API_KEY}",
    } | headers
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", CHAT_PATH, REQUEST_BODY, fields)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def check_reply(port: int, headers: dict[str, str], upstream_port: int) -> str | None:
    """None when the peer on `port` answers the bench request with status 200 and the
    upstream's own message; else what it answered instead (one line)."""
    try:
        _, upstream_body = _post(upstream_port, {}, 10 * SECONDS)
        status, body = _post(port, headers, REPLY_TIMEOUT)
    except (OSError, http.client.HTTPException) as exc:
        return f"no answer to the bench request: {type(exc).__name__}: {exc}"
    expected = _content(upstream_body)
    if status != 200 or expected is None or _content(body) != expected:
        text = body[:300].decode(errors="replace").replace("\n", " ")
        return f"answered {status} without the upstream's reply: {text}"
    return None


def _skip(stack: Stack, name: str, description: str, why: str) -> Target:
    """Cannot run here: one line in the notes (printed under the table), not a failure."""
    stack.notes[name] = f"skipped: {why}"
    return Target(name, "skipped", description, error=f"skipped: {why}")


def _start(
    bench: Bench,
    name: str,
    description: str,
    argv: list[str],
    *,
    cwd: Path,
    env: dict[str, str],
    upstream_port: int,
    port: int,
    headers: dict[str, str],
    ready_timeout: float,
) -> Target:
    stack = bench.stack
    proc = Proc(
        name,
        argv,
        stack.work / "logs" / f"{name}.log",
        cwd=cwd,
        env=env,
        cpu=CPU_PROXY if stack.pin else None,
    )
    try:
        proc.start().wait_ready(port, timeout=ready_timeout)
    except ProcStartError as exc:
        return Target(name, "peer", description, error=str(exc))
    problem = check_reply(port, headers, upstream_port)
    if problem is not None:
        proc.stop()
        return Target(name, "peer", description, error=f"{name} {problem}")
    target = Target(name, "peer", description, port, [proc], headers=headers)
    _warm_up(bench, target)
    return target


def _warm_up(bench: Bench, target: Target) -> None:
    """Closed-loop load for 2 × the run length (2–10 s), not measured; a failure here shows
    up again, with its count, in the measured runs."""
    seconds = max(2 * SECONDS, min(PEER_WARMUP_MAX, 2 * bench.settings.duration))
    script = bench.script("post", REQUEST_BODY, target=target)
    try:
        run_wrk(
            bench.wrk,
            target.url(CHAT_PATH),
            script=script,
            connections=bench.settings.saturation_conns,
            duration=seconds,
            cpu=load_cpu(bench),
        )
    except FAILURES as exc:
        bench.log(f"  ! {target.name} warm-up: {exc}")


# --- LiteLLM (PyPI, Python) ------------------------------------------------------------------


def _venv_dir(work: Path) -> Path:
    return work / "peers" / f"litellm-{LITELLM_VERSION}"


def ensure_litellm(work: Path, log: Callable[[str], None]) -> Path:
    """Create the peer venv and install `litellm[proxy]==VERSION` once; returns its CLI."""
    venv = _venv_dir(work)
    cli = venv / "bin" / "litellm"
    if cli.exists():
        return cli
    log(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (one time) ...")
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        proc = subprocess.run(
            [
                str(venv / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--retries",
                "1",
                "--timeout",
                "30",
                f"litellm[proxy]=={LITELLM_VERSION}",
            ],
            capture_output=True,
            text=True,
            timeout=1800,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise PeerUnavailable(f"litellm install failed: {exc}") from exc
    if proc.returncode != 0 or not cli.exists():
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")]
        raise PeerUnavailable(
            f"pip install litellm[proxy]=={LITELLM_VERSION}: "
            + (lines[-1] if lines else proc.stderr.strip()[-200:] or "failed")
        )
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
        desc = f"LiteLLM proxy {LITELLM_VERSION} (Python), 1 worker"
        try:
            cli = ensure_litellm(stack.work, bench.log)
        except PeerUnavailable as exc:
            return _skip(stack, "litellm", desc, str(exc))
        port = free_port()
        config = _litellm_config(stack.work / "litellm.yaml", upstream_port)
        # No network here: use the bundled model-cost map, no telemetry, quiet logs.
        env = dict(os.environ) | {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",
            "LITELLM_LOG": "ERROR",
            "LITELLM_TELEMETRY": "False",
        }
        argv = [str(cli), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
        argv += ["--num_workers", "1"]
        return _start(
            bench, "litellm", desc, argv, cwd=stack.work, env=env,
            upstream_port=upstream_port, port=port, headers={}, ready_timeout=180 * SECONDS,
        )  # fmt: skip

    return stack.cached("litellm", build)


# --- Portkey (npm, Node.js) ------------------------------------------------------------------


def portkey_target(bench: Bench, upstream_port: int) -> Target:
    """Portkey's gateway, one node process, routed to the same upstream by request headers
    (the wrk script `post-portkey.lua` carries them)."""
    stack = bench.stack

    def build() -> Target:
        desc = f"Portkey gateway {PORTKEY_VERSION} (Node.js), 1 process"
        try:
            script = ensure_portkey(stack.work, bench.log)
        except PortkeyUnavailable as exc:
            return _skip(stack, "portkey", desc, str(exc))
        port = free_port()
        return _start(
            bench, "portkey", desc, portkey_argv(stack.work, script, port),
            cwd=script.parent.parent, env=dict(os.environ), upstream_port=upstream_port,
            port=port, headers=portkey_headers(upstream_port), ready_timeout=60 * SECONDS,
        )  # fmt: skip

    return stack.cached("portkey", build)


PEERS: dict[str, Peer] = {
    "portkey": Peer(
        "portkey",
        PORTKEY_VERSION,
        portkey_target,
        f"npm install --ignore-scripts {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into "
        "bench/.work/peers/portkey-<version>/; started as its bin, `node build/start-server.js "
        "--port=N --headless` (one process; a preloaded module binds it to 127.0.0.1); the "
        "request carries `x-portkey-provider: openai` and `x-portkey-custom-host: "
        "http://127.0.0.1:<upstream>/v1`",
    ),
    "litellm": Peer(
        "litellm",
        LITELLM_VERSION,
        litellm_target,
        f"pip install litellm[proxy]=={LITELLM_VERSION} into its own venv "
        "bench/.work/peers/litellm-<version>/; `litellm --config ... --num_workers 1` (one "
        "model `gpt-4o-mini` -> `openai/gpt-4o-mini` at api_base http://127.0.0.1:<upstream>/v1, "
        "master_key = the bench's API key, local cost map, telemetry off)",
    ),
}


def parse_peers(values: list[str]) -> list[str]:
    """`--peer` values (repeatable, comma-separated, `all`) -> peer names in registry order.
    Raises ValueError naming an unknown peer."""
    wanted: set[str] = set()
    for value in values:
        for name in (part.strip().lower() for part in value.split(",")):
            if name == "all":
                wanted |= set(PEERS)
            elif name in PEERS:
                wanted.add(name)
            elif name:
                raise ValueError(f"unknown peer {name!r} (choose from: all, {', '.join(PEERS)})")
    return [name for name in PEERS if name in wanted]


def _litellm_installed(work: Path) -> str | None:
    for dist in sorted(_venv_dir(work).glob("lib/python*/site-packages/litellm-*.dist-info")):
        return dist.name[len("litellm-") : -len(".dist-info")]
    return None


def _node_version() -> str | None:
    node = shutil.which("node")
    if node is None:
        return None
    try:
        proc = subprocess.run([node, "-v"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def peer_details(name: str, work: Path) -> dict[str, Any]:
    """What the JSON records about a peer: pinned and installed versions, runtime, method."""
    peer = PEERS[name]
    details: dict[str, Any] = {"version": peer.version, "method": peer.method}
    if name == "portkey":
        installed = portkey_installed(work)
        details |= {
            "installed": installed.get(PORTKEY_PACKAGE),
            "packages": installed,
            "runtime": f"node {_node_version() or '?'}",
        }
    else:
        details |= {
            "installed": _litellm_installed(work),
            "runtime": f"python {platform.python_version()}",
        }
    return details
