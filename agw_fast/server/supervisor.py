"""The pre-fork parent: forks the children, replaces the ones that die, stops them on SIGTERM.

Used by the gateway (`agw_fast.serve`: N workers plus the stats/admin process) and by the
mock LLM's `--workers`; what a child runs is the caller's business.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import resource
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agw_fast.log import logger

__all__ = ["ChildSpec", "StopFlag", "Supervisor"]

RESPAWN_DELAY = 1.0  # a child that dies within this of starting waits this long to return
KILL_SLACK = 1.0  # after the stop deadline, children get this long before SIGKILL
_HANDLED = (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class StopFlag:
    """Whether the whole gateway is stopping: one byte of memory the supervisor shares with
    its children, set before it tells them to stop.

    A child told to stop (SIGTERM) by anyone else, `kill -TERM <pid>` say, finds it unset:
    only that child is stopping, and it must leave the sockets it shares as they are.
    """

    def __init__(self) -> None:
        self.memory = mmap.mmap(-1, 1)  # anonymous and shared: the children see the writes

    def set(self) -> None:
        self.memory[0] = 1

    def is_set(self) -> bool:
        return self.memory[0] == 1


@dataclass(frozen=True)
class ChildSpec:
    """One child process: `main()` runs in it and returns its exit code.

    `keeps` are the listening sockets it serves; the child closes every other socket the
    supervisor holds right after the fork, so only the parent and the children that serve a
    socket keep it open.
    """

    name: str
    main: Callable[[], int]
    keeps: tuple[socket.socket, ...] = ()


class Supervisor:
    """Runs `children` as forked processes until SIGTERM or SIGINT, then stops them.

    The lifecycle of the gateway's processes, told once here:

    * start: the caller binds and listens on every socket before `run()`, so connections
      queue in the kernel from the first moment and port 0 resolves once for everyone. `run()`
      raises the open-file limit to the hard limit and forks one process per `ChildSpec`;
      each child closes the listening sockets it does not serve. A gateway worker publishes
      its metrics slot (readiness turns green once all have) and serves its sockets.
    * respawn: a child that exits while the supervisor runs is forked again (after
      `RESPAWN_DELAY` if it died young). The parent keeps every listening socket open, so
      connections that arrive for a dead worker wait in the backlog for its replacement.
    * drain: on SIGTERM/SIGINT the parent sets `stop_flag` and sends SIGTERM to every
      child. A worker closes its idle client connections; busy ones get their response with
      `connection: close`, then close. For `stop_window` seconds
      (`connectionMinTerminationDeadline`, default 0) the workers keep accepting, and answer
      new connections the same way. Then each worker takes what the kernel has queued and
      shuts its listening sockets down, and the parent closes its copies: a later connection
      is refused, never accepted with nobody to answer it (`Listener.close` in
      agw_fast.server.listener has the order of those steps).
    * one worker stopped on its own (SIGTERM to its pid; `stop_flag` unset) drains the same
      way, but at the end of its window only closes its descriptors: the port stays open for
      the other workers, and its socket (reuseport mode) stays queued in the parent for the
      replacement, forked once the worker exits.
    * reload (the gateway's `on_tick` file watch, or SIGHUP through `on_reload`): the
      caller (`agw_fast.serve`) compiles the new config here, sends it to the children, and
      replaces `specs`/`listening` so that a child forked from then on starts with it.
      The supervisor itself only dispatches; see `agw_fast.server.reload`.
    * stop: requests in flight get `stop_deadline` more seconds
      (`connectionTerminationDeadline`); a worker then cuts what is left, flushes its access
      log and publishes its metrics once more, and exits 0. Children still alive
      `KILL_SLACK` after that are killed; `run()` returns 0 once every child has exited.

    The parent never runs an event loop (forking from a process with a live loop would hand
    its epoll state to the children). It blocks the signals it handles and takes them one at
    a time with `sigtimedwait`, dispatching to `handle_<signal>()` (uvicorn's shape).
    """

    def __init__(
        self,
        children: Sequence[ChildSpec],
        listening: Sequence[socket.socket],
        *,
        stop_window: float = 0.0,
        stop_deadline: float = 5.0,
        stop_flag: StopFlag | None = None,
        inherited: Sequence[socket.socket] = (),
        on_reload: Callable[[], None] | None = None,
        on_tick: Callable[[float], None] | None = None,
        tick_interval: float = 1.0,
    ) -> None:
        # `specs`, `listening` and `inherited` may be changed between signals (a reload
        # does): a child forked later runs what they say then.
        self.specs = list(children)
        # Sockets only some children use (their update channels): closed in every child
        # that does not keep them, never by the stop.
        self.inherited = list(inherited)
        self.on_reload = on_reload  # SIGHUP
        self.on_tick = on_tick  # called with the monotonic time at least every tick_interval
        self.tick_interval = tick_interval
        self.stop_flag = stop_flag
        self.listening = list(listening)
        self.stop_window = stop_window
        self.stop_deadline = stop_deadline
        self.children: dict[int, tuple[int, float]] = {}  # pid -> (spec index, started)
        self.respawn_at: dict[int, float] = {}  # spec index -> monotonic time
        self.stopping = False
        self.close_listening_at: float | None = None
        self.kill_at: float | None = None

    # -- children -----------------------------------------------------------------------------

    def _spawn(self, index: int) -> None:
        spec = self.specs[index]
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                signal.pthread_sigmask(signal.SIG_SETMASK, [])
                for signum in _HANDLED:
                    signal.signal(signum, signal.SIG_DFL)
                # Reloading is the supervisor's business; a hangup of the terminal (SIGHUP
                # to the process group) must not kill the children.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                _die_with_parent()
                keep = {sock.fileno() for sock in spec.keeps}
                for sock in [*self.listening, *self.inherited]:
                    if sock.fileno() not in keep:
                        sock.close()
                code = spec.main()
            except KeyboardInterrupt:
                code = 0
            except BaseException:
                logger.exception("%s crashed", spec.name)
            finally:
                # os._exit skips the interpreter's cleanup, buffered output included.
                for stream in (sys.stdout, sys.stderr):
                    with contextlib.suppress(Exception):
                        stream.flush()
                os._exit(code)
        self.children[pid] = (index, time.monotonic())

    # -- main loop ------------------------------------------------------------------------------

    def run(self) -> int:
        _raise_fd_limit()
        signal.pthread_sigmask(signal.SIG_BLOCK, _HANDLED)
        for index in range(len(self.specs)):
            self._spawn(index)
        while True:
            info = signal.sigtimedwait(_HANDLED, self._next_wakeup())
            if info is not None:
                handler = getattr(self, f"handle_{signal.Signals(info.si_signo).name.lower()}")
                handler()
            now = time.monotonic()
            if not self.stopping:
                if self.on_tick is not None:
                    self.on_tick(now)
                for index, when in list(self.respawn_at.items()):
                    if when <= now:
                        del self.respawn_at[index]
                        self._spawn(index)
                continue
            if self.close_listening_at is not None and (
                now >= self.close_listening_at or not self.children
            ):
                self.close_listening()
            if not self.children:
                return 0
            if self.kill_at is not None and now >= self.kill_at:
                for pid in list(self.children):
                    _kill(pid, signal.SIGKILL)
                self.kill_at = None  # SIGCHLD reaps them

    def _next_wakeup(self) -> float:
        events = list(self.respawn_at.values()) if not self.stopping else []
        events += [t for t in (self.close_listening_at, self.kill_at) if t is not None]
        longest = 1.0 if self.on_tick is None or self.stopping else self.tick_interval
        if not events:
            return longest
        return min(longest, max(0.001, min(events) - time.monotonic()))

    def close_listening(self) -> None:
        """Drop the parent's copies of the listening sockets (the workers drop theirs)."""
        for sock in self.listening:
            sock.close()
        self.close_listening_at = None

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
            index, started = child
            logger.warning(
                "%s (pid %d) exited with %s; replacing it",
                self.specs[index].name, pid, _describe_status(status),
            )
            quick_death = time.monotonic() - started < RESPAWN_DELAY
            self.respawn_at[index] = time.monotonic() + (RESPAWN_DELAY if quick_death else 0)

    def handle_sigterm(self) -> None:
        if self.stopping:
            return
        self.stopping = True
        self.respawn_at.clear()
        now = time.monotonic()
        self.close_listening_at = now + self.stop_window
        self.kill_at = now + self.stop_window + self.stop_deadline + KILL_SLACK
        logger.info(
            "stopping: draining %d child processes; new connections accepted for %gs more",
            len(self.children), self.stop_window,
        )
        if self.stop_flag is not None:
            self.stop_flag.set()  # before the signals: a child reads it once told to stop
        for pid in self.children:
            _kill(pid, signal.SIGTERM)

    handle_sigint = handle_sigterm

    def handle_sighup(self) -> None:
        """Reload the config (an nginx/HAProxy habit; agentgateway has no such signal)."""
        if self.on_reload is not None and not self.stopping:
            self.on_reload()


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this child if the supervisor dies (no orphaned workers)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


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
