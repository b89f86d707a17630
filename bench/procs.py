"""Process start/stop and /proc accounting (CPU ticks, RSS, sockets) for the bench.

Every server the bench runs is started in its own session (process group) so that stopping
it also stops the workers it forked. CPU is the sum of utime+stime over a process *tree*
(the started process and all its descendants), taken as a delta over the measured window.
"""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "CLK_TCK",
    "CpuDelta",
    "CpuSnapshot",
    "Proc",
    "ProcStartError",
    "cpu_delta",
    "cpu_snapshot",
    "descendants",
    "find_tool",
    "free_port",
    "leaf_pids",
    "listen_socket_count",
    "raise_nofile_limit",
    "rss_bytes",
    "sockets_per_pid",
    "wait_port",
]

CLK_TCK = os.sysconf("SC_CLK_TCK")
SECONDS = 1.0


class ProcStartError(RuntimeError):
    """A server did not come up; the message ends with the tail of its stderr."""


def find_tool(name: str) -> str | None:
    """`shutil.which`, also looking in the sbin directories a non-root PATH may lack."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/local/sbin", "/sbin"):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return None


def free_port() -> int:
    """A currently unused TCP port on 127.0.0.1 (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def raise_nofile_limit(wanted: int) -> int:
    """Raise the soft RLIMIT_NOFILE towards `wanted` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


def wait_port(port: int, timeout: float, *, alive: Proc | None = None) -> bool:
    """Poll until 127.0.0.1:port accepts a TCP connection (or the process dies)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if alive is not None and alive.returncode() is not None:
            return False
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            try:
                sock.connect(("127.0.0.1", port))
                return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


@dataclass
class Proc:
    """One started server process (and, through its session, everything it forks)."""

    name: str
    argv: list[str]
    log_path: Path
    cwd: Path | None = None
    env: dict[str, str] | None = None
    cpu: int | None = None  # pin to this CPU (taskset-like), or None
    popen: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        cpu = self.cpu

        def pin() -> None:  # runs in the child between fork and exec
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        try:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pin if cpu is not None else None,
            )
        except OSError as exc:
            raise ProcStartError(f"{self.name} could not be executed: {exc}") from exc
        finally:
            log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None, "not started"
        return self.popen.pid

    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_tail(self, lines: int = 12) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def wait_ready(self, port: int, timeout: float = 15 * SECONDS) -> None:
        """Wait until `port` accepts; on failure stop the process and raise with its log."""
        if wait_port(port, timeout, alive=self):
            return
        code = self.returncode()
        self.stop()
        state = f"exited with status {code}" if code is not None else f"not ready in {timeout}s"
        tail = self.log_tail() or "(no output)"
        raise ProcStartError(f"{self.name} did not start ({state}): {tail}")

    def stop(self, grace: float = 5 * SECONDS) -> None:
        """SIGTERM the process group this process leads, then SIGKILL it after `grace`."""
        if self.popen is None:
            return
        pgid = self.popen.pid  # start_new_session: the group id is our child's pid
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                self.popen.wait(timeout=grace)
        # Forked workers may outlive a leader that exited: reap the group too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


# --- /proc accounting -------------------------------------------------------------------


def _read_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the `(comm)` field: [state, ppid, ...]."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].decode().split()


def _parent_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _read_stat(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    return children


def descendants(root: int) -> list[int]:
    """`root` and every live process below it (by parent links)."""
    children = _parent_map()
    found: list[int] = []
    stack = [root]
    while stack:
        pid = stack.pop()
        if Path(f"/proc/{pid}").exists():
            found.append(pid)
        stack.extend(children.get(pid, ()))
    return found


def leaf_pids(root: int) -> list[int]:
    """Processes of the tree without children: the workers of a pre-fork server."""
    children = _parent_map()
    tree = descendants(root)
    return sorted(pid for pid in tree if not children.get(pid))


# utime, stime, cutime, cstime are fields 14-17 of /proc/<pid>/stat (1-based); in the
# list after `(comm)` (which starts at field 3) they are at indices 11-14.
_UTIME, _STIME, _CUTIME, _CSTIME = 11, 12, 13, 14


@dataclass(frozen=True)
class CpuSnapshot:
    """Per pid: (user ticks, system ticks), children already reaped included."""

    at: float
    ticks: dict[int, tuple[int, int]]


@dataclass(frozen=True)
class CpuDelta:
    wall_s: float
    user_s: float
    sys_s: float
    per_pid_s: dict[int, float]

    @property
    def cpu_s(self) -> float:
        return self.user_s + self.sys_s


def cpu_snapshot(roots: Sequence[int]) -> CpuSnapshot:
    ticks: dict[int, tuple[int, int]] = {}
    for root in roots:
        for pid in descendants(root):
            fields = _read_stat(pid)
            if fields is None:
                continue
            user = int(fields[_UTIME]) + int(fields[_CUTIME])
            system = int(fields[_STIME]) + int(fields[_CSTIME])
            ticks[pid] = (user, system)
    return CpuSnapshot(time.monotonic(), ticks)


def cpu_delta(before: CpuSnapshot, after: CpuSnapshot) -> CpuDelta:
    """CPU spent between two snapshots; processes born in between count from zero."""
    user = system = 0
    per_pid: dict[int, float] = {}
    for pid, (u1, s1) in after.ticks.items():
        u0, s0 = before.ticks.get(pid, (0, 0))
        user += u1 - u0
        system += s1 - s0
        per_pid[pid] = (u1 - u0 + s1 - s0) / CLK_TCK
    return CpuDelta(after.at - before.at, user / CLK_TCK, system / CLK_TCK, per_pid)


def _status_kib(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int, key: str = "VmRSS") -> int:
    """Resident memory of one process from /proc/<pid>/status (`VmRSS` or `RssAnon`)."""
    return _status_kib(pid, key) * 1024


# --- sockets ----------------------------------------------------------------------------

_TCP_ESTABLISHED = "01"
_TCP_LISTEN = "0A"


def _tcp_table() -> list[tuple[int, str, int]]:
    """(local port, state, inode) for every IPv4/IPv6 TCP socket of this namespace."""
    rows: list[tuple[int, str, int]] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            local_port = int(parts[1].rsplit(":", 1)[1], 16)
            rows.append((local_port, parts[3], int(parts[9])))
    return rows


def listen_socket_count(port: int) -> int:
    """How many listening sockets are bound to `port` (N with SO_REUSEPORT per worker)."""
    return sum(1 for lport, state, _ in _tcp_table() if lport == port and state == _TCP_LISTEN)


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets process `pid` holds open (shared with the e2e tests)."""
    inodes: set[int] = set()
    fd_dir = f"/proc/{pid}/fd"
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return inodes
    for name in names:
        try:
            target = os.readlink(f"{fd_dir}/{name}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(int(target[8:-1]))
    return inodes


def sockets_per_pid(pids: Sequence[int], port: int) -> dict[int, int]:
    """Established connections accepted on local `port`, counted per owning process."""
    accepted = {
        inode for lport, state, inode in _tcp_table() if lport == port and state == _TCP_ESTABLISHED
    }
    return {pid: len(socket_inodes(pid) & accepted) for pid in pids}
