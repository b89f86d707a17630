"""The parent process: binds every port once, forks the workers, replaces the ones that die.

The parent never runs an event loop: forking from a process with a live loop would hand its
epoll state to the children. It blocks the signals it cares about and takes them one at a
time with `sigtimedwait`, dispatching to `handle_<signal>()` (uvicorn's supervisor shape).

Listen modes: `reuseport` gives each worker its own SO_REUSEPORT socket, so the kernel
spreads connections evenly (measured here: 50/50 between two workers, where one shared
socket gave splits up to 100/0, because the busiest worker keeps winning accept). The parent
keeps every socket open, so connections that arrive for a dead worker wait in its socket's
backlog for the replacement instead of being reset.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from agw_fast.config.model import Config
from agw_fast.core.plan import RuntimeBind, compile_config
from agw_fast.log import logger
from agw_fast.server.sockets import default_bind_address, open_listen_socket
from agw_fast.telemetry.shared_slots import SharedSlots

__all__ = ["ListenMode", "Supervisor"]

ListenMode = str  # "reuseport" | "shared"
RESPAWN_DELAY = 1.0  # a worker that dies within this of starting waits this long to return
_HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT)


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this worker if the supervisor dies (no orphaned workers)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


@dataclass
class _Child:
    index: int
    started: float


class Supervisor:
    def __init__(
        self,
        config: Config,
        workers: int,
        *,
        listen_mode: ListenMode = "reuseport",
        bind_address: str | None = None,
        extra_children: list[Callable[[SharedSlots], int]] | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.listen_mode = listen_mode
        self.bind_address = bind_address or default_bind_address()
        self.runtime = compile_config(config)
        self.extra_children = extra_children or []
        self.slots = SharedSlots(workers)
        self.sockets: list[list[socket.socket]] = []  # per bind: one, or one per worker
        self.children: dict[int, _Child] = {}  # pid -> child
        self.respawn_at: dict[int, float] = {}  # index -> monotonic time
        self.stopping = False

    # -- setup --------------------------------------------------------------------------------

    def open_sockets(self) -> None:
        reuseport = self.listen_mode == "reuseport"
        per_bind = self.workers if reuseport else 1
        for bind in self.runtime:
            first = open_listen_socket(self.bind_address, bind.port, reuseport)
            # Port 0 picks a free port once; every worker's socket then shares that port.
            port = first.getsockname()[1]
            socks = [first]
            socks += [
                open_listen_socket(self.bind_address, port, reuseport) for _ in range(per_bind - 1)
            ]
            self.sockets.append(socks)
            logger.warning(
                "listening on %s port %d (%d workers, %s)",
                self.bind_address, port, self.workers, self.listen_mode,
            )

    def _worker_binds(self, index: int) -> list[tuple[socket.socket, RuntimeBind]]:
        return [
            (socks[index] if len(socks) > 1 else socks[0], bind)
            for socks, bind in zip(self.sockets, self.runtime, strict=True)
        ]

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for signum in _HANDLED:
                    signal.signal(signum, signal.SIG_DFL)
                _die_with_parent()
                code = self._child_main(index)
            except KeyboardInterrupt:
                code = 0
            except BaseException:
                logger.exception("worker %d crashed", index)
            finally:
                os._exit(code)
        self.children[pid] = _Child(index, time.monotonic())

    def _child_main(self, index: int) -> int:
        if index >= self.workers:
            return self.extra_children[index - self.workers](self.slots)
        from agw_fast.server.worker import run_worker

        mine = self._worker_binds(index)
        keep = {id(sock) for sock, _ in mine}
        for socks in self.sockets:
            for sock in socks:
                if id(sock) not in keep:
                    sock.close()
        return run_worker(index, self.config, mine, self.slots)

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        _raise_fd_limit()
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        if not self.sockets:
            self.open_sockets()
        for index in range(self.workers + len(self.extra_children)):
            self._spawn(index)
        deadline: float | None = None
        while True:
            timeout = 1.0
            if self.respawn_at:
                timeout = max(0.01, min(self.respawn_at.values()) - time.monotonic())
            info = signal.sigtimedwait(_HANDLED, timeout)
            if info is not None:
                handler = getattr(self, f"handle_{signal.Signals(info.si_signo).name.lower()}")
                handler()
            if self.stopping:
                if deadline is None:
                    grace = self.config.static.connection_termination_deadline
                    deadline = time.monotonic() + grace + 1.0
                if not self.children:
                    return 0
                if time.monotonic() > deadline:
                    for pid in list(self.children):
                        _kill(pid, signal.SIGKILL)
                    deadline = time.monotonic() + 5.0
                continue
            now = time.monotonic()
            for index, when in list(self.respawn_at.items()):
                if when <= now:
                    del self.respawn_at[index]
                    self._spawn(index)

    def handle_sigchld(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None or self.stopping:
                continue
            logger.warning(
                "worker %d (pid %d) exited with %s; replacing it",
                child.index, pid, _describe_status(status),
            )
            quick_death = time.monotonic() - child.started < RESPAWN_DELAY
            self.respawn_at[child.index] = time.monotonic() + (RESPAWN_DELAY if quick_death else 0)

    def handle_sigterm(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        logger.info("stopping: draining %d workers", len(self.children))
        for pid in self.children:
            _kill(pid, signal.SIGTERM)

    handle_sigint = handle_sigterm


def _raise_fd_limit() -> None:
    """Each proxied request holds two sockets: allow as many as the hard limit permits."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            logger.warning("could not raise the open-file limit from %d to %d", soft, hard)


def _kill(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {signal.Signals(os.WTERMSIG(status)).name}"
    return f"code {os.WEXITSTATUS(status)}"
