"""Micro-benchmark of `tokenize` (the prompt token estimate) and of pricing a call, in µs.

    python -m bench.tokenize_bench [--number N]

What a request on a `tokenize: true` model pays before its call: agentgateway's message
walk and the BPE count (tiktoken) of typical prompts, for both encodings; what a finished
call pays with `config.modelCatalog` (the lookup, the usage split and exact decimals). The
once-per-process preload (~1 s) is timed separately: it runs at config load, never on a
request. Needs the `tokenize` extra.
"""

from __future__ import annotations

import argparse
import json
import time
import timeit
from collections.abc import Callable
from pathlib import Path

from agw_fast.config import load_config
from agw_fast.llm import tokenizer
from agw_fast.llm.cost import price
from agw_fast.llm.exchange import LLMOutcome

__all__ = ["main"]

DATA = Path(__file__).resolve().parents[1] / "tests" / "data" / "agentgateway-llm"

_SENTENCE = "The quick brown fox jumps over the lazy dog while the gateway counts tokens. "


def _chat(model: str, words: int) -> dict[str, object]:
    text = (_SENTENCE * (words // 14 + 1))[: words * 6]
    return {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": text},
        ],
    }


def cases() -> dict[str, Callable[[], object]]:
    full = json.loads((DATA / "requests/completions/full.json").read_text())
    full["model"] = "gpt-4o"
    messages = json.loads((DATA / "requests/messages/cache_control.json").read_text())
    count = tokenizer.count_prompt_tokens
    short, medium, long = _chat("gpt-4o", 20), _chat("gpt-4o", 300), _chat("gpt-4o", 3000)
    medium_cl = _chat("gpt-4", 300)
    rates = {"input": "2.5", "output": "10", "cacheRead": "1.25"}
    doc = {"providers": {"openai": {"models": {"gpt-4o": {"rates": rates}}}}}
    text = json.dumps({"config": {"modelCatalog": [{"inline": doc}]}})
    catalog = load_config(text, {}, base_dir=Path.cwd()).static.model_catalog
    assert catalog is not None
    call = LLMOutcome("openai", "completions", "gpt-4o", "gpt-4o-2024-08-06", 1234, 321, 200,
                      None, None, None)  # fmt: skip
    return {
        "count chat, 2 messages ~25 tokens (o200k)": lambda: count("completions", short),
        "count chat, 2 messages ~300 tokens (o200k)": lambda: count("completions", medium),
        "count chat, 2 messages ~300 tokens (cl100k)": lambda: count("completions", medium_cl),
        "count chat, 2 messages ~3000 tokens (o200k)": lambda: count("completions", long),
        "count agentgateway fixture completions/full": lambda: count("completions", full),
        "count agentgateway fixture messages/cache_control": lambda: count(
            "messages", messages
        ),
        "price a call (catalog hit, response model)": lambda: price(catalog, call),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000, help="calls per timing")
    args = parser.parse_args()
    started = time.perf_counter()
    tokenizer.preload()
    print(f"{'preload both encodings (once, at load)':50s} {time.perf_counter() - started:8.2f} s")
    for name, fn in cases().items():
        best = min(timeit.repeat(fn, number=args.number, repeat=5))
        print(f"{name:50s} {best / args.number * 1e6:8.2f} µs")


if __name__ == "__main__":
    main()
