"""Guardrails: agentgateway's prompt guards on LLM requests and responses (sans-IO).

`regex` (patterns and builtin detectors), `content` (where each client API keeps its
text), `guards` (the guard kinds behind one interface), `stream` (windowed checks on
streams), `pipeline` (a model's guards and one request's run through them).
"""

from __future__ import annotations

from agw_fast.llm.guardrails.guards import (
    Endpoint,
    Guard,
    GuardCall,
    GuardFailed,
    Rejection,
    Verdict,
)
from agw_fast.llm.guardrails.pipeline import (
    Checks,
    GuardedStream,
    GuardedTranslation,
    GuardPending,
    GuardPipeline,
    GuardRejected,
    GuardState,
    RequestRun,
    compile_pipeline,
)

__all__ = [
    "Checks",
    "Endpoint",
    "Guard",
    "GuardCall",
    "GuardFailed",
    "GuardPending",
    "GuardPipeline",
    "GuardRejected",
    "GuardState",
    "GuardedStream",
    "GuardedTranslation",
    "Rejection",
    "RequestRun",
    "Verdict",
    "compile_pipeline",
]
