"""A mock LLM upstream (OpenAI, Anthropic, Gemini and Azure paths, injected failures) for tests
and benchmarks (uvloop + asyncio.Protocol)."""

from __future__ import annotations

from .cli import run_mock_llm
from .responses import MockLLMConfig, RecordedRequest, RequestLog, pseudo_random_bytes
from .server import request_log, serve_mock_llm

__all__ = [
    "MockLLMConfig",
    "RecordedRequest",
    "RequestLog",
    "pseudo_random_bytes",
    "request_log",
    "run_mock_llm",
    "serve_mock_llm",
]
