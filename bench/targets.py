"""What the bench measures: the upstreams, nginx as reference proxy, and agw-fast itself.

`Stack` starts each server on demand on 127.0.0.1 and stops all of them at the end. A server
that fails to start gives a `Target` with `error` set (the tail of its log), so the scenarios
record that target as failed and carry on with the others.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bench.nginx import make_cert, nginx_argv, proxy_conf, upstream_conf
from bench.policies import PolicyRoute, PolicyUnavailable, policy_route
from bench.procs import (
    Proc,
    ProcStartError,
    find_tool,
    free_port,
    leaf_pids,
    listen_socket_count,
)

__all__ = ["LLM_MODEL", "LLM_ROUTES", "Stack", "Target", "Tools", "agw_config", "llm_config"]

SECONDS = 1.0
# With --pin: load generator and upstream on CPU 0, the proxy under test on CPU 1.
CPU_LOAD, CPU_PROXY = 0, 1
# How agw-fast names a missing optional dependency when it refuses a config at load.
_INSTALL_HINT = re.compile(r"pip install '?agw-fast\[[a-z0-9,_-]+\]'?")
# `llm:` routes (route name -> the model's provider and the upstream model it is rewritten
# to). The client always speaks OpenAI chat completions; `anthropic` is translated to the
# Messages API and back, `openAI` is the untranslated baseline through the same router.
LLM_ROUTES = {
    "llm-openai": ("openAI", "gpt-4o-mini-2024-07-18"),
    "llm-anthropic": ("anthropic", "claude-3-5-haiku-20241022"),
}
LLM_MODEL = "gpt-4o-mini"  # the bench body's `model`: the name the `llm:` router matches
LLM_API_KEY = "sk-bench-provider-key"  # the provider key the gateway holds (the mock wants one)


@dataclass(frozen=True)
class Tools:
    wrk: str | None
    nginx: str | None
    openssl: str | None
    taskset: str | None

    @classmethod
    def detect(cls) -> Tools:
        return cls(find_tool("wrk"), find_tool("nginx"), find_tool("openssl"), find_tool("taskset"))

    def missing(self) -> list[str]:
        """Human lines naming each missing tool and the Debian package that provides it."""
        lines = []
        if self.wrk is None:
            lines.append("wrk (Debian package `wrk`): every load scenario needs it")
        if self.nginx is None:
            lines.append(
                "nginx (Debian package `nginx-light`): the nginx reference and upstream are "
                "skipped; the mock LLM stands in as origin"
            )
        if self.openssl is None:
            lines.append("openssl (Debian package `openssl`): the TLS upstream is skipped")
        return lines


@dataclass
class Target:
    """One thing to send load to. `procs` are the processes whose CPU counts as 'proxy'."""

    name: str
    kind: str  # "direct" | "nginx" | "agw" | "peer"
    description: str
    port: int = 0
    procs: list[Proc] = field(default_factory=list)
    error: str | None = None
    workers: int = 1
    scheme: str = "http"  # "https": the proxy terminates client TLS
    # Request fields this target needs in place of (or beside) the bench's defaults, e.g. a
    # JWT in `Authorization`; wrk scripts and warm-up requests carry them.
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc in self.procs]

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"


def agw_config(
    port: int,
    upstream_port: int,
    *,
    route: str = "plain",
    tls: bool = False,
    listener_cert: tuple[Path, Path] | None = None,
    policies: dict[str, object] | None = None,
) -> dict[str, object]:
    """The gateway config: a plain host route or an OpenAI AI route (model rewrite on);
    with `listener_cert` (cert, key) the listener serves HTTPS; `policies` go on the route."""
    upstream = f"127.0.0.1:{upstream_port}"
    backend: dict[str, object]
    if route == "ai":
        backend = {
            "ai": {
                "name": "bench",
                "hostOverride": upstream,
                "provider": {"openAI": {"model": "bench-model"}},
            }
        }
    else:
        backend = {"host": upstream}
    route_doc: dict[str, object] = {"backends": [backend]}
    route_policies: dict[str, object] = dict(policies or {})
    listener: dict[str, object] = {"routes": [route_doc]}
    if listener_cert is not None:
        listener["protocol"] = "HTTPS"
        listener["tls"] = {"cert": str(listener_cert[0]), "key": str(listener_cert[1])}
    if tls:
        # Verification is skipped: with kept-alive upstream connections it only costs at
        # handshake time, and the bench cert is self-signed.
        route_policies["backendTLS"] = {"insecure": True}
    if route_policies:
        route_doc["policies"] = route_policies
    return {
        "config": {
            "statsAddr": "off",
            "adminAddr": "off",
            "readinessAddr": "off",
            "logging": {"level": "warn"},
        },
        "binds": [{"port": port, "listeners": [listener]}],
    }


def llm_config(port: int, upstream_port: int, route: str) -> dict[str, object]:
    """The model-centric `llm:` form: one model named like the bench body's `model`, served
    by `LLM_ROUTES[route]`'s provider at the mock LLM (`params.baseUrl`, plain HTTP)."""
    provider, model = LLM_ROUTES[route]
    params = {
        "model": model,
        "apiKey": LLM_API_KEY,
        "baseUrl": f"http://127.0.0.1:{upstream_port}/v1",
    }
    return {
        "config": {
            "statsAddr": "off",
            "adminAddr": "off",
            "readinessAddr": "off",
            "logging": {"level": "warn"},
        },
        "llm": {
            "port": port,
            "models": [{"name": LLM_MODEL, "provider": provider, "params": params}],
        },
    }


class Stack:
    """Starts servers lazily, caches them by role, stops everything on `close()`."""

    def __init__(
        self,
        work: Path,
        repo: Path,
        tools: Tools,
        *,
        agw_cmd: list[str] | None = None,
        pin: bool = False,
        log: Callable[[str], None] = print,
    ) -> None:
        self.work = work
        self.repo = repo
        self.tools = tools
        self.pin = pin and (os.cpu_count() or 1) >= 2
        self.log = log
        self.agw_cmd = agw_cmd or default_agw_cmd(repo)
        self.python = sys.executable
        self._targets: dict[str, Target] = {}
        self._upstream_procs: list[Proc] = []
        self.upstream_tls_port: int | None = None
        self.notes: dict[str, str] = {}
        self.only: list[str] | None = None  # fnmatch patterns from --targets
        self._policy_route: PolicyRoute | PolicyUnavailable | None = None
        work.mkdir(parents=True, exist_ok=True)

    def allowed(self, name: str) -> bool:
        if self.only is None or name.startswith("direct"):
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.only)

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        for target in list(self._targets.values()):
            self.stop(target)
        for proc in self._upstream_procs:
            proc.stop()
        self._upstream_procs.clear()

    def stop(self, target: Target) -> None:
        for proc in target.procs:
            proc.stop()
        self._targets.pop(target.name, None)

    def stop_proxies(self) -> None:
        for target in list(self._targets.values()):
            if target.kind != "direct":
                self.stop(target)

    @property
    def upstream_pids(self) -> list[int]:
        return [proc.pid for proc in self._upstream_procs if proc.returncode() is None]

    def _proc(
        self, name: str, argv: list[str], *, cpu: int | None, env: dict[str, str] | None = None
    ) -> Proc:
        return Proc(
            name,
            argv,
            self.work / "logs" / f"{name}.log",
            cwd=self.repo,
            env=env,
            cpu=cpu if self.pin else None,
        )

    def cached(self, name: str, build: Callable[[], Target]) -> Target:
        """The running target `name`, started by `build()` the first time."""
        if name not in self._targets:
            if not self.allowed(name):
                return Target(name, "skipped", "skipped", error="skipped (--targets)")
            target = build()
            self._targets[name] = target
            if target.error:
                self.log(f"  ! {name}: {target.error}")
        return self._targets[name]

    # -- upstreams ------------------------------------------------------------------------
    def upstream(self) -> Target:
        """`direct`: the origin itself (nginx `return 200`, else the mock LLM)."""
        return self.cached("direct", self._start_upstream)

    def _start_upstream(self) -> Target:
        port = free_port()
        if self.tools.nginx is None:
            # The reply the nginx upstream would give, near enough (the mock's own JSON, ~350 B).
            return self._mock_upstream(
                "direct", port, "agw_fast mock-llm upstream (no nginx)",
                "--model", "gpt-4o-mini-2024-07-18", "--content", "Reuse skips TCP+TLS handshake",
            )
        cert = None
        if self.tools.openssl is not None:
            try:
                cert = make_cert(self.work)
                self.upstream_tls_port = free_port()
            except (OSError, RuntimeError) as exc:
                self.notes["tls"] = f"certificate generation failed: {exc}"
        conf = upstream_conf(self.work, port=port, tls_port=self.upstream_tls_port, cert=cert)
        proc = self._proc(
            "upstream-nginx",
            nginx_argv(self.tools.nginx, self.work, conf, "upstream"),
            cpu=CPU_LOAD,
        )
        try:
            proc.start().wait_ready(port)
            if self.upstream_tls_port is not None:
                proc.wait_ready(self.upstream_tls_port)
        except ProcStartError as exc:
            return Target("direct", "direct", "nginx upstream", error=str(exc))
        self._upstream_procs.append(proc)
        # `direct` has no proxy: its procs stay empty, the upstream CPU is recorded apart.
        return Target("direct", "direct", "nginx `return 200` upstream (1 worker)", port)

    def _mock_upstream(self, name: str, port: int, description: str, *flags: str) -> Target:
        """The project's mock LLM (`python -m agw_fast mock-llm`): one upstream for the tests
        and the bench."""
        argv = [
            self.python, "-m", "agw_fast", "mock-llm", "--host", "127.0.0.1", "--port", str(port),
            *flags,
        ]
        proc = self._proc(f"{name}-mock-llm", argv, cpu=CPU_LOAD)
        try:
            proc.start().wait_ready(port, timeout=10 * SECONDS)
        except ProcStartError as exc:
            return Target(name, "direct", description, error=str(exc))
        self._upstream_procs.append(proc)
        return Target(name, "direct", description, port)

    def sse_upstream(self, chunks: int, delay: float) -> Target:
        """`direct-sse-N`: the project's mock LLM streaming N events, `delay` s apart."""
        name = f"direct-sse-{chunks}"
        self.notes["sse_upstream"] = "agw_fast mock-llm"
        flags = ["--chunks", str(chunks), "--chunk-delay", f"{delay:g}"]
        return self.cached(
            name,
            lambda: self._mock_upstream(
                name, free_port(), f"agw_fast mock-llm ({chunks} events)", *flags
            ),
        )

    # -- proxies --------------------------------------------------------------------------
    def nginx_proxy(
        self,
        name: str,
        upstream_port: int,
        *,
        tls: bool = False,
        connections: int = 16384,
        https: bool = False,
    ) -> Target:
        return self.cached(
            name, lambda: self._start_nginx(name, upstream_port, tls, connections, https)
        )

    def _start_nginx(
        self, name: str, upstream_port: int, tls: bool, connections: int, https: bool = False
    ) -> Target:
        desc = "nginx reverse proxy (1 worker, keepalive 128, proxy_buffering off)"
        desc += ", terminating client TLS" if https else ""
        if self.tools.nginx is None:
            return Target(
                name, "nginx", desc, error="nginx is not installed (apt-get install nginx-light)"
            )
        port = free_port()
        conf = proxy_conf(
            self.work,
            name,
            port=port,
            upstream_port=upstream_port,
            tls=tls,
            connections=connections,
            listen_cert=make_cert(self.work) if https else None,
        )
        proc = self._proc(name, nginx_argv(self.tools.nginx, self.work, conf, name), cpu=CPU_PROXY)
        try:
            proc.start().wait_ready(port)
        except ProcStartError as exc:
            return Target(name, "nginx", desc, error=str(exc))
        return Target(name, "nginx", desc, port, [proc], scheme="https" if https else "http")

    def agw(
        self,
        name: str,
        upstream_port: int,
        *,
        workers: int = 1,
        route: str = "plain",
        tls: bool = False,
        listen_mode: str | None = None,
        https: bool = False,
    ) -> Target:
        return self.cached(
            name,
            lambda: self._start_agw(name, upstream_port, workers, route, tls, listen_mode, https),
        )

    def _start_agw(
        self,
        name: str,
        upstream_port: int,
        workers: int,
        route: str,
        tls: bool,
        listen_mode: str | None,
        https: bool = False,
    ) -> Target:
        desc = f"agw-fast, {workers} worker(s), {route} route" + (", TLS upstream" if tls else "")
        if route in LLM_ROUTES:
            provider, model = LLM_ROUTES[route]
            desc = f"agw-fast, {workers} worker(s), `llm:` model, provider {provider} ({model})"
            if provider != "openAI":
                desc += ", OpenAI chat completions translated"
        desc += ", HTTPS listener" if https else ""
        policies: PolicyRoute | None = None
        if route == "policies":
            try:
                policies = self.policy_route()
            except PolicyUnavailable as exc:
                return self._skip(name, desc, str(exc))
            desc = f"agw-fast, {workers} worker(s), plain route + {policies.summary}"
        listener_cert = make_cert(self.work) if https else None
        if listen_mode:
            desc += f", --listen-mode {listen_mode}"
        port = free_port()
        config = self.work / f"{name}.yaml"
        doc = (
            llm_config(port, upstream_port, route)
            if route in LLM_ROUTES
            else agw_config(
                port,
                upstream_port,
                route="plain" if policies else route,
                tls=tls,
                listener_cert=listener_cert,
                policies=policies.policies if policies else None,
            )
        )
        config.write_text(json.dumps(doc, indent=2))  # JSON is YAML: no YAML writer needed
        # Loopback only, like every other bench server (the default is all interfaces).
        argv = [*self.agw_cmd, "-f", str(config), "--workers", str(workers)]
        argv += ["--bind-address", "127.0.0.1"]
        if listen_mode:
            argv += ["--listen-mode", listen_mode]
        proc = self._proc(name, argv, cpu=CPU_PROXY)
        try:
            proc.start().wait_ready(port)
        except ProcStartError as exc:
            error = str(exc).replace(name, "agw-fast", 1)
            hint = _INSTALL_HINT.search(error)
            if policies is not None and hint:
                # agw-fast refused the route for a missing optional extra: a user's venv
                # without it still benches everything else.
                return self._skip(name, desc, f"agw-fast needs an extra: {hint.group(0)}")
            return Target(name, "agw", desc, error=error, workers=workers)
        self._wait_workers(proc, port, workers, listen_mode)
        scheme = "https" if https else "http"
        headers = dict(policies.headers) if policies else {}
        return Target(
            name, "agw", desc, port, [proc], workers=workers, scheme=scheme, headers=headers
        )

    def agw_doc(
        self,
        name: str,
        doc: Callable[[int], dict[str, object]],
        description: str,
        *,
        headers: dict[str, str] | None = None,
    ) -> Target:
        """agw-fast, 1 worker, on the config `doc(port)` (a scenario's own routes); refused
        for a missing optional extra, it is a skipped target, as `agw-policies` is."""
        return self.cached(
            name, lambda: self._start_agw_doc(name, doc, description, dict(headers or {}))
        )

    def _start_agw_doc(
        self,
        name: str,
        doc: Callable[[int], dict[str, object]],
        description: str,
        headers: dict[str, str],
    ) -> Target:
        port = free_port()
        config = self.work / f"{name}.yaml"
        config.write_text(json.dumps(doc(port), indent=2))
        argv = [*self.agw_cmd, "-f", str(config), "--workers", "1"]
        proc = self._proc(name, [*argv, "--bind-address", "127.0.0.1"], cpu=CPU_PROXY)
        try:
            proc.start().wait_ready(port)
        except ProcStartError as exc:
            error = str(exc).replace(name, "agw-fast", 1)
            hint = _INSTALL_HINT.search(error)
            if hint:
                return self._skip(name, description, f"agw-fast needs an extra: {hint.group(0)}")
            return Target(name, "agw", description, error=error)
        self._wait_workers(proc, port, 1, None)
        return Target(name, "agw", description, port, [proc], headers=headers)

    def policy_route(self) -> PolicyRoute:
        """One key and token for the whole run (RSA key generation takes ~0.1 s)."""
        if self._policy_route is None:
            try:
                self._policy_route = policy_route()
            except PolicyUnavailable as exc:
                self._policy_route = exc
        if isinstance(self._policy_route, PolicyUnavailable):
            raise self._policy_route
        return self._policy_route

    def _skip(self, name: str, description: str, why: str) -> Target:
        """A target that cannot run in this environment: noted, not counted as a failure."""
        self.notes[name] = f"skipped: {why}"
        return Target(name, "skipped", description, error=f"skipped: {why}")

    @staticmethod
    def _wait_workers(proc: Proc, port: int, workers: int, listen_mode: str | None) -> None:
        """Port open is not enough with N workers: wait until all of them can accept."""
        deadline = time.monotonic() + 10 * SECONDS
        while time.monotonic() < deadline:
            leaves = len(leaf_pids(proc.pid))
            listeners = listen_socket_count(port)
            if leaves >= workers and (listen_mode != "reuseport" or listeners >= workers):
                break
            time.sleep(0.05)
        time.sleep(0.2)


def default_agw_cmd(repo: Path) -> list[str]:
    """`.venv/bin/agw-fast` when installed, else `python -m agw_fast` from the repo root."""
    env_cmd = os.environ.get("AGW_FAST_CMD")
    if env_cmd:
        return shlex.split(env_cmd)
    script = Path(sys.executable).parent / "agw-fast"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "agw_fast"]
