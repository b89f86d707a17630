"""`config.modelCatalog` and the cost of a call, with the figures of agentgateway's own catalog
tests (crates/agentgateway/src/llm/catalog/): parsing and merging the sources, the usage split
by cache convention, tiers, fallbacks, the access-log field and the summed counters."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.config.model_catalog import CatalogModel, ModelCatalog, Rates, Tier
from agw_fast.errors import ConfigError
from agw_fast.llm.cost import (
    EXACT,
    MISSING,
    UNPRICED,
    Usage,
    breakdown,
    format_amount,
    price,
    usage_for,
)
from agw_fast.llm.exchange import LLMOutcome
from agw_fast.telemetry.access_log import AccessLog
from agw_fast.telemetry.metrics import MetricsRegistry, Snapshot
from agw_fast.telemetry.prometheus import render_prometheus
from agw_fast.telemetry.recorder import Recorder
from agw_fast.telemetry.shared_slots import SharedSlots
from tests.unit.test_recorder import ROUTE, record


def catalog(doc: object, base_dir: Path = Path("/nonexistent")) -> ModelCatalog:
    text = json.dumps({"config": {"modelCatalog": doc}})
    loaded = load_config(text, {}, base_dir=base_dir).static.model_catalog
    assert loaded is not None
    return loaded


def priced(models: dict[str, object], provider: str = "openai") -> ModelCatalog:
    return catalog([{"inline": {"providers": {provider: {"models": models}}}}])


def outcome(
    input_tokens: int | None = None,
    output_tokens: int | None = None,
    cached: int | None = None,
    *,
    model: str = "m",
    response_model: str | None = None,
    provider: str = "openai",
    reasoning: int | None = None,
    cache_write: int | None = None,
    excludes_cache: bool = False,
) -> LLMOutcome:
    return LLMOutcome(
        provider, "completions", model, response_model, input_tokens, output_tokens, cached,
        None, None, None, reasoning, cache_write, excludes_cache,
    )  # fmt: skip


def D(text: str) -> Decimal:  # noqa: N802
    return Decimal(text)


# -- the price arithmetic --------------------------------------------------------------------


def test_breakdown_components_sum_to_the_price() -> None:
    rates = Rates(D("3"), D("15"), D("0.3"), D("3.75"), D("15"), D("40"), D("80"))
    cost = breakdown(rates, Usage(1000, 2000, 500, 500, 100, 50, 25))
    assert cost == (
        D("0.003"), D("0.0006"), D("0.001875"), D("0.0075"), D("0.0015"), D("0.002"),
        D("0.002"),
    )  # fmt: skip
    assert format_amount(cost.total()) == "0.018475"


def test_missing_modality_rates_fall_back_and_missing_cache_rates_cost_nothing() -> None:
    cost = breakdown(Rates(D("3"), D("15")), Usage(1000, 5000, 0, 500, 2000, 100, 50))
    assert cost.reasoning == D("0.03")  # the output rate
    assert cost.input_audio == D("0.0003")  # the input rate
    assert cost.output_audio == D("0.00075")
    assert cost.cache_read == 0


def test_sub_micro_amounts_are_exact_and_written_without_exponent() -> None:
    cost = breakdown(Rates(input=D("0.075")), Usage(input=333))
    assert format_amount(cost.total()) == "0.000024975"


def test_a_tier_reprices_the_whole_call() -> None:
    model = CatalogModel(Rates(D("1.25"), D("10")), (Tier(200_000, Rates(D("2.5"), D("15"))),))
    cat = ModelCatalog({"openai": {"m": model}})

    def total(tokens: int) -> str:
        status, cost = price(cat, outcome(tokens, 1000))
        assert status == EXACT and cost is not None
        return format_amount(cost.total())

    assert total(100_000) == "0.135"
    assert total(200_000) == "0.26"  # at the threshold: still the base
    assert total(250_000) == "0.640"  # rust_decimal keeps the scale of the sum's terms


def test_openai_counts_include_the_cache_anthropic_counts_exclude_it() -> None:
    inclusive = usage_for(outcome(1000, 800, 300, reasoning=500), True, True)
    assert inclusive == Usage(700, 300, 0, 300, 500)
    exclusive = usage_for(outcome(1000, 500, 300, cache_write=200, excludes_cache=True),
                          True, True)  # fmt: skip
    assert exclusive == Usage(1000, 300, 200, 500)
    # Without cache rates the cache is billed as input, never dropped.
    folded = usage_for(outcome(1000, 500, 300, cache_write=200, excludes_cache=True),
                       False, False)  # fmt: skip
    assert folded == Usage(1500, 0, 0, 500)


def test_cache_without_a_rate_is_billed_at_the_input_rate() -> None:
    status, cost = price(priced({"m": {"rates": {"input": "10"}}}),
                         outcome(1_000_000, cached=400_000))  # fmt: skip
    assert status == EXACT and cost is not None and cost.total() == 10
    anthropic = priced({"m": {"rates": {"input": "10", "output": "30"}}}, "anthropic")
    status, cost = price(
        anthropic,
        outcome(600_000, 0, 400_000, provider="anthropic", excludes_cache=True),
    )
    assert status == EXACT and cost is not None and cost.total() == 10


def test_a_cache_read_rate_applies_in_its_tier_only() -> None:
    cat = priced({"m": {"rates": {"input": "10"},
                        "tiers": [{"contextOver": 200000, "rates": {"cacheRead": "1"}}]}})
    _, below = price(cat, outcome(100_000, cached=40_000))
    assert below is not None and below.total() == D("1")
    _, above = price(cat, outcome(300_000, cached=100_000))
    assert above is not None and format_amount(above.total()) == "2.1"


def test_lookup_statuses_and_the_request_model_fallback() -> None:
    cat = priced({"my-model": {"rates": {"input": "1", "output": "2"}},
                  "listed": {"rates": {}},
                  "tier-only": {"tiers": [{"contextOver": 10, "rates": {"input": "1"}}]}})
    # The response's model first; a model the catalog lacks falls back to the requested one.
    status, cost = price(cat, outcome(1_000_000, 500_000, model="my-model",
                                      response_model="my-model-2026-01"))  # fmt: skip
    assert status == EXACT and cost is not None and cost.total() == 2
    # A listed model without rates is unpriced (not free), and stops the fallback.
    assert price(cat, outcome(5, 5, model="my-model", response_model="listed")) == (
        UNPRICED, None
    )
    assert price(cat, outcome(5, 5, model="tier-only"))[0] == UNPRICED
    assert price(cat, outcome(50, 5, model="tier-only"))[0] == EXACT
    assert price(cat, outcome(5, 5, model="nope")) == (MISSING, None)
    assert price(cat, outcome(5, 5, model="my-model", provider="custom")) == (MISSING, None)


# -- the config -----------------------------------------------------------------------------


def test_sources_merge_in_order(tmp_path: Path) -> None:
    (tmp_path / "base.json").write_text(json.dumps({"providers": {"openai": {"models": {
        "gpt-5": {"rates": {"input": "1.25", "output": "10"}, "tags": ["a"]},
        "gpt-4o": {"rates": {"input": "2.5", "output": "10"}},
    }}}}))  # fmt: skip
    cat = catalog(
        [
            {"file": "base.json"},
            {"file": "missing.json"},  # skipped: agentgateway loads it once it appears
            {"inline": json.dumps({"providers": {"openai": {"models": {
                "gpt-5": {"rates": {"output": "8"}, "tags": ["b"]}}}}})},
        ],
        tmp_path,
    )
    gpt5 = cat.resolve("openai", "gpt-5")
    assert gpt5 is not None
    assert (gpt5.rates.input, gpt5.rates.output, gpt5.tags) == (D("1.25"), D("8"), {"a", "b"})
    gpt4o = cat.resolve("openai", "gpt-4o")
    assert gpt4o is not None and gpt4o.rates.input == D("2.5")
    assert cat.missing == ("missing.json",)
    # The admin's /config_dump deep-copies the config: the catalog must survive it.
    dumped = json.dumps(dataclasses.asdict(cat), default=str)
    assert '"input": "1.25"' in dumped


@pytest.mark.parametrize(
    ("doc", "path", "message"),
    [
        ([{"file": "none.json"}], "config.modelCatalog",
         "no configured model catalog sources are currently readable; missing files: none.json"),
        ({"file": "x"}, "config.modelCatalog", "expected a list, got map"),
        ([{"url": "x"}], "config.modelCatalog[0]", "expected one of {file: path}"),
        ([{"inline": "{"}], "config.modelCatalog[0].inline", "invalid inline model catalog: "),
        ([{"inline": '{"providers":{"openai":{"models":{"m":{"rates":{"input":1}}}}}}'}],
         "config.modelCatalog[0].inline",
         "invalid inline model catalog at providers.openai.models.m.rates.input: expected a "
         'decimal string such as "2.5", got int'),
        ([{"inline": {"providers": {"openai": {"models": {"m": {"rates": {"input": "-1"}}}}}}}],
         "config.modelCatalog[0].inline.providers.openai.models.m.rates.input",
         "negative rate not allowed: '-1'"),
        ([{"inline": {"providers": {"o": {"models": {"m": {"rates": {"input": "0.1234567"}}}}}}}],
         "config.modelCatalog[0].inline.providers.o.models.m.rates.input",
         "more than 6 fractional digits: '0.1234567'"),
        ([{"inline": {"providers": {"o": {"models": {"m": {"rates": {"input": "1e3"}}}}}}}],
         "config.modelCatalog[0].inline.providers.o.models.m.rates.input",
         "invalid decimal '1e3'"),
        ([{"inline": {"providers": {"o": {"models": {"m": {"limits": {}}}}}}}],
         "config.modelCatalog[0].inline.providers.o.models.m.limits",
         'unknown field "limits" (expected one of: rates, tiers, tags)'),
        ([{"inline": {"providers": {"o": {"models": {"m": {"tiers": [
            {"contextOver": 10, "rates": {}}, {"contextOver": 10, "rates": {}}]}}}}}}],
         "config.modelCatalog[0].inline.providers.o.models.m.tiers[1]",
         "tier 1 threshold 10 not strictly greater than previous"),
    ],
)
def test_invalid_catalogs_are_refused_with_their_field(
    doc: object, path: str, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        catalog(doc)
    assert info.value.path == path
    assert message in str(info.value)


# -- the access log and the counters ----------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    new = asyncio.new_event_loop()
    yield new
    new.close()


def test_cost_in_the_access_line_and_the_counters(loop: asyncio.AbstractEventLoop) -> None:
    cat = priced({"gpt-4o": {"rates": {"input": "2.5", "output": "10"}}})
    registry = MetricsRegistry()
    recorder = Recorder(registry, AccessLog(loop, "text", fd=-1), None, cat)
    call = outcome(1000, 200, model="gpt-4o", response_model="gpt-4o")
    recorder.record(record(protocol="llm", llm=call))
    recorder.record(record(protocol="llm", llm=call._replace(request_model="other",
                                                              response_model=None)))
    assert recorder.access_log is not None
    first, second = recorder.access_log.lines
    # 1000 * 2.5 / 1e6 + 200 * 10 / 1e6, after agw.ai.time_per_output_token's place.
    assert "gen_ai.usage.output_tokens=200 agw.ai.usage.cost.total=0.0045 duration=" in first
    assert "agw.ai.usage.cost" not in second  # unpriced: no field
    other = registry.snapshot()
    assert other.cost == {ROUTE.values + ("chat", "openai", "gpt-4o", "gpt-4o"): 0.0045}
    assert sorted(other.cost_lookups.items()) == [
        (ROUTE.values + ("chat", "openai", "gpt-4o", "gpt-4o", "Exact"), 1.0),
        (ROUTE.values + ("chat", "openai", "other", "unknown", "Missing"), 1.0),
    ]
    text = render_prometheus([other, other]).decode()  # two workers' slots, summed
    assert (
        'agentgateway_gen_ai_client_cost_usd_total{gen_ai_operation_name="chat",'
        'gen_ai_system="openai",gen_ai_request_model="gpt-4o",gen_ai_response_model="gpt-4o",'
        'bind="bind/3000",gateway="default/default",listener="listener0",'
        'route="default/route0",route_rule="unknown"} 0.009'
    ) in text
    assert 'agentgateway_cost_catalog_lookups_total{status="Missing",' in text


def test_json_access_line_carries_the_total_as_a_string(loop: asyncio.AbstractEventLoop) -> None:
    cat = priced({"m": {"rates": {"input": "0.075"}}})
    recorder = Recorder(MetricsRegistry(), AccessLog(loop, "json", fd=-1), None, cat)
    recorder.record(record(protocol="llm", llm=outcome(333)))
    assert recorder.access_log is not None
    (line,) = recorder.access_log.lines
    assert json.loads(line)["agw.ai.usage.cost.total"] == "0.000024975"


def test_no_catalog_no_cost_series() -> None:
    recorder = Recorder(MetricsRegistry(), None)
    recorder.record(record(protocol="llm", llm=outcome(10, 10)))
    snap = recorder.registry.snapshot()
    assert snap.cost == {} and snap.cost_lookups == {}
    assert b"cost" not in render_prometheus([snap])
    assert Snapshot.merge([snap]).cost == {}


def test_cost_counters_live_in_the_shared_slot() -> None:
    # What /metrics reads: a worker's slot, kept by the worker that replaces it.
    slots = SharedSlots(1, 64 * 1024)
    registry = MetricsRegistry(slots.writer(0))
    key = ROUTE.values + ("chat", "openai", "m", "m")
    registry.record_cost(key, "Exact", 0.25)
    registry.record_cost(key, "Exact", 0.5)
    registry.record_cost(key, "Unpriced", None)
    snap = slots.read(0)
    assert snap is not None
    assert snap.cost == {key: 0.75}
    assert snap.cost_lookups == {key + ("Exact",): 2.0, key + ("Unpriced",): 1.0}
    again = MetricsRegistry(slots.writer(0))  # a replacement worker continues the totals
    again.record_cost(key, "Exact", 0.25)
    snap = slots.read(0)
    assert snap is not None and snap.cost == {key: 1.0}
