"""The USD cost of one LLM call from `config.modelCatalog` (agentgateway's cost projection,
crates/agentgateway/src/llm/catalog/: `ModelCatalog::project`, `usage_for`, `breakdown`).

The catalog is keyed by the call's provider name and model: the response's model first,
then (only when the response's model is not listed) the requested one. A listed model whose
effective rates are all unset is "Unpriced" (not free); one not listed is "Missing".

Usage is split the way providers bill it. Reasoning and audio tokens are parts of the
output/input totals; cache reads and writes are parts of the input total for OpenAI-style
providers and separate counts for Anthropic and Bedrock (`input_excludes_cache`). A cache
kind the model has a rate for is billed at that rate and, for OpenAI-style counts, taken out
of the input; one without a rate stays in (or is folded into) the input and is billed at the
input rate. A tier is chosen by the request's context (input plus cache reads and writes)
and reprices the whole call. Reasoning falls back to the output rate, audio to the text ones;
a kind with no rate costs nothing.

Amounts are exact decimals, as agentgateway's `rust_decimal`: the total is written to the
access log as a decimal string (`agw.ai.usage.cost.total`) and added to the cost counter as
a float.
"""

from __future__ import annotations

from decimal import Decimal
from typing import NamedTuple

from agw_fast.config.model_catalog import ModelCatalog, Rates
from agw_fast.llm.exchange import LLMOutcome

__all__ = [
    "EXACT",
    "MISSING",
    "UNPRICED",
    "CostBreakdown",
    "Usage",
    "breakdown",
    "format_amount",
    "price",
    "usage_for",
]

# agentgateway's CostLookupStatus, as its `cost_catalog_lookups` metric labels them.
EXACT = "Exact"
UNPRICED = "Unpriced"
MISSING = "Missing"

_PER = Decimal(1_000_000)  # rates are per million tokens
_ZERO = Decimal(0)


class Usage(NamedTuple):
    """Token counts by billed kind (disjoint)."""

    input: int = 0
    cache_read: int = 0
    cache_write: int = 0
    output: int = 0
    reasoning: int = 0
    input_audio: int = 0
    output_audio: int = 0

    def context_tokens(self) -> int:
        return self.input + self.cache_read + self.cache_write + self.input_audio


class CostBreakdown(NamedTuple):
    input: Decimal
    cache_read: Decimal
    cache_write: Decimal
    output: Decimal
    reasoning: Decimal
    input_audio: Decimal
    output_audio: Decimal

    def total(self) -> Decimal:
        return (
            self.input + self.cache_read + self.cache_write + self.output + self.reasoning
            + self.input_audio + self.output_audio
        )  # fmt: skip


def usage_for(llm: LLMOutcome, prices_cache_read: bool, prices_cache_write: bool) -> Usage:
    """The call's tokens by billed kind (agentgateway's `usage_for`). The OpenAI usage agw-fast
    reads has no audio counts: audio is billed within the text totals."""
    cache_read = llm.cached_input_tokens or 0
    cache_write = llm.cache_write_tokens or 0
    reasoning = llm.reasoning_tokens or 0
    prompt = llm.input_tokens or 0
    if llm.input_excludes_cache:
        if not prices_cache_read:
            prompt, cache_read = prompt + cache_read, 0
        if not prices_cache_write:
            prompt, cache_write = prompt + cache_write, 0
    else:
        if prices_cache_read:
            prompt = max(prompt - cache_read, 0)
        else:
            cache_read = 0
        if prices_cache_write:
            prompt = max(prompt - cache_write, 0)
        else:
            cache_write = 0
    output = max((llm.output_tokens or 0) - reasoning, 0)
    return Usage(prompt, cache_read, cache_write, output, reasoning)


def _line(tokens: int, rate: Decimal | None) -> Decimal:
    # rust_decimal answers 0 (scale 0) for a zero dividend: a zero line never adds digits.
    if not tokens or rate is None or not rate:
        return _ZERO
    return tokens * rate / _PER


def breakdown(rates: Rates, usage: Usage) -> CostBreakdown:
    reasoning_rate = rates.reasoning if rates.reasoning is not None else rates.output
    input_audio_rate = rates.input_audio if rates.input_audio is not None else rates.input
    output_audio_rate = rates.output_audio if rates.output_audio is not None else rates.output
    return CostBreakdown(
        _line(usage.input, rates.input),
        _line(usage.cache_read, rates.cache_read),
        _line(usage.cache_write, rates.cache_write),
        _line(usage.output, rates.output),
        _line(usage.reasoning, reasoning_rate),
        _line(usage.input_audio, input_audio_rate),
        _line(usage.output_audio, output_audio_rate),
    )


def _project(
    catalog: ModelCatalog, provider: str, model: str, llm: LLMOutcome
) -> tuple[str, CostBreakdown | None]:
    entry = catalog.resolve(provider, model)
    if entry is None:
        return MISSING, None
    provisional = usage_for(llm, True, True)
    # The tier does not depend on how cache tokens are billed: their sum with input is fixed.
    rates = entry.effective_rates(provisional.context_tokens())
    if rates.is_empty():
        return UNPRICED, None
    prices_read, prices_write = rates.cache_read is not None, rates.cache_write is not None
    usage = provisional if prices_read and prices_write else usage_for(
        llm, prices_read, prices_write
    )
    return EXACT, breakdown(rates, usage)


def price(catalog: ModelCatalog, llm: LLMOutcome) -> tuple[str, CostBreakdown | None]:
    """(lookup status, cost) of one call: the response's model, then the requested one."""
    if llm.response_model is not None:
        status, cost = _project(catalog, llm.provider, llm.response_model, llm)
        if status != MISSING:
            return status, cost
    return _project(catalog, llm.provider, llm.request_model or "", llm)


def format_amount(amount: Decimal) -> str:
    """A decimal as rust_decimal displays it: plain digits, no exponent."""
    return format(amount, "f")
