"""Portkey's AI gateway (npm `@portkey-ai/gateway`, Node.js) as a bench peer: install, argv,
and the request fields that route the bench's chat request to the local upstream.

Portkey has no config file for a self-hosted route: every request names its provider and,
for a provider at an address of one's own, its base URL in headers (`x-portkey-provider`,
`x-portkey-custom-host`). 1.15.2 trusts `127.0.0.1` as a custom host out of the box.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

__all__ = [
    "PORTKEY_PACKAGE",
    "PORTKEY_VERSION",
    "PortkeyUnavailable",
    "ensure_portkey",
    "portkey_argv",
    "portkey_headers",
    "portkey_installed",
    "write_loopback_shim",
]

PORTKEY_PACKAGE = "@portkey-ai/gateway"
# The registry's newest release when pinned (`npm view @portkey-ai/gateway versions`).
PORTKEY_VERSION = os.environ.get("BENCH_PORTKEY_VERSION", "1.15.2")

# The package's bin (`build/start-server.js`) calls `serve({fetch, port})` with no hostname,
# i.e. every interface, and takes only `--port=` and `--headless`. The bench binds loopback
# only, so node preloads this module, which gives `listen()` calls that name no host
# 127.0.0.1; the gateway's own code runs as shipped.
_LOOPBACK_SHIM = """\
// Written by agw-fast's bench: listen() without a host binds 127.0.0.1, not every interface.
import net from "node:net";
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === "number") {
    if (typeof args[1] === "function") args.splice(1, 0, "127.0.0.1");
    else if (args[1] === undefined || args[1] === null) args[1] = "127.0.0.1";
  } else if (args[0] && typeof args[0] === "object" && args[0].port !== undefined) {
    if (!args[0].host) args[0] = { ...args[0], host: "127.0.0.1" };
  }
  return listen.apply(this, args);
};
"""


class PortkeyUnavailable(RuntimeError):
    """Portkey cannot be installed here (no node/npm, no registry): the peer is skipped."""


def install_dir(work: Path) -> Path:
    return work / "peers" / f"portkey-{PORTKEY_VERSION}"


def _package_dir(work: Path) -> Path:
    return install_dir(work) / "node_modules" / "@portkey-ai" / "gateway"


def portkey_installed(work: Path) -> dict[str, str]:
    """Versions on disk: the gateway and the two packages its HTTP path runs on (empty when
    not installed)."""
    modules = install_dir(work) / "node_modules"
    versions = {}
    for name in (PORTKEY_PACKAGE, "hono", "@hono/node-server"):
        try:
            versions[name] = json.loads((modules / name / "package.json").read_text())["version"]
        except (OSError, ValueError, KeyError):
            pass
    return versions


def ensure_portkey(work: Path, log: Callable[[str], None]) -> Path:
    """Install `@portkey-ai/gateway@VERSION` with npm once; returns its start script."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise PortkeyUnavailable("node and npm are needed (Debian packages `nodejs`, `npm`)")
    directory = install_dir(work)
    script = _package_dir(work) / "build" / "start-server.js"
    if portkey_installed(work).get(PORTKEY_PACKAGE) != PORTKEY_VERSION or not script.exists():
        log(f"installing {PORTKEY_PACKAGE}@{PORTKEY_VERSION} into {directory} (one time) ...")
        directory.mkdir(parents=True, exist_ok=True)
        # --ignore-scripts: the only install script in the tree is the gateway's own
        # `patch-package` postinstall, which has no patches/ in the published package (5 files),
        # so it would do nothing; skipping it means no dependency runs code at install time.
        argv = [
            npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", "--omit=dev",
            "--save-exact", "--fetch-retries=1", "--fetch-timeout=60000",
            f"{PORTKEY_PACKAGE}@{PORTKEY_VERSION}",
        ]  # fmt: skip
        try:
            proc = subprocess.run(argv, cwd=directory, capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            raise PortkeyUnavailable(f"npm install failed: {exc}") from exc
        if proc.returncode != 0 or not script.exists():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["(no output)"]
            raise PortkeyUnavailable(f"npm install {PORTKEY_PACKAGE}@{PORTKEY_VERSION}: {tail[0]}")
    write_loopback_shim(directory)
    return script


def write_loopback_shim(directory: Path) -> Path:
    """The module node preloads so that the gateway listens on 127.0.0.1 only."""
    path = directory / "loopback.mjs"
    path.write_text(_LOOPBACK_SHIM)
    return path


def portkey_argv(work: Path, script: Path, port: int) -> list[str]:
    """What `npx @portkey-ai/gateway --port=N --headless` runs, plus the loopback preload.
    `--headless`: no log UI (a server deployment; the per-request log hook still runs)."""
    node = shutil.which("node") or "node"
    shim = install_dir(work) / "loopback.mjs"
    return [
        node,
        "--import",
        str(shim.resolve()),
        str(script.resolve()),
        f"--port={port}",
        "--headless",
    ]


def portkey_headers(upstream_port: int) -> dict[str, str]:
    """Route the OpenAI chat request to the bench's upstream: provider `openai` at a custom
    base URL (the provider appends `/chat/completions`, so the path upstream is unchanged)."""
    return {
        "x-portkey-provider": "openai",
        "x-portkey-custom-host": f"http://127.0.0.1:{upstream_port}/v1",
    }
