"""End-to-end fixtures: the gateway and the mock upstream run as users run them (the CLI, in
subprocesses, on 127.0.0.1), with a TLS upstream certified by a `trustme` CA.

Nothing here sleeps to synchronise: processes announce their ports on a log line, which we
wait for with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trustme

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
        )


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
