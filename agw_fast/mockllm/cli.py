"""`agw-fast mock-llm`: run the mock upstream, optionally as several SO_REUSEPORT workers."""

from __future__ import annotations

import argparse
import asyncio
import os
import select
import signal
import socket
import ssl
import sys
import traceback
from collections.abc import Callable

import uvloop

from .responses import MockLLMConfig
from .server import bind_socket, create_mock_server

__all__ = ["run_mock_llm"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_READY_POLL = 0.2  # seconds between liveness checks while workers start


_DEFAULTS = MockLLMConfig()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agw-fast mock-llm",
        description="OpenAI-compatible mock LLM upstream for tests and benchmarks.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS (needs --cert, --key)")
    parser.add_argument("--cert", help="PEM certificate chain for --tls")
    parser.add_argument("--key", help="PEM private key for --tls")
    parser.add_argument("--chunks", type=int, default=_DEFAULTS.chunks, help="deltas per stream")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between events")
    parser.add_argument("--model", default=_DEFAULTS.model, help="default model name")
    parser.add_argument("--content", default=_DEFAULTS.content, help="completion text")
    parser.add_argument("--no-usage", action="store_true", help="never report token usage")
    parser.add_argument(
        "--gzip", action="store_true",
        help="gzip chat replies when the request's Accept-Encoding allows it (as OpenAI does)",
    )
    parser.add_argument("--workers", type=int, default=1, help="processes (SO_REUSEPORT)")
    return parser


def run_mock_llm(argv: list[str]) -> int:
    """CLI entry point; returns the process exit code (0 after SIGTERM/SIGINT)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has already printed usage or help
        return exc.code if isinstance(exc.code, int) else 2
    if args.tls and not (args.cert and args.key):
        parser.print_usage(sys.stderr)
        print("mock-llm: --tls needs --cert FILE and --key FILE (no certificate is generated)",
              file=sys.stderr)
        return 2
    if (args.cert or args.key) and not args.tls:
        print("mock-llm: --cert/--key are only used with --tls", file=sys.stderr)
        return 2
    if args.workers < 1:
        print("mock-llm: --workers must be at least 1", file=sys.stderr)
        return 2
    try:
        config = MockLLMConfig(
            chunks=args.chunks, chunk_delay=args.chunk_delay, model=args.model,
            usage=not args.no_usage, content=args.content, gzip=args.gzip,
        )
        context = _tls_context(args.cert, args.key) if args.tls else None
    except (ValueError, OSError, ssl.SSLError) as exc:
        print(f"mock-llm: {exc}", file=sys.stderr)
        return 2
    scheme = "https" if context else "http"
    host = f"[{args.host}]" if ":" in args.host else args.host

    def announce(port: int) -> None:
        print(f"mock-llm listening on {scheme}://{host}:{port}", flush=True)

    try:
        if args.workers == 1:
            return _run_worker(args.host, args.port, config, context, False, announce)
        return _run_workers(args.host, args.port, config, context, args.workers, announce)
    except OSError as exc:
        print(f"mock-llm: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1


def _tls_context(cert: str, key: str) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


def _run_worker(
    host: str,
    port: int,
    config: MockLLMConfig,
    context: ssl.SSLContext | None,
    reuse_port: bool,
    ready: Callable[[int], None],
) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve_until_signal(host, port, config, context, reuse_port, ready))


async def _serve_until_signal(
    host: str,
    port: int,
    config: MockLLMConfig,
    context: ssl.SSLContext | None,
    reuse_port: bool,
    ready: Callable[[int], None],
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    server = await create_mock_server(host, port, config, context, reuse_port=reuse_port)
    ready(server.sockets[0].getsockname()[1])
    await stop.wait()
    server.close()
    return 0


def _run_workers(
    host: str,
    port: int,
    config: MockLLMConfig,
    context: ssl.SSLContext | None,
    workers: int,
    ready: Callable[[int], None],
) -> int:
    # The parent binds first (without listening) so that port 0 resolves once for every worker;
    # each worker then listens on its own SO_REUSEPORT socket and the kernel spreads connections
    # evenly, which one inherited socket does not.
    reservation = bind_socket(host, port, reuse_port=True)
    port = reservation.getsockname()[1]
    read_end, write_end = os.pipe()
    # Stop signals stay blocked in the parent from here on and are collected with sigwait();
    # children unblock them before installing their own handlers.
    watched = {*_STOP_SIGNALS, signal.SIGCHLD}
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, watched)
    pids: list[int] = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            _worker_child(host, port, config, context, reservation, read_end, write_end)
        pids.append(pid)
    os.close(write_end)
    try:
        if not _await_ready(read_end, workers, pids):
            print("mock-llm: a worker failed to start", file=sys.stderr)
            return 1
        ready(port)
        while True:
            signum = signal.sigwait(watched)
            if signum != signal.SIGCHLD:
                return 0
            if _reap(pids):
                print("mock-llm: a worker exited unexpectedly", file=sys.stderr)
                return 1
    finally:
        os.close(read_end)
        _stop_children(pids)
        reservation.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


def _worker_child(
    host: str,
    port: int,
    config: MockLLMConfig,
    context: ssl.SSLContext | None,
    reservation: socket.socket,
    read_end: int,
    write_end: int,
) -> None:
    code = 1
    try:
        os.close(read_end)
        reservation.close()
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {*_STOP_SIGNALS, signal.SIGCHLD})

        def ready(_: int) -> None:
            os.write(write_end, b"r")
            os.close(write_end)

        code = _run_worker(host, port, config, context, True, ready)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        os._exit(code)


def _await_ready(read_end: int, workers: int, pids: list[int]) -> bool:
    """Wait for one byte from each worker; False as soon as any worker has died."""
    got = 0
    while got < workers:
        readable, _, _ = select.select([read_end], [], [], _READY_POLL)
        if readable:
            data = os.read(read_end, workers - got)
            if not data:
                return False
            got += len(data)
        elif _reap(pids):
            return False
    return True


def _reap(pids: list[int]) -> bool:
    """Collect exited workers; True if any had exited."""
    exited = False
    for pid in list(pids):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            pids.remove(pid)
            exited = True
    return exited


def _stop_children(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for pid in pids:
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    pids.clear()
