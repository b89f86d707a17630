"""The shared-limits file and the per-worker limiter's decisions (Redis itself: the e2e test)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from agw_fast.config.limits import LeaseSettings, load_limits
from agw_fast.errors import ConfigError
from agw_fast.policies.shared_limits import ALLOW, FAIL, REFUSE, BucketSpec, Limiter

URL = 'redis: {url: "redis://127.0.0.1:6379/0"}\n'


def _load(text: str) -> object:
    return load_limits(text, {}, Path.cwd(), "limits.yaml")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("shareLocalRateLimits: true\n", "limits.yaml.redis: required"),
        ('redis: {url: "http://x"}\nshareLocalRateLimits: true\n', "redis.url: expected a redis"),
        (URL + "shareLocalRateLimits: true\nextra: 1\n", "limits.yaml.extra: unknown field"),
        (URL, "nothing to share"),
        (URL + "failureMode: maybe\nshareLocalRateLimits: true\n", 'expected one of "failClosed"'),
        (URL + "budgets:\n- {name: a, maxTokens: 1, fillInterval: 1s}\n"
         "- {name: a, maxTokens: 1, fillInterval: 1s}\n", "duplicate budget name"),
        (URL + "budgets:\n- {name: a, maxTokens: 1, tokensPerFill: 2, fillInterval: 1s}\n",
         "maxTokens cannot be less than tokensPerFill"),
        (URL + "budgets:\n- {name: a, maxTokens: 1, fillInterval: 1s, type: coins}\n",
         "budgets[0].type"),
    ],
)
def test_bad_limits_files_are_refused_with_the_field(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        _load(text)
    assert message in str(error.value)


def test_a_valid_file_and_its_defaults() -> None:
    config = _load(
        URL + "budgets:\n- {name: per-key, key: apiKey.key, type: tokens, maxTokens: 1000,"
        " fillInterval: 1h, routes: [llm]}\n"
    )
    assert config.failure_mode == "failClosed"  # as remoteRateLimit's default
    assert config.redis.key_prefix == "agw-fast:"
    (budget,) = config.budgets
    assert (budget.kind, budget.tokens_per_fill, budget.routes) == ("tokens", 1000, ("llm",))


def test_missing_redis_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "redis" else real(name, *a)
    )
    with pytest.raises(ConfigError) as error:
        _load(URL + "shareLocalRateLimits: true\n")
    assert "pip install 'agw-fast[redis]'" in str(error.value)


def test_cli_refuses_a_bad_limits_file_in_one_line(tmp_path: Path) -> None:
    limits = tmp_path / "limits.yaml"
    limits.write_text(URL + "budgets:\n- {name: a, key: 'nope(', maxTokens: 1, fillInterval: 1s}\n")
    config = "binds: [{port: 0, listeners: [{routes: [{backends: [{host: '127.0.0.1:1'}]}]}]}]"
    done = subprocess.run(
        [sys.executable, "-m", "agw_fast", "-c", config, "--limits", str(limits),
         "--validate-only"],
        capture_output=True, text=True, check=False,
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("config error: ")
    assert "budgets[0].key: invalid CEL expression" in lines[0]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _limiter(credit: int = 2, size: int = 8, fail_open: bool = False) -> tuple[Limiter, Clock]:
    clock = Clock()
    lease = LeaseSettings(size=size, credit=credit, idle=2.0, retry=1.0)
    return Limiter(lease, fail_open, "p:", clock), clock


SPEC = BucketSpec("b", 100, 100, 60_000, "requests")


def test_credit_then_lease_then_known_empty() -> None:
    limiter, clock = _limiter()
    slot = limiter.slot(SPEC, "alice", clock())
    assert slot.redis_key.startswith("p:b:") and "alice" not in slot.redis_key
    # Before Redis answers: the credit, then refusals (never more than `credit` unconfirmed).
    assert [limiter.take(slot, clock()) for _ in range(3)] == [ALLOW, ALLOW, REFUSE]
    ((sent, args),) = limiter.begin_batch()
    # It ran dry before Redis answered: it asks for twice `lease.size`; owes 2, gives back 0.
    assert sent is slot and args[3:6] == (16, 2, 0)
    limiter.complete_batch([(sent, args)], [[16, 82, 30_000]], clock())
    assert (slot.lease, slot.credit, slot.available) == (16, 0, 82)
    assert [limiter.take(slot, clock()) for _ in range(16)] == [ALLOW] * 16
    batch = limiter.begin_batch()  # the prefetch asked on the way
    # The bucket ran dry: the reply says so, and no credit is used until the refill.
    limiter.complete_batch(batch, [[0, 0, 30_000]], clock())
    assert limiter.take(slot, clock()) == REFUSE
    assert b"x-ratelimit-remaining: 0" in slot.fields(clock())
    clock.now += 31  # past the refill: credit again
    assert limiter.take(slot, clock()) == ALLOW


def test_failure_modes_and_a_failed_batch_keeps_what_is_owed() -> None:
    for fail_open, expected in ((False, FAIL), (True, ALLOW)):
        limiter, clock = _limiter(fail_open=fail_open)
        slot = limiter.slot(SPEC, "", clock())
        assert limiter.take(slot, clock()) == ALLOW  # credit
        batch = limiter.begin_batch()
        limiter.fail_batch(batch)
        assert limiter.down and slot.owed == 1 and slot.dirty
        assert limiter.take(slot, clock()) == expected
        # Back up: the owed request (and a failOpen one) go in the next batch.
        batch = limiter.begin_batch()
        assert batch[0][1][4] == (2 if fail_open else 1)
        limiter.complete_batch(batch, [[8, 90, 1000]], clock())
        assert not limiter.down and limiter.take(slot, clock()) == ALLOW


def test_idle_leases_go_back_and_capacity_zero_refuses() -> None:
    limiter, clock = _limiter()
    slot = limiter.slot(SPEC, "k", clock())
    limiter.take(slot, clock())
    limiter.complete_batch(limiter.begin_batch(), [[8, 90, 1000]], clock())
    clock.now += 3
    limiter.sweep(clock())
    ((_, args),) = limiter.begin_batch()
    assert args[3] == 0 and args[5] == 8  # no new lease, 8 tokens given back
    empty = BucketSpec("z", 0, 0, 1000, "requests")
    assert limiter.take(limiter.slot(empty, "", clock()), clock()) == REFUSE


def test_token_buckets_check_on_credit_and_charge_usage() -> None:
    limiter, clock = _limiter(credit=1)
    spec = BucketSpec("t", 100, 100, 60_000, "tokens")
    slot = limiter.slot(spec, "team", clock())
    assert limiter.check_tokens(slot, clock())
    assert not limiter.check_tokens(slot, clock())  # past the credit until Redis answers
    limiter.charge(slot, 150)
    ((_, args),) = limiter.begin_batch()
    assert args[3:5] == (0, 150)  # no lease for tokens; the usage is owed
    limiter.complete_batch(limiter_batch := [(slot, args)], [[0, 0, 50_000]], clock())
    assert limiter_batch and not limiter.check_tokens(slot, clock())  # spent until refill
