"""`python -m agw_fast.mockllm ...`, the same as `agw-fast mock-llm ...`."""

from __future__ import annotations

import sys

from .cli import run_mock_llm

__all__: list[str] = []

if __name__ == "__main__":
    raise SystemExit(run_mock_llm(sys.argv[1:]))
