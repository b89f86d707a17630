"""`serve()`: run the gateway for a loaded config until SIGTERM. The CLI and the demo call it."""

from __future__ import annotations

import functools
import socket
import sys
from typing import Literal

from agw_fast.config.limits import SharedLimitsConfig
from agw_fast.config.model import Config
from agw_fast.errors import ConfigError
from agw_fast.log import configure_logging, logger
from agw_fast.plan import compile_config
from agw_fast.server.admin import admin_child
from agw_fast.server.jwks import load_remote_key_sets
from agw_fast.server.sockets import default_bind_address, open_listen_sockets
from agw_fast.server.supervisor import ChildSpec, StopFlag, Supervisor
from agw_fast.server.worker import run_worker
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
    limits: SharedLimitsConfig | None = None,
) -> int:
    """Bind every port of `config`, fork the workers and the stats/admin process, and run
    until SIGTERM/SIGINT; returns the process exit code (1 if the config does not compile or
    a port cannot be bound, with one line on stderr).

    Listen modes: `reuseport` gives each worker its own SO_REUSEPORT socket, so the kernel
    spreads connections evenly (measured here: 50/50 between two workers, where one shared
    socket gave splits up to 100/0, because the busiest worker keeps winning accept);
    `shared` is one socket all workers accept from.

    `limits` (the `--limits` file): buckets counted in Redis, shared with other instances.
    """
    shared = None
    try:
        runtime = compile_config(config)  # TLS files, regexes: everything that can fail
        if limits is not None:
            from agw_fast.server.shared_store import attach

            shared = (attach(runtime, config, limits), limits, StoreStatus(workers))
        load_remote_key_sets()  # jwtAuth JWKS URLs, fetched once before the workers fork
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    configure_logging(config.static.logging.level)
    if not runtime:
        logger.warning("the config has no binds: nothing to serve")
    address = bind_address or default_bind_address()
    reuseport = listen_mode == "reuseport"
    per_bind: list[list[socket.socket]] = []
    try:
        for bind in runtime:
            sockets = open_listen_sockets(address, bind.port, workers, reuseport)
            per_bind.append(sockets)
            logger.warning(
                "listening on %s port %d (%d workers, %s)",
                address, sockets[0].getsockname()[1], workers, listen_mode,
            )
    except OSError as error:
        for sockets in per_bind:
            for sock in sockets:
                sock.close()
        print(f"agw-fast: cannot listen: {error.strerror or error}", file=sys.stderr)
        return 1
    slots = SharedSlots(workers)
    stop_flag = StopFlag()
    children = []
    for index in range(workers):
        binds = [
            (sockets[index] if reuseport else sockets[0], bind)
            for sockets, bind in zip(per_bind, runtime, strict=True)
        ]
        main = functools.partial(
            run_worker, index, config, binds, slots, stop_flag, shared
        )
        children.append(ChildSpec(f"worker {index}", main, tuple(sock for sock, _ in binds)))
    admin = admin_child(config, None if shared is None else shared[2].render)
    if admin is not None:
        # Keeps no listening socket of the gateway: once the workers and the supervisor
        # close theirs, nobody is left to hold a port open with no one accepting.
        children.append(ChildSpec("stats/admin process", functools.partial(admin, slots)))
    static = config.static
    supervisor = Supervisor(
        children,
        [sock for sockets in per_bind for sock in sockets],
        stop_window=static.connection_min_termination_deadline,
        stop_deadline=static.connection_termination_deadline,
        stop_flag=stop_flag,
    )
    return supervisor.run()
