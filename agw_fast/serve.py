"""`serve()`: run the gateway for a loaded config until SIGTERM. The CLI and the demo call it.

Hot reload lives here too (`_Gateway`): the supervisor watches the config file (and takes
SIGHUP), loads and compiles each new version itself, and hands a good one to every child; see
`agw_fast.server.reload` for the channel and the shared state, and the README's "Operating
it" for what an operator sees.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import os
import re
import signal
import socket
import sys
from pathlib import Path
from typing import Literal

from agw_fast.config.limits import SharedLimitsConfig
from agw_fast.config.load import load_config_file
from agw_fast.config.model import Config
from agw_fast.errors import ConfigError
from agw_fast.log import apply_log_directive, configure_logging, logger
from agw_fast.plan import RuntimeBind, compile_config
from agw_fast.policies.localratelimit import bucket_files
from agw_fast.policies.shared_limits import Limiter
from agw_fast.server.admin import admin_child
from agw_fast.server.jwks import load_remote_key_sets
from agw_fast.server.reload import (
    POLL_INTERVAL,
    FileWatch,
    ReloadState,
    channel_pair,
    encode_config,
    send_update,
)
from agw_fast.server.sockets import default_bind_address, open_listen_sockets
from agw_fast.server.supervisor import ChildSpec, StopFlag, Supervisor
from agw_fast.server.worker import SharedLimits, WorkerControl, run_worker
from agw_fast.telemetry.shared_slots import SharedSlots
from agw_fast.telemetry.store_status import StoreStatus

__all__ = ["ListenMode", "serve"]

ListenMode = Literal["reuseport", "shared"]


def serve(
    config: Config,
    *,
    workers: int = 1,
    listen_mode: ListenMode = "reuseport",
    bind_address: str | None = None,
    config_path: Path | None = None,
    limits: SharedLimitsConfig | None = None,
) -> int:
    """Bind every port of `config`, fork the workers and the stats/admin process, and run
    until SIGTERM/SIGINT; returns the process exit code (1 if the config does not compile or
    a port cannot be bound, with one line on stderr).

    Listen modes: `reuseport` gives each worker its own SO_REUSEPORT socket, so the kernel
    spreads connections evenly (measured here: 50/50 between two workers, where one shared
    socket gave splits up to 100/0, because the busiest worker keeps winning accept);
    `shared` is one socket all workers accept from.

    With `config_path` (the file `config` was loaded from) the file is watched and reloaded
    on change or SIGHUP. `limits` (the `--limits` file): buckets counted in Redis, shared with
    other instances.
    """
    try:
        with bucket_files() as buckets:
            runtime = compile_config(config)  # TLS files, regexes: everything that can fail
        limiter = None if limits is None else attach_shared_limits(runtime, config, limits)
        load_remote_key_sets()  # jwtAuth JWKS URLs, fetched once before the workers fork
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    configure_logging(config.static.logging.level)
    if not runtime:
        logger.warning("the config has no binds: nothing to serve")
    gateway = _Gateway(
        config, workers, listen_mode == "reuseport", bind_address or default_bind_address(),
        config_path, limits,
    )
    gateway.limiter = limiter
    try:
        for bind in runtime:
            gateway.listen(bind.port)
    except OSError as error:
        gateway.close_sockets()
        print(f"agw-fast: cannot listen: {error.strerror or error}", file=sys.stderr)
        return 1
    gateway.runtime, gateway.buckets = runtime, buckets
    gateway.configured = [bind.port for bind in config.binds]
    return gateway.run()


class _Gateway:
    """The supervisor's view of what it serves: the config and its compiled binds, the
    listening sockets by port, the children's update channels; and the reload."""

    def __init__(
        self,
        config: Config,
        workers: int,
        reuseport: bool,
        address: str,
        path: Path | None,
        limits: SharedLimitsConfig | None = None,
    ) -> None:
        self.config = config
        # `--limits`: the shared buckets' settings, the limiter the current runtime's steps
        # use, and the store's status (on /metrics).
        self.limits = limits
        self.limiter: Limiter | None = None
        self.store_status = None if limits is None else StoreStatus(workers)
        self.workers = workers
        self.reuseport = reuseport
        self.address = address
        self.path = path
        self.runtime: list[RuntimeBind] = []
        self.buckets: list[int] = []  # the runtime's rate-limit bucket memfds, in order
        self.configured: list[int] = []  # each bind's port as written (0: any free port)
        self.ports: list[int] = []  # each bind's actual port
        self.sockets: dict[int, list[socket.socket]] = {}  # by actual port
        # Sockets of removed binds, closed once every worker serves `generation`.
        self.retiring: list[tuple[int, list[socket.socket]]] = []
        self.slots = SharedSlots(workers)
        self.stop_flag = StopFlag()
        self.state = ReloadState(workers)
        self.admin = admin_child(
            config, None if self.store_status is None else self.store_status.render
        )
        count = workers + (1 if self.admin is not None else 0)
        self.channels = [channel_pair() for _ in range(count)]
        self.watch = FileWatch(str(path)) if path is not None else None
        self.supervisor: Supervisor | None = None
        self.log_generation = 0

    # -- sockets ------------------------------------------------------------------------------

    def listen(self, port: int) -> int:
        """Open `port`'s listening sockets (one per worker, or one shared); the actual port."""
        sockets = open_listen_sockets(self.address, port, self.workers, self.reuseport)
        actual: int = sockets[0].getsockname()[1]
        self.sockets[actual] = sockets
        self.ports.append(actual)
        logger.warning(
            "listening on %s port %d (%d workers, %s)",
            self.address, actual, self.workers, "reuseport" if self.reuseport else "shared",
        )
        return actual

    def close_sockets(self) -> None:
        for sockets in self.sockets.values():
            for sock in sockets:
                sock.close()

    def _worker_socket(self, port: int, index: int) -> socket.socket:
        sockets = self.sockets[port]
        return sockets[index] if self.reuseport else sockets[0]

    # -- children -----------------------------------------------------------------------------

    def specs(self) -> list[ChildSpec]:
        """What each child runs if forked now: the current config and sockets."""
        specs = []
        generation = self.state.target
        for index in range(self.workers):
            sockets = [self._worker_socket(port, index) for port in self.ports]
            channel = self.channels[index][1]
            control = WorkerControl(channel, self.state, generation)
            main = functools.partial(
                run_worker, index, self.config, list(zip(sockets, self.runtime, strict=True)),
                self.slots, self.stop_flag, control, self._shared(),
            )
            specs.append(ChildSpec(f"worker {index}", main, (*sockets, channel)))
        if self.admin is not None:
            channel = self.channels[self.workers][1]
            main = functools.partial(self.admin, self.slots, self.state, channel)
            # Keeps no listening socket of the gateway: once the workers and the supervisor
            # close theirs, nobody is left to hold a port open with no one accepting.
            specs.append(ChildSpec("stats/admin process", main, (channel,)))
        return specs

    def _shared(self) -> SharedLimits | None:
        if self.limits is None or self.limiter is None or self.store_status is None:
            return None
        return self.limiter, self.limits, self.store_status

    def run(self) -> int:
        static = self.config.static
        self.supervisor = Supervisor(
            self.specs(),
            [sock for sockets in self.sockets.values() for sock in sockets],
            stop_window=static.connection_min_termination_deadline,
            stop_deadline=static.connection_termination_deadline,
            stop_flag=self.stop_flag,
            inherited=[sock for pair in self.channels for sock in pair],
            on_reload=lambda: self.reload("SIGHUP"),
            on_tick=self.tick,
            tick_interval=POLL_INTERVAL,
        )
        return self.supervisor.run()

    def tick(self, now: float) -> None:
        generation, directive = self.state.log_directive()
        if generation != self.log_generation:  # the admin's `/logging`: our own lines too
            self.log_generation = generation
            try:
                apply_log_directive(directive)
            except ValueError:
                pass  # the admin process checked it
        if self.watch is not None and self.watch.poll(now):
            self.reload("the config file changed")
        if self.retiring:
            self._close_retired()

    def _close_retired(self) -> None:
        """Close the supervisor's copies of removed binds' sockets once every worker has let
        go of them (taken what their queues held, and stopped listening)."""
        assert self.supervisor is not None
        serving = min(self.state.serving(i) for i in range(self.workers))
        done = [sockets for generation, sockets in self.retiring if generation <= serving]
        self.retiring = [item for item in self.retiring if item[0] > serving]
        for sockets in done:
            for sock in sockets:
                self.supervisor.listening.remove(sock)
                sock.close()

    # -- reload -------------------------------------------------------------------------------

    def reload(self, reason: str) -> None:
        if self.path is None:
            logger.warning("%s: nothing to reload (the config was given inline)", reason)
            return
        if self.watch is not None:
            self.watch.mark_loaded()
        try:
            self._reload(reason)
        except ConfigError as error:
            self.state.synchronized = False
            logger.error("config reload failed: %s; the previous config stays in use", error)
        except Exception:  # the supervisor must outlive any config
            self.state.synchronized = False
            logger.exception("config reload failed; the previous config stays in use")
        # The replaced config's rate-limit memfds and SSL contexts sit in reference cycles
        # (closures): collect them now rather than whenever allocations trigger it.
        gc.collect()

    def _reload(self, reason: str) -> None:
        assert self.path is not None and self.supervisor is not None
        config = load_config_file(self.path, os.environ)
        config = self._keep_static(config)
        with bucket_files() as buckets:
            runtime = compile_config(config)
        limiter = (
            None if self.limits is None else attach_shared_limits(runtime, config, self.limits)
        )
        load_remote_key_sets()
        ports, added = self._match_ports(config)
        config_fd = encode_config(config)
        try:
            opened = self._open(added, ports)
            removed = [port for port in self.ports if port not in ports]
            generation = self.state.target + 1
            self.state.target = generation  # readiness: not ready until every worker swapped
            self.state.synchronized = True
            for index in range(self.workers):
                sockets = {
                    port: socks[index if self.reuseport else 0] for port, socks in opened.items()
                }
                self._send(index, generation, config_fd, buckets, ports, sockets)
            if self.admin is not None:
                self._send(self.workers, generation, config_fd, [], [], {})
        finally:
            os.close(config_fd)
        self.sockets.update(opened)
        self.supervisor.listening += [sock for sockets in opened.values() for sock in sockets]
        for port in removed:
            self.retiring.append((generation, self.sockets.pop(port)))
            logger.warning("port %d closes: its bind left the config", port)
        for port in opened:
            logger.warning("listening on %s port %d (a reload added it)", self.address, port)
        self.config, self.runtime, self.buckets = config, runtime, buckets
        self.limiter = limiter
        self.configured = [bind.port for bind in config.binds]
        self.ports = ports
        self.supervisor.specs = self.specs()
        logger.warning("config reloaded (%s): generation %d", reason, generation)

    def _open(
        self, added: list[tuple[int, int]], ports: list[int]
    ) -> dict[int, list[socket.socket]]:
        """Open the ports of binds a reload adds (filling in `ports`); by actual port."""
        opened: dict[int, list[socket.socket]] = {}
        try:
            for configured, index in added:
                sockets = open_listen_sockets(
                    self.address, configured, self.workers, self.reuseport
                )
                actual: int = sockets[0].getsockname()[1]
                opened[actual] = sockets
                ports[index] = actual
        except OSError as error:
            for sockets in opened.values():
                for sock in sockets:
                    sock.close()
            raise ConfigError("binds", f"cannot listen: {error.strerror or error}") from None
        return opened

    def _send(
        self,
        index: int,
        generation: int,
        config_fd: int,
        buckets: list[int],
        ports: list[int],
        sockets: dict[int, socket.socket],
    ) -> None:
        try:
            send_update(self.channels[index][0], generation, config_fd, buckets, ports, sockets)
        except OSError as error:
            # Its channel is full: the child stopped reading. Replace it; the replacement
            # starts with this config.
            assert self.supervisor is not None
            logger.error("child %d took no config update (%s): replacing it", index, error)
            for pid, (spec, _) in self.supervisor.children.items():
                if spec == index:
                    os.kill(pid, signal.SIGTERM)

    def _match_ports(self, config: Config) -> tuple[list[int], list[tuple[int, int]]]:
        """Each new bind's actual port (0 for one to open) and the (port as written, index)
        of those to open. A written port is the same bind as before; port-0 binds are
        matched in order."""
        free = [actual for written, actual in zip(self.configured, self.ports, strict=True)
                if written == 0]  # fmt: skip
        ports: list[int] = []
        added: list[tuple[int, int]] = []
        for index, bind in enumerate(config.binds):
            if bind.port == 0 and free:
                ports.append(free.pop(0))
            elif bind.port != 0 and bind.port in self.sockets:
                ports.append(bind.port)
            else:
                ports.append(0)
                added.append((bind.port, index))
        return ports, added

    def _keep_static(self, config: Config) -> Config:
        """`config:` is read at start-up only, as agentgateway reads it: a changed setting is
        reported and the running value kept. Except `modelCatalog`, which agentgateway
        re-reads: each reload prices calls with the catalog it just read."""
        old = dataclasses.replace(self.config.static, model_catalog=None)
        new = dataclasses.replace(config.static, model_catalog=None)
        if new == old:
            return config
        for item in dataclasses.fields(old):
            if getattr(old, item.name) != getattr(new, item.name):
                logger.warning(
                    "config.%s changed: it takes effect at restart only; the running value "
                    "stays in use", _camel(item.name),
                )
        kept = dataclasses.replace(self.config.static, model_catalog=config.static.model_catalog)
        return dataclasses.replace(config, static=kept)


def attach_shared_limits(
    runtime: list[RuntimeBind], config: Config, limits: SharedLimitsConfig
) -> Limiter:
    """The `--limits` steps on `runtime`'s routes (imported here: it needs the `redis`
    extra, which a gateway without `--limits` never loads)."""
    from agw_fast.server.shared_store import attach

    return attach(runtime, config, limits)


def _camel(name: str) -> str:
    return re.sub(r"_(\w)", lambda m: m.group(1).upper(), name)
