"""Hot reload plumbing: the file watch, the parent -> child update channel, the shared state.

The supervisor (`agw_fast.serve`) compiles each new config itself, so a bad file never reaches a
child; a good one goes to every child as an `Update` on its `channel` (a SOCK_SEQPACKET
socketpair made before the first fork and kept across respawns): the config (pickled, in a
memfd), the descriptors of the rate-limit buckets the parent's compile created (each worker
compiles the same config against them, so the buckets stay shared, see
`agw_fast.policies.localratelimit.bucket_files`) and the listening sockets of binds the
config adds. Each worker swaps in place and writes the generation it now serves into
`ReloadState`, which readiness and `agentgateway_config_synchronized` read.
"""

from __future__ import annotations

import json
import mmap
import os
import pickle
import socket
from dataclasses import dataclass, field

from agw_fast.config.model import Config

__all__ = [
    "DEBOUNCE",
    "POLL_INTERVAL",
    "FileWatch",
    "ReloadState",
    "Update",
    "channel_pair",
    "encode_config",
    "receive_latest",
    "send_update",
]

POLL_INTERVAL = 0.1  # seconds between stat() calls on the config file
# agentgateway's watcher (notify-debouncer-full) waits for 250 ms without a change: an editor
# writing in several steps causes one reload, of the finished file.
DEBOUNCE = 0.25
_MAX_FDS = 250  # descriptors per message (the kernel's SCM_MAX_FD is 253)
_HEAD_MAX = 1 << 16


LOG_DIRECTIVE_MAX = 1024  # bytes of the log-level directive `/logging` may set


class ReloadState:
    """Words of shared memory, made before the first fork: the generation every process should
    serve (the supervisor's latest good config), whether the last load of the file succeeded
    (`config_synchronized`), and the generation each worker serves.

    And the log level the admin's `/logging` set: a directive (text), its generation (0: the
    config's `logging.level` holds) and the generation each worker has applied. The admin
    process writes the text, then the generation; the other processes read the generation,
    the text, and the generation again (a change in between is read again)."""

    __slots__ = ("_log", "_log_words", "_mm", "_words", "workers")

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._mm = mmap.mmap(-1, 8 * (2 + workers))  # anonymous, MAP_SHARED
        self._words = memoryview(self._mm).cast("Q")
        self._words[0] = 1
        self._words[1] = 1
        # generation | text length | each worker's applied generation | text
        self._log = mmap.mmap(-1, 8 * (2 + workers) + LOG_DIRECTIVE_MAX)
        self._log_words = memoryview(self._log)[: 8 * (2 + workers)].cast("Q")

    # -- the log level (admin `/logging`) ---------------------------------------------------

    def set_log_directive(self, directive: str) -> int:
        """Publish a new directive (the admin process); returns its generation."""
        data = directive.encode()[:LOG_DIRECTIVE_MAX]
        at = 8 * (2 + self.workers)
        self._log[at : at + len(data)] = data
        self._log_words[1] = len(data)
        generation = int(self._log_words[0]) + 1
        self._log_words[0] = generation
        return generation

    def log_directive(self) -> tuple[int, str]:
        """(generation, directive); generation 0: none was set."""
        at = 8 * (2 + self.workers)
        while True:
            generation = int(self._log_words[0])
            if not generation:
                return 0, ""
            length = min(int(self._log_words[1]), LOG_DIRECTIVE_MAX)
            text = self._log[at : at + length].decode("utf-8", "replace")
            if int(self._log_words[0]) == generation:
                return generation, text

    def set_log_applied(self, worker: int, generation: int) -> None:
        self._log_words[2 + worker] = generation

    def log_lagging(self, generation: int) -> list[int]:
        """Workers that have not applied log directive `generation` yet."""
        words = self._log_words
        return [i for i in range(self.workers) if words[2 + i] < generation]

    @property
    def target(self) -> int:
        return int(self._words[0])

    @target.setter
    def target(self, generation: int) -> None:
        self._words[0] = generation

    @property
    def synchronized(self) -> bool:
        return self._words[1] == 1

    @synchronized.setter
    def synchronized(self, value: bool) -> None:
        self._words[1] = 1 if value else 0

    def serving(self, worker: int) -> int:
        return int(self._words[2 + worker])

    def set_serving(self, worker: int, generation: int) -> None:
        self._words[2 + worker] = generation

    def lagging(self) -> list[int]:
        """Workers not (yet) serving the current config."""
        target = self.target
        return [i for i in range(self.workers) if self._words[2 + i] != target]

    def render(self) -> bytes:
        """The `config_synchronized` gauge (agentgateway's, from its xds metrics)."""
        return (
            b"# HELP agentgateway_config_synchronized Whether the last configuration load or "
            b"reload succeeded, the running config matching the one on disk\n"
            b"# TYPE agentgateway_config_synchronized gauge\n"
            b"agentgateway_config_synchronized %d\n" % (1 if self.synchronized else 0)
        )


class FileWatch:
    """Polls the config file's metadata (the path, so a file an editor replaces by rename is
    still watched) and says when a reload is due: `DEBOUNCE` after the first change since the
    last load, as agentgateway's debouncer delays each event (several writes in that time
    make one reload; a file that keeps changing is still reloaded every `DEBOUNCE` or so)."""

    __slots__ = ("changed_at", "loaded", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self.loaded = self._signature()  # what the running config was read from
        self.changed_at: float | None = None

    def _signature(self) -> tuple[int, ...]:
        try:
            st = os.stat(self.path)
        except OSError:
            return ()
        # Not ctime: a file rewritten with its old size and mtime restored is not seen
        # (SIGHUP reloads it; the e2e tests rely on that to tell the two triggers apart).
        return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def poll(self, now: float) -> bool:
        """Whether a reload is due at `now` (monotonic seconds)."""
        current = self._signature()
        if current == self.loaded:
            self.changed_at = None  # unchanged, or changed back
            return False
        if self.changed_at is None:
            self.changed_at = now
            return False
        if now - self.changed_at < DEBOUNCE:
            return False
        self.changed_at = None
        self.loaded = current
        return True

    def mark_loaded(self) -> None:
        """The file is about to be read (a reload): what it is now is what gets loaded."""
        self.loaded = self._signature()
        self.changed_at = None


def channel_pair() -> tuple[socket.socket, socket.socket]:
    """(the supervisor's end, the child's end), both non-blocking."""
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    parent.setblocking(False)
    child.setblocking(False)
    return parent, child


@dataclass
class Update:
    """A new config for a child, as received (it owns the descriptors)."""

    generation: int
    config: Config
    buckets: list[int]
    # Actual port of each runtime bind, in the order `compile_config` returns them.
    ports: list[int]
    # Listening sockets of binds this config adds, by port.
    sockets: dict[int, socket.socket] = field(default_factory=dict)

    def close(self) -> None:
        for fd in self.buckets:
            os.close(fd)
        self.buckets = []
        for sock in self.sockets.values():
            sock.close()
        self.sockets = {}


def send_update(
    channel: socket.socket,
    generation: int,
    config_fd: int,
    buckets: list[int],
    ports: list[int],
    sockets: dict[int, socket.socket],
) -> None:
    """Send one update (a few messages when there are many descriptors). Raises OSError when
    the channel is full (the child is not reading)."""
    new_ports = list(sockets)
    fds = [config_fd, *buckets, *(sockets[p].fileno() for p in new_ports)]
    head = json.dumps(
        {"generation": generation, "buckets": len(buckets), "ports": ports, "new": new_ports,
         "fds": len(fds)}
    ).encode()
    chunks = [fds[i : i + _MAX_FDS] for i in range(0, len(fds), _MAX_FDS)]
    socket.send_fds(channel, [head], chunks[0])
    for chunk in chunks[1:]:
        socket.send_fds(channel, [b"+"], chunk)


def encode_config(config: Config) -> int:
    """A memfd holding the pickled config (the caller closes it once sent)."""
    data = pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL)
    fd = os.memfd_create("agw-fast-config", os.MFD_CLOEXEC)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    except BaseException:
        os.close(fd)
        raise
    return fd


def _read_config(fd: int) -> Config:
    try:
        size = os.fstat(fd).st_size
        data = os.pread(fd, size, 0)
    finally:
        os.close(fd)
    config = pickle.loads(data)  # noqa: S301 - written by our own supervisor
    if not isinstance(config, Config):
        raise ValueError("not a config")
    return config


def _receive(channel: socket.socket) -> Update | None:
    """One update, or None when the channel is empty."""
    try:
        data, fds, flags, _ = socket.recv_fds(channel, _HEAD_MAX, _MAX_FDS)
    except (BlockingIOError, InterruptedError):
        return None
    if not data:
        raise EOFError("update channel closed")
    try:
        if flags & socket.MSG_CTRUNC or data == b"+":
            raise ValueError("malformed update")
        head = json.loads(data)
        total = int(head["fds"])
        while len(fds) < total:
            # The rest follows at once: the supervisor sends an update's messages together.
            more, extra, flags, _ = socket.recv_fds(channel, 16, _MAX_FDS)
            fds += extra
            if more != b"+" or flags & socket.MSG_CTRUNC or not extra:
                raise ValueError("malformed update")
        count = int(head["buckets"])
        new_ports = [int(port) for port in head["new"]]
        if len(fds) != 1 + count + len(new_ports):
            raise ValueError("malformed update")
        config_fd, fds = fds[0], fds[1:]
        config = _read_config(config_fd)  # closes config_fd
        buckets, rest = fds[:count], fds[count:]
        fds = []
        sockets = {port: socket.socket(fileno=fd) for port, fd in zip(new_ports, rest, strict=True)}
        ports = [int(p) for p in head["ports"]]
        return Update(int(head["generation"]), config, buckets, ports, sockets)
    finally:
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass


def receive_latest(channel: socket.socket, newer_than: int) -> Update | None:
    """Drain the channel; the newest update past generation `newer_than`, if any (older ones,
    a burst of reloads or updates sent before this child was forked, are closed unread)."""
    latest: Update | None = None
    while True:
        update = _receive(channel)
        if update is None:
            return latest
        if update.generation <= newer_than or (
            latest is not None and update.generation <= latest.generation
        ):
            update.close()
            continue
        if latest is not None:
            # The supervisor sends a bind's sockets once, with the update that adds it: the
            # newer update still serves that port, so it takes them over.
            for port in list(latest.sockets):
                if port in update.ports and port not in update.sockets:
                    update.sockets[port] = latest.sockets.pop(port)
            latest.close()
        latest = update

