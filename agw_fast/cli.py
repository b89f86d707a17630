"""Command line: `agw-fast -f FILE [--workers N] [--validate-only]`, plus `mock-llm` and `demo`.

Library code raises; the entry points (this module, `agw_fast.serve`, `agw_fast.demo`) turn
errors into exit codes and one-line messages (`config error: <path>: <problem>`), never a
traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from agw_fast.config.load import load_config, load_config_file
from agw_fast.config.model import Config
from agw_fast.errors import ConfigError
from agw_fast.plan import compile_config

__all__ = ["main"]

DEFAULT_WORKERS = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agw-fast",
        description="A fast edge proxy for LLM APIs that reads agentgateway's config.",
        epilog="Subcommands: `agw-fast mock-llm --help` (a bundled OpenAI-compatible mock "
        "upstream), `agw-fast demo` (the gateway on config/demo.yaml with the mock).",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("-f", "--file", type=Path, help="config file (YAML or JSON)")
    source.add_argument("-c", "--config", help="inline config (YAML or JSON text)")
    parser.add_argument(
        "--workers",
        type=int,
        default=int(os.environ.get("AGW_FAST_WORKERS", DEFAULT_WORKERS)),
        help="worker processes (default 1, or $AGW_FAST_WORKERS)",
    )
    parser.add_argument(
        "--limits",
        type=Path,
        default=os.environ.get("AGW_FAST_LIMITS") or None,
        help="shared limits file: localRateLimit and per-key budgets counted in Redis across "
        "instances (agw-fast's extension; default $AGW_FAST_LIMITS)",
    )
    parser.add_argument(
        "--validate-only", action="store_true", help="load and check the config, then exit"
    )
    parser.add_argument(
        "--listen-mode",
        choices=("reuseport", "shared"),
        default="reuseport",
        help="one SO_REUSEPORT socket per worker (default) or one shared socket",
    )
    parser.add_argument(
        "--bind-address",
        default=None,
        help="address to bind the config's ports on (default [::] dual-stack, as agentgateway)",
    )
    return parser


def _load(args: argparse.Namespace) -> Config:
    if args.file is not None:
        try:
            return load_config_file(args.file, os.environ)
        except OSError as error:
            raise ConfigError("", f"cannot read {args.file}: {error.strerror}") from None
    return load_config(args.config, os.environ, base_dir=Path.cwd())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["mock-llm"]:
        from agw_fast.mockllm import run_mock_llm

        return run_mock_llm(argv[1:])
    if argv[:1] == ["demo"]:
        from agw_fast.demo import run_demo

        return run_demo(argv[1:])
    args = _parser().parse_args(argv)
    if args.workers < 1:
        print("agw-fast: --workers must be at least 1", file=sys.stderr)
        return 2
    limits = None
    try:
        config = _load(args)
        runtime = compile_config(config)  # TLS files, regexes: everything that can fail at load
        if args.limits is not None:
            from agw_fast.config.limits import load_limits_file
            from agw_fast.server.shared_store import attach

            limits = load_limits_file(Path(args.limits), os.environ)
            attach(runtime, config, limits)  # CEL keys, route names
    except ConfigError as error:
        print(f"config error: {error}", file=sys.stderr)
        return 1
    if args.validate_only:
        print("config ok", file=sys.stderr)
        return 0
    from agw_fast.serve import serve

    return serve(
        config,
        workers=args.workers,
        listen_mode=args.listen_mode,
        bind_address=args.bind_address,
        config_path=args.file,
        limits=limits,
    )
