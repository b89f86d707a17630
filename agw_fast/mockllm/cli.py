"""`agw-fast mock-llm`: run the mock upstream, optionally as several SO_REUSEPORT workers."""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import socket
import ssl
import sys
from collections.abc import Callable

import uvloop

from agw_fast.server.sockets import LISTEN_BACKLOG
from agw_fast.server.supervisor import ChildSpec, Supervisor

from .responses import MockLLMConfig
from .server import bind_socket, create_mock_server

__all__ = ["run_mock_llm"]

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


_DEFAULTS = MockLLMConfig()

_EPILOG = """\
APIs (matched by path suffix; the body's "model" is echoed, else --model):
  OpenAI      POST .../chat/completions, .../responses, .../embeddings,
              .../moderations (flags "kill", "murder", "bomb"); GET .../models
              (also Azure /openai/v1/..., /openai/deployments/{d}/...?api-version=...,
              Foundry /api/projects/{p}/openai/v1/..., Gemini /v1beta/openai/...)
  Anthropic   POST /v1/messages (JSON or stream: true), /v1/messages/count_tokens
              (also Foundry /anthropic/v1/...); needs a key, x-api-key or authorization
              (any value: 401 without), and anthropic-version (400 without), as the real API
  Gemini      POST /v1beta/models/{model}:generateContent, :streamGenerateContent[?alt=sse],
              :countTokens (also Vertex .../publishers/google/models/{model}:...); needs
              x-goog-api-key, ?key= or authorization (403 without); GET /v1beta/models
  Vertex      POST .../publishers/anthropic/models/{model}:rawPredict, :streamRawPredict
              (count-tokens:rawPredict counts): Anthropic Messages with anthropic_version
              vertex-2023-10-16 in the body (400 without); needs a bearer token (401)
  A forced tool choice (OpenAI tool_choice "required"/function, Anthropic {"type": "tool"|
  "any"}, Gemini toolConfig mode ANY) is answered with a call of that tool.
  Test endpoints: /echo..., /bytes/N, /chunked/N, /status/NNN.

injected failures per request (request headers; they win over the flags above):
  x-mock-status: NNN       answer NNN (400-599) in the API's own error JSON
  x-mock-retry-after: V    with a retry-after: V header
  x-mock-reset: 1          reset the connection (TCP RST) instead of answering

counters (per worker process; the /mock/ paths are never counted nor failed):
  GET /mock/stats   {"requests": N, "by_path": {"/v1/messages": N, ...}, "injected": N}
  POST /mock/reset  zero the counters and restart --fail-first
"""


def _status(text: str) -> int:
    if not text.isdigit() or not 400 <= int(text) <= 599:
        raise argparse.ArgumentTypeError(f"expected a status 400-599, got {text!r}")
    return int(text)


def _count(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return int(text)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agw-fast mock-llm",
        description="Mock LLM upstream (OpenAI, Anthropic, Gemini, Azure paths) for tests and "
        "benchmarks.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    faults = parser.add_argument_group(
        "injected failures (every request, or the first N with --fail-first)")
    faults.add_argument(
        "--fail-status", type=_status, metavar="NNN",
        help="answer NNN (400-599) in the API's own error JSON (OpenAI, Anthropic or Gemini "
        "shape, by path)")
    faults.add_argument(
        "--retry-after", metavar="SECONDS",
        help="send retry-after: SECONDS with --fail-status (e.g. 429)")
    faults.add_argument(
        "--fail-first", type=_count, metavar="N",
        help="fail only the first N requests, then answer normally (alone: status 500; with "
        "--workers, per worker)")
    faults.add_argument(
        "--reset", action="store_true",
        help="reset the connection (TCP RST) instead of answering")
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
            fail_status=args.fail_status, retry_after=args.retry_after,
            fail_first=args.fail_first, reset=args.reset,
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
            return _run_worker(args.host, args.port, config, context, None, announce)
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
    sock: socket.socket | None,
    ready: Callable[[int], None] | None,
) -> int:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(_serve_until_signal(host, port, config, context, sock, ready))


async def _serve_until_signal(
    host: str,
    port: int,
    config: MockLLMConfig,
    context: ssl.SSLContext | None,
    sock: socket.socket | None,
    ready: Callable[[int], None] | None,
) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in _STOP_SIGNALS:
        loop.add_signal_handler(signum, stop.set)
    server = await create_mock_server(host, port, config, context, sock=sock)
    if ready is not None:
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
    """The gateway's pre-fork supervisor, with a SO_REUSEPORT socket per worker: the kernel
    spreads connections evenly, which one inherited socket does not."""
    sockets = [bind_socket(host, port, reuse_port=True)]
    port = sockets[0].getsockname()[1]  # port 0 resolves once, for every worker
    sockets += [bind_socket(host, port, reuse_port=True) for _ in range(workers - 1)]
    for sock in sockets:
        sock.listen(LISTEN_BACKLOG)  # connections queue from now, before the workers start
    children = [
        ChildSpec(
            f"mock-llm worker {index}",
            functools.partial(_run_worker, host, port, config, context, sock, None),
            (sock,),
        )
        for index, sock in enumerate(sockets)
    ]
    ready(port)
    return Supervisor(children, sockets).run()
