"""End-to-end fixtures: the gateway and the mock upstream run as users run them (the CLI, in
subprocesses, on 127.0.0.1), with a TLS upstream certified by a `trustme` CA.

Nothing here sleeps to synchronise: processes announce their ports on a log line, which we
wait for with a deadline.
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from agw_fast.core.http1 import ChunkedScanner, UpstreamProtocolError

STARTUP_TIMEOUT = 20.0
_LISTEN_RE = re.compile(r"listening on \S+ port (\d+)")
_STATS_RE = re.compile(r"stats listening on \S+ port (\d+)")
_MOCK_RE = re.compile(r"mock-llm listening on https?://[^:]+:(\d+)")


def _wait_for(path: Path, pattern: re.Pattern[str], proc: subprocess.Popen[bytes], count: int = 1
              ) -> list[int]:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        text = path.read_text(errors="replace") if path.exists() else ""
        found = [int(m) for m in pattern.findall(text)]
        if len(found) >= count:
            return found
        if proc.poll() is not None:
            raise AssertionError(f"process exited early ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.02)
    text = path.read_text(errors="replace") if path.exists() else ""
    raise AssertionError(f"timed out waiting for {pattern.pattern!r}:\n{text[-3000:]}")


@dataclass
class Certs:
    ca: trustme.CA
    ca_path: Path
    cert_path: Path
    key_path: Path
    client_cert_path: Path
    client_key_path: Path


@pytest.fixture(scope="session")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    directory = tmp_path_factory.mktemp("certs")
    ca = trustme.CA()
    server = ca.issue_cert("localhost", "127.0.0.1", "upstream.test", "api.example.test")
    client = ca.issue_cert("client.test")
    ca_path = directory / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_path))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    server.cert_chain_pems[0].write_to_path(str(cert_path))
    server.private_key_pem.write_to_path(str(key_path))
    client_cert, client_key = directory / "client.pem", directory / "client.key"
    client.cert_chain_pems[0].write_to_path(str(client_cert))
    client.private_key_pem.write_to_path(str(client_key))
    return Certs(ca, ca_path, cert_path, key_path, client_cert, client_key)


@dataclass
class Process:
    proc: subprocess.Popen[bytes]
    log: Path
    port: int
    extra_ports: dict[str, int] = field(default_factory=dict)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _start(
    args: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "agw_fast", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=full_env,
            start_new_session=True,
            preexec_fn=_die_with_test_run,
        )


def _die_with_test_run() -> None:
    """In the child: SIGTERM it if pytest dies, however abruptly, so no server outlives the
    run (PR_SET_PDEATHSIG survives exec)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)


def start_mock(tmp: Path, *extra: str, tls: Certs | None = None, name: str = "mock") -> Process:
    log = tmp / f"{name}.log"
    args = ["mock-llm", "--host", "127.0.0.1", "--port", "0", *extra]
    if tls is not None:
        args += ["--tls", "--cert", str(tls.cert_path), "--key", str(tls.key_path)]
    proc = _start(args, log)
    (port,) = _wait_for(log, _MOCK_RE, proc)
    return Process(proc, log, port)


@pytest.fixture(scope="session")
def tls_upstream(tmp_path_factory: pytest.TempPathFactory, certs: Certs) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("tls-upstream"), tls=certs, name="tls")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def plain_upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("plain-upstream"), name="plain")
    yield process
    process.stop()


class GatewayFactory:
    """Starts `agw-fast -f <config>` processes and stops them all at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[Process] = []

    def __call__(
        self,
        config: str,
        *,
        workers: int = 1,
        env: dict[str, str] | None = None,
        extra_args: list[str] | None = None,
        expect_stats: bool = False,
    ) -> Process:
        index = len(self.started)
        config_path = self.tmp / f"gateway{index}.yaml"
        config_path.write_text(config)
        log = self.tmp / f"gateway{index}.log"
        args = ["-f", str(config_path), "--workers", str(workers), "--bind-address", "127.0.0.1"]
        proc = _start(args + (extra_args or []), log, env)
        (port,) = _wait_for(log, _LISTEN_RE, proc)[:1]
        process = Process(proc, log, port)
        if expect_stats:
            process.extra_ports["stats"] = _wait_for(log, _STATS_RE, proc)[0]
        _wait_accepting(port)
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.started:
            if process.proc.poll() is None:
                process.stop()


def _wait_accepting(port: int) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path)
    yield factory
    factory.stop_all()


QUIET = """config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
"""
"""A `config:` block that opens no extra ports (tests run many gateways)."""


def proxy_config(port: int, extra: str = "") -> str:
    """A quiet gateway with one catch-all route to `127.0.0.1:port`; `extra` goes on inside
    the `config:` block (indented two spaces)."""
    return QUIET + extra + f"""binds:
- port: 0
  listeners:
  - routes:
    - backends: [{{host: "127.0.0.1:{port}"}}]
"""


def raw_request(port: int, data: bytes, *, timeout: float = 10.0, until_close: bool = True
                ) -> bytes:
    """Send raw bytes, return everything the gateway answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                if until_close:
                    raise
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


# -- Helpers for the test_proxy_*.py suites ------------------------------------------------------
#
# A module-scoped gateway factory (one gateway shared by a module's tests), purpose-built upstreams
# (a thread per accepted connection, for behaviours the mock lacks), a tiny strict HTTP/1.1
# message reader for raw sockets, and /proc helpers to look at the gateway's processes and sockets.

DEADLINE = 10.0
"""Generous upper bound for anything that should complete promptly (loaded 2-core machines)."""


@pytest.fixture(scope="module")
def module_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayFactory]:
    """Like `gateway`, but its gateways live for the whole test module."""
    factory = GatewayFactory(tmp_path_factory.mktemp("gateway"))
    yield factory
    factory.stop_all()


def wait_until(predicate: Callable[[], object], timeout: float = DEADLINE, what: str = "") -> None:
    """Poll `predicate` until it is true; fail with `what` at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}")
        time.sleep(0.01)


def gateway_client(port: int, timeout: float = DEADLINE, **options: Any) -> httpx.Client:
    """An httpx client for the gateway on `port` (base URL set, proxy variables ignored)."""
    return httpx.Client(
        base_url=f"http://127.0.0.1:{port}", timeout=timeout, trust_env=False, **options
    )


def ok_json(response: httpx.Response) -> dict[str, Any]:
    """The JSON object of a 200 response (the response text shows when it is not a 200)."""
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc


@dataclass
class RawMessage:
    """One HTTP/1.1 message as read off a socket. Header names are lowercased, order kept."""

    start_line: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes
    raw: bytes  # the exact bytes of this message on the wire
    chunked: bool = False

    @property
    def status(self) -> int:
        return int(self.start_line.split(b" ", 2)[1])

    @property
    def method(self) -> str:
        return self.start_line.split(b" ", 1)[0].decode("ascii")

    @property
    def target(self) -> str:
        return self.start_line.split(b" ", 2)[1].decode("latin-1")

    def header_values(self, name: str) -> list[str]:
        key = name.lower().encode("latin-1")
        return [v.decode("latin-1") for n, v in self.headers if n == key]

    def header(self, name: str) -> str | None:
        values = self.header_values(name)
        assert len(values) <= 1, f"{name} repeated: {values}"
        return values[0] if values else None


class BufferedSocket:
    """Reads HTTP/1.1 messages from a blocking socket (strictly: framing errors raise)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> bool:
        chunk = self.sock.recv(256 * 1024)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def _take(self, n: int) -> bytes:
        data = bytes(self.buffer[:n])
        del self.buffer[:n]
        return data

    def read_until(self, marker: bytes) -> bytes:
        """Bytes up to and including `marker`; EOFError if the peer closes first."""
        start = 0
        while True:
            index = self.buffer.find(marker, start)
            if index != -1:
                return self._take(index + len(marker))
            start = max(0, len(self.buffer) - len(marker) + 1)
            if not self._fill():
                raise EOFError(f"closed before {marker!r}; got {bytes(self.buffer)[:200]!r}")

    def read_exact(self, n: int) -> bytes:
        while len(self.buffer) < n:
            if not self._fill():
                raise EOFError(f"closed after {len(self.buffer)} of {n} bytes")
        return self._take(n)

    def read_until_close(self) -> bytes:
        """Everything until the peer closes (a reset counts as a close)."""
        try:
            while self._fill():
                pass
        except ConnectionResetError:
            pass
        return self._take(len(self.buffer))

    def at_eof(self) -> bool:
        """True if the peer closed (or reset) with nothing buffered; blocks until it knows."""
        if self.buffer:
            return False
        try:
            return not self._fill()
        except ConnectionResetError:
            return True

    def read_chunked(self) -> tuple[bytes, bytes]:
        """A chunked body (RFC 9112 §7.1): (payload, its bytes on the wire). Read with the
        gateway's own ChunkedScanner; bad framing raises ValueError, like other bad input."""
        parts: list[bytes] = []
        scanner = ChunkedScanner(parts.append)
        wire = bytearray()
        while True:
            data = self._take(len(self.buffer))
            try:
                used = scanner.feed(data)
            except UpstreamProtocolError as exc:
                raise ValueError(f"bad chunked body: {exc}") from None
            if used != -1:
                wire += data[:used]
                self.buffer[:0] = data[used:]
                return b"".join(parts), bytes(wire)
            wire += data
            if not self._fill():
                raise EOFError(f"closed inside a chunked body after {len(wire)} bytes")

    def read_message(self, *, request: bool, head_request: bool = False) -> RawMessage | None:
        """The next request or response; None on a clean close before its first byte."""
        if not self.buffer:
            try:
                if not self._fill():
                    return None
            except ConnectionResetError:
                return None
        head = self.read_until(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        headers: list[tuple[bytes, bytes]] = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise ValueError(f"bad header line {line!r}")
            headers.append((name.lower(), value.strip(b" \t")))
        names = [n for n, _ in headers]
        lengths = {v for n, v in headers if n == b"content-length"}
        chunked = b"transfer-encoding" in names
        if chunked:
            values = [v.lower() for n, v in headers if n == b"transfer-encoding"]
            assert values == [b"chunked"], f"unexpected transfer-encoding {values}"
            assert not lengths, "both content-length and transfer-encoding"
        assert len(lengths) <= 1, f"conflicting content-length {lengths}"
        status = 0 if request else int(lines[0].split(b" ", 2)[1])
        raw = [head]
        if not request and (head_request or status < 200 or status in (204, 304)):
            body = b""
        elif chunked:
            body, chunks = self.read_chunked()
            raw.append(chunks)
        elif lengths:
            body = self.read_exact(int(lengths.pop()))
            raw.append(body)
        elif request:
            body = b""
        else:
            body = self.read_until_close()
            raw.append(body)
        return RawMessage(lines[0], headers, body, b"".join(raw), chunked)


class RawClient:
    """A raw client connection to the gateway (TCP_NODELAY, so our writes leave at once)."""

    def __init__(self, port: int, timeout: float = DEADLINE) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.reader = BufferedSocket(self.sock)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def response(self, *, head_request: bool = False) -> RawMessage:
        message = self.reader.read_message(request=False, head_request=head_request)
        assert message is not None, "the gateway closed the connection instead of answering"
        return message

    def request(self, data: bytes, *, head_request: bool = False) -> RawMessage:
        self.send(data)
        return self.response(head_request=head_request)

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def http_request(
    method: str = "GET",
    target: str = "/",
    *,
    host: str = "gateway.test",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    content_length: bool | None = None,
) -> bytes:
    """A request's wire bytes. Content-Length is added when there is a body (or if asked)."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length or (content_length is None and body):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def http_response(
    status: int = 200,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
    *,
    content_length: bool = True,
    reason: str = "OK",
) -> bytes:
    lines = [f"HTTP/1.1 {status} {reason}"]
    lines += [f"{name}: {value}" for name, value in headers or []]
    if content_length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class UpstreamConnection:
    """One accepted connection of an `Upstream`, handed to its handler in its own thread."""

    def __init__(self, upstream: Upstream, sock: socket.socket, index: int) -> None:
        self.upstream = upstream
        self.sock = sock
        self.index = index  # 0 for the first connection the upstream accepted
        self.reader = BufferedSocket(sock)
        self.tls: dict[str, object] | None = None  # SNI and client certificate, for TLS

    def read_request(self) -> RawMessage | None:
        """The next request (recorded on the upstream), or None once the peer closed."""
        message = self.reader.read_message(request=True)
        if message is not None:
            with self.upstream.lock:
                self.upstream.requests.append(message)
        return message

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def wait_peer_closed(self, timeout: float = DEADLINE) -> bool:
        """True once the gateway closed or reset this connection (bytes it sends are dropped)."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.sock], [], [], min(left, 0.05))
            if ready:
                try:
                    if not self.sock.recv(65536):
                        return True
                except OSError:
                    return True
        return False


def echo_json(request: RawMessage) -> bytes:
    """The response our custom upstreams give: what they received, as JSON."""
    doc = {
        "method": request.method,
        "target": request.target,
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in request.headers],
        "body_length": len(request.body),
    }
    return json.dumps(doc).encode()


def serve_echo(conn: UpstreamConnection) -> None:
    """A keep-alive upstream answering each request with `echo_json` (200)."""
    while (request := conn.read_request()) is not None:
        conn.send(http_response(200, echo_json(request), [("Content-Type", "application/json")]))


class Upstream:
    """A purpose-built upstream on 127.0.0.1: each accepted connection runs `handler(conn)` in a
    daemon thread. `accepted` counts connections, `requests` keeps every request read through
    `conn.read_request()`, `errors` what handlers raised (they never crash the test)."""

    def __init__(
        self,
        handler: Callable[[UpstreamConnection], None] = serve_echo,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port: int = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.accepted = 0
        self.requests: list[RawMessage] = []
        self.errors: list[str] = []
        self.tls_info: list[dict[str, object]] = []
        self.closed_connections = 0
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._closing = False
        self._server_names: dict[int, str | None] = {}
        if tls is not None:
            tls.sni_callback = self._record_sni
        self._acceptor = threading.Thread(target=self._accept_loop, daemon=True)
        self._acceptor.start()

    def _record_sni(self, ssl_socket: object, name: str | None, _ctx: ssl.SSLContext) -> None:
        with self.lock:
            self._server_names[id(ssl_socket)] = name

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                if self._closing:
                    sock.close()
                    return
                index = self.accepted
                self.accepted += 1
                self._sockets.append(sock)
                thread = threading.Thread(target=self._run, args=(sock, index), daemon=True)
                self._threads.append(thread)
            thread.start()

    def _run(self, sock: socket.socket, index: int) -> None:
        try:
            sock.settimeout(30)
            conn = UpstreamConnection(self, sock, index)
            if self.tls is not None:
                sock = conn.sock = self.tls.wrap_socket(sock, server_side=True)
                conn.reader = BufferedSocket(sock)
                with self.lock:
                    self._sockets.append(sock)
                    conn.tls = {
                        "sni": self._server_names.pop(id(sock), None),
                        "peer_cert": sock.getpeercert(),
                    }
                    self.tls_info.append(conn.tls)
            self.handler(conn)
        except (OSError, EOFError, ValueError, AssertionError) as error:
            with self.lock:
                self.errors.append(f"connection {index}: {type(error).__name__}: {error}")
        finally:
            sock.close()
            with self.lock:
                self.closed_connections += 1

    def close(self) -> None:
        with self.lock:
            self._closing = True
            sockets = list(self._sockets)
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._acceptor.join(DEADLINE)
        for thread in list(self._threads):
            thread.join(DEADLINE)

    def __enter__(self) -> Upstream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def unused_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_pids(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc/*/stat."""
    children = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != b"Z":
            children.append(int(entry))
    return sorted(children)


def tcp_connections() -> dict[int, tuple[int, int]]:
    """IPv4 TCP sockets of this network namespace: inode -> (local port, remote port)."""
    table: dict[int, tuple[int, int]] = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], int(fields[9])
            table[inode] = (int(local.split(":")[1], 16), int(remote.split(":")[1], 16))
    return table


# -- Helpers for the test_llm_*.py suites --------------------------------------------------------
#
# Config builders for `ai` backends (YAML written with PyYAML from plain dicts), Prometheus
# scraping (prometheus_client's parser), an access-log line parser and a polling helper that
# returns a value.

UPSTREAM_KEY = "sk-upstream-secret-e2e-7f3a"
"""The provider key the LLM suites put in `$UPSTREAM_KEY`; it must never reach a log line."""


def serving_worker(gateway_port: int, client_port: int, workers: list[int]) -> int | None:
    """The worker process holding the accepted end of our connection (from /proc)."""
    from bench.procs import socket_inodes

    inodes = {
        inode for inode, (local, remote) in tcp_connections().items()
        if local == gateway_port and remote == client_port
    }
    owners = [pid for pid in workers if socket_inodes(pid) & inodes]
    return owners[0] if len(owners) == 1 else None


def ai_route(
    upstream_port: int,
    *,
    host: str = "localhost",
    model: str | None = "command",
    match_prefix: str | None = None,
    rewrite_path: str | None = None,
    authority: str | None = "api.example.test",
    ca_path: Path | None = None,
    auth_key: str | None = "$UPSTREAM_KEY",
    path_prefix: str | None = None,
    path_override: str | None = None,
    ai_routes: dict[str, str] | None = None,
    name: str | None = None,
) -> dict[str, object]:
    """One `routes[]` entry in the seed's shape: urlRewrite + backendTLS + backendAuth + `ai`."""
    route: dict[str, object] = {}
    if name is not None:
        route["name"] = name
    if match_prefix is not None:
        route["matches"] = [{"path": {"pathPrefix": match_prefix}}]
    policies: dict[str, object] = {}
    rewrite: dict[str, object] = {}
    if authority is not None:
        rewrite["authority"] = {"full": authority}
    if rewrite_path is not None:
        rewrite["path"] = {"full": rewrite_path}
    if rewrite:
        policies["urlRewrite"] = rewrite
    if ca_path is not None:
        policies["backendTLS"] = {"root": str(ca_path)}
    if auth_key is not None:
        policies["backendAuth"] = {"key": auth_key}
    if ai_routes is not None:
        policies["ai"] = {"routes": ai_routes}
    if policies:
        route["policies"] = policies
    ai: dict[str, object] = {"name": "cohere", "hostOverride": f"{host}:{upstream_port}"}
    if path_prefix is not None:
        ai["pathPrefix"] = path_prefix
    if path_override is not None:
        ai["pathOverride"] = path_override
    ai["provider"] = {"openAI": {} if model is None else {"model": model}}
    route["backends"] = [{"ai": ai}]
    return route


def llm_config(
    *routes: dict[str, object],
    stats: bool = False,
    max_buffer_size: int | None = None,
    log_format: str | None = None,
) -> str:
    """A whole config: one port-0 bind and listener with `routes`, no extra ports unless
    `stats` (then `statsAddr: 127.0.0.1:0`, to be used with `expect_stats=True`)."""
    import yaml  # PyYAML: a dependency of agw_fast itself

    config: dict[str, object] = {
        "statsAddr": "127.0.0.1:0" if stats else "off",
        "adminAddr": "off",
        "readinessAddr": "off",
    }
    if log_format is not None:
        config["logging"] = {"format": log_format}
    doc: dict[str, object] = {"config": config}
    if max_buffer_size is not None:
        doc["frontendPolicies"] = {"http": {"maxBufferSize": max_buffer_size}}
    doc["binds"] = [{"port": 0, "listeners": [{"routes": list(routes)}]}]
    return str(yaml.safe_dump(doc, sort_keys=False))


def poll(
    fetch: Callable[[], object],
    until: Callable[[Any], bool],
    timeout: float = DEADLINE,
    what: str = "",
) -> Any:
    """Call `fetch` until `until(value)` holds and return that value; fail at the deadline
    showing the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {value!r}")
        time.sleep(0.02)


@dataclass(frozen=True)
class Sample:
    """One sample line of a Prometheus text exposition."""

    name: str
    labels: dict[str, str]
    value: float


def parse_metrics(text: str) -> list[Sample]:
    """The samples of a Prometheus text exposition, read by `prometheus_client`'s parser (the
    reference implementation: a malformed exposition raises ValueError)."""
    from prometheus_client.parser import text_string_to_metric_families

    return [
        Sample(sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def scrape_metrics(stats_port: int) -> list[Sample]:
    """GET `/metrics` on a gateway's stats port and parse it; the exposition's content type
    is checked on the way."""
    response = httpx.get(f"http://127.0.0.1:{stats_port}/metrics", timeout=DEADLINE)
    assert response.status_code == 200, response.text[:500]
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_metrics(response.text)


def metric_total(samples: list[Sample], name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(
        s.value for s in samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


_ACCESS_FIELD = re.compile(r'([^\s=]+)=("(?:[^"\\]|\\.)*"|\S*)')


def access_log_lines(output: str) -> list[dict[str, str]]:
    """The text-format access log lines (`info request k=v ...`) of a gateway's output, parsed
    (quoted values are JSON strings)."""
    lines = []
    for line in output.splitlines():
        if not line.startswith("info request "):
            continue
        fields = {}
        for key, value in _ACCESS_FIELD.findall(line[len("info request "):]):
            fields[key] = json.loads(value) if value.startswith('"') else value
        lines.append(fields)
    return lines


def tls_server_context(certs: Certs) -> ssl.SSLContext:
    """A server context with the suite's `localhost` certificate (for custom TLS upstreams)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certs.cert_path), str(certs.key_path))
    return context


def tls_client_context(certs: Certs) -> ssl.SSLContext:
    """A client context trusting the suite's CA (to talk to the TLS mock directly)."""
    return ssl.create_default_context(cafile=str(certs.ca_path))


@pytest.fixture(scope="module")
def upstream() -> Iterator[Upstream]:
    """A recording upstream for the module (a module needing another behaviour overrides it)."""
    with Upstream() as recording:
        yield recording


@pytest.fixture(scope="module")
def gw(module_gateway: GatewayFactory, upstream: Upstream) -> Process:
    """A gateway with one plain route to `upstream`, for the whole module."""
    return module_gateway(proxy_config(upstream.port))


def refused_config(path: Path, text: str) -> str:
    """Write `text` to `path`, start the gateway on it as a user would, and return the one
    line it prints: it must exit 1 with exactly one line on stderr (never a traceback)."""
    path.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "agw_fast", "-f", str(path), "--bind-address", "127.0.0.1"],
        capture_output=True,
        timeout=DEADLINE * 4,
        text=True,
    )
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def one_route_config(policies: str, port: int = 1) -> str:
    """A quiet gateway config with one route to `127.0.0.1:port` whose `policies:` block is
    `policies` (YAML at the block's own indentation, i.e. starting in column 0)."""
    block = "".join(f"        {line}\n" for line in policies.splitlines())
    return QUIET + f"""binds:
- port: 0
  listeners:
  - routes:
    - policies:
{block}      backends: [{{host: "127.0.0.1:{port}"}}]
"""
