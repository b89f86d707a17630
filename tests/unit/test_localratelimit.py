"""localRateLimit: config, bucket arithmetic on a fake clock, answers and headers, and one
bucket shared by processes forked after it was built."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from agw_fast.config import load_config
from agw_fast.config.model import LocalRateLimit, RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.errors import ConfigError
from agw_fast.policies import PolicyRequest, compile_request_steps
from agw_fast.policies.localratelimit import build_token_limits, build_with_clock, peek, take

S = 1_000_000_000
R = "binds[0].listeners[0].routes[0].policies.localRateLimit"


def _policies(rate_limit: object) -> RoutePolicies | None:
    doc = {
        "binds": [
            {
                "port": 3000,
                "listeners": [
                    {"routes": [{"policies": {"localRateLimit": rate_limit}, "backends": []}]}
                ],
            }
        ]
    }
    config = load_config(json.dumps(doc), {}, base_dir=Path.cwd())
    return config.binds[0].listeners[0].routes[0].policies


def _error(rate_limit: object) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        _policies(rate_limit)
    return info.value


# -- config


def test_config_defaults_and_values() -> None:
    policies = _policies(
        [
            {"maxTokens": 10, "tokensPerFill": 1, "fillInterval": "60s"},
            {"fillInterval": "1.5s", "type": "requests"},
            {"maxTokens": 5000, "tokensPerFill": 100, "fillInterval": "1m", "type": "tokens"},
        ]
    )
    assert policies is not None
    assert policies.local_rate_limit == (
        LocalRateLimit(10, 1, 60 * S, "requests"),
        LocalRateLimit(0, 0, 1_500_000_000, "requests"),
        LocalRateLimit(5000, 100, 60 * S, "tokens"),
    )


def test_empty_list_is_no_policy() -> None:
    assert _policies([]) is None
    assert compile_request_steps(RoutePolicies()) == ()


@pytest.mark.parametrize(
    ("rate_limit", "path", "message"),
    [
        ([{"maxTokens": 1}], f"{R}[0].fillInterval", 'missing required field "fillInterval"'),
        ([{"maxTokens": 1, "fillInterval": "0s"}], f"{R}[0].fillInterval", "greater than 0"),
        ([{"maxTokens": 1, "fillInterval": "1x"}], f"{R}[0].fillInterval", "invalid duration"),
        ([{"maxTokens": -1, "fillInterval": "1s"}], f"{R}[0].maxTokens", "must be in"),
        ([{"maxTokens": 2**64, "fillInterval": "1s"}], f"{R}[0].maxTokens", "must be in"),
        ([{"maxTokens": "5", "fillInterval": "1s"}], f"{R}[0].maxTokens", "an integer"),
        (
            [{"maxTokens": 1, "tokensPerFill": 2, "fillInterval": "1s"}],
            f"{R}[0]",
            "maxTokens cannot be less than tokensPerFill",
        ),
        ([{"fillInterval": "1s", "type": "bytes"}], f"{R}[0].type", "bytes"),
        ([{"fillInterval": "1s", "burst": 3}], f"{R}[0].burst", 'unknown field "burst"'),
        ({"maxTokens": 1, "fillInterval": "1s"}, f"{R}.maxTokens", 'unknown field "maxTokens"'),
        ({}, f"{R}.conditional", 'missing required field "conditional"'),
        ("10/s", R, "expected a list"),
        ({"conditional": []}, f"{R}.conditional", "at least one entry"),
        (
            {"conditional": [{"fillInterval": "1s"}] * 65},
            f"{R}.conditional",
            "at most 64 entries",
        ),
        (
            {"conditional": [{"fillInterval": "1s"}, {"condition": "true", "fillInterval": "1s"}]},
            f"{R}.conditional[0]",
            "entries without condition must be last",
        ),
        (
            {"conditional": [{"condition": 1, "fillInterval": "1s"}]},
            f"{R}.conditional[0].condition",
            "expected a string",
        ),
        (
            {"conditional": [{"condition": "true", "fillInterval": "0s"}]},
            f"{R}.conditional[0].fillInterval",
            "greater than 0",
        ),
        (
            {"conditional": [{"condition": "true", "fillInterval": "1s", "burst": 1}]},
            f"{R}.conditional[0].burst",
            'unknown field "burst"',
        ),
        (
            {"conditional": [{"condition": "true", "fillInterval": "1s", "type": "bytes"}]},
            f"{R}.conditional[0].type",
            'expected one of "requests", "tokens", got "bytes"',
        ),
        ([{"condition": "true", "fillInterval": "1s"}], f"{R}[0].condition", "unknown field"),
    ],
)
def test_config_errors(rate_limit: object, path: str, message: str) -> None:
    error = _error(rate_limit)
    assert error.path == path
    assert message in error.message


def test_conditional_config() -> None:
    policies = _policies(
        {
            "conditional": [
                {"condition": 'request.path == "/a"', "maxTokens": 2, "fillInterval": "1s"},
                {"maxTokens": 5, "tokensPerFill": 5, "fillInterval": "1m"},
            ]
        }
    )
    assert policies is not None
    assert policies.local_rate_limit == (
        LocalRateLimit(2, 0, S, "requests", 'request.path == "/a"', f"{R}.conditional[0]"),
        LocalRateLimit(5, 5, 60 * S, "requests", None, f"{R}.conditional[1]"),
    )


def test_a_bad_condition_fails_when_the_plan_is_built_naming_its_field() -> None:
    policies = _policies({"conditional": [{"condition": "request.nope(", "fillInterval": "1s"}]})
    with pytest.raises(ConfigError) as caught:
        compile_request_steps(policies)
    assert str(caught.value).startswith(
        f"{R}.conditional[0].condition: invalid CEL expression: "
    )


# -- bucket arithmetic (agentgateway's ratelimiter: fixed refill grid, lazy, capped)


def test_take_until_empty_then_refill_on_the_grid() -> None:
    cells = [3, 10 * S]  # full bucket of 3, first refill due at t=10s
    assert take(cells, 0, 3, 1, 10 * S, 0) == (True, 2, 10 * S)
    assert take(cells, 0, 3, 1, 10 * S, 1 * S) == (True, 1, 9 * S)
    assert take(cells, 0, 3, 1, 10 * S, 2 * S) == (True, 0, 8 * S)
    assert take(cells, 0, 3, 1, 10 * S, 9 * S) == (False, 0, 1 * S)
    # At 10s one token arrives and the next refill is at 20s.
    assert take(cells, 0, 3, 1, 10 * S, 10 * S) == (True, 0, 10 * S)
    assert cells == [0, 20 * S]
    # Late by 2.5 intervals: 3 refills (20s, 30s, 40s) are due at 45s, capped at 3.
    assert take(cells, 0, 3, 1, 10 * S, 45 * S) == (True, 2, 5 * S)
    assert cells == [2, 50 * S]


def test_idle_bucket_does_not_exceed_capacity() -> None:
    cells = [5, 1 * S]
    assert take(cells, 0, 5, 5, 1 * S, 1000 * S) == (True, 4, 1 * S)


def test_zero_capacity_refuses_with_reset_zero() -> None:
    cells = [0, 1 * S]
    assert take(cells, 0, 0, 0, 1 * S, 2 * S) == (False, 0, 0)
    assert cells == [0, 1 * S]


def test_no_fill_means_a_fixed_budget() -> None:
    cells = [1, 1 * S]
    assert take(cells, 0, 1, 0, 1 * S, 0)[0]
    assert take(cells, 0, 1, 0, 1 * S, 5 * S) == (False, 0, 1 * S)


# -- the step: answers and headers


class Clock:
    def __init__(self) -> None:
        self.now = 1000 * S

    def __call__(self) -> int:
        return self.now


def _request() -> PolicyRequest:
    return PolicyRequest(b"GET", b"h", b"/", b"", [], None, "127.0.0.1:1")


def _fields(request: PolicyRequest) -> bytes:
    return b"".join(request.response_lines or ())


def _step(*limits: LocalRateLimit, clock: Clock):  # type: ignore[no-untyped-def]
    step = build_with_clock(RoutePolicies(local_rate_limit=limits), clock)
    assert step is not None
    return step


def test_allowed_requests_carry_the_headers_then_429() -> None:
    clock = Clock()
    step = _step(LocalRateLimit(2, 1, 60 * S), clock=clock)
    request = _request()
    assert step(request) is None
    assert _fields(request) == (
        b"x-ratelimit-limit: 2\r\nx-ratelimit-remaining: 1\r\nx-ratelimit-reset: 60\r\n"
    )
    clock.now += 1 * S + 1
    assert step(_request()) is None
    clock.now += 1 * S
    request = _request()
    answer = step(request)
    assert answer is not None
    assert answer.reason == Reason.RATE_LIMIT == "RateLimit"
    assert answer.response == (
        b"HTTP/1.1 429 Too Many Requests\r\ncontent-type: text/plain\r\n"
        b"x-ratelimit-limit: 2\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 57\r\n"
        b"content-length: 19\r\n\r\nrate limit exceeded"
    )
    assert request.response_lines is None
    clock.now = 1000 * S + 60 * S  # the refill is due
    assert step(_request()) is None


def test_headers_report_the_most_constrained_limit() -> None:
    clock = Clock()
    step = _step(
        LocalRateLimit(100, 1, 10 * S), LocalRateLimit(3, 3, 30 * S), clock=clock
    )
    request = _request()
    assert step(request) is None
    assert _fields(request) == (
        b"x-ratelimit-limit: 3\r\nx-ratelimit-remaining: 2\r\nx-ratelimit-reset: 30\r\n"
    )
    # A tie keeps the first limit.
    step = _step(LocalRateLimit(2, 1, 10 * S), LocalRateLimit(2, 1, 30 * S), clock=clock)
    request = _request()
    assert step(request) is None
    assert _fields(request).endswith(b"x-ratelimit-reset: 10\r\n")


def test_the_first_empty_limit_answers_and_earlier_ones_keep_their_take() -> None:
    clock = Clock()
    step = _step(LocalRateLimit(2, 1, 10 * S), LocalRateLimit(1, 1, 30 * S), clock=clock)
    assert step(_request()) is None  # 1 and 0 left
    answer = step(_request())  # the first limit gives its last token, the second has none
    assert answer is not None
    assert b"x-ratelimit-limit: 1\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 30\r\n" in (
        answer.response
    )
    # As in agentgateway, the refused request's token is not given back to the first limit.
    answer = step(_request())
    assert answer is not None
    assert b"x-ratelimit-limit: 2\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 10\r\n" in (
        answer.response
    )


def test_rate_limit_runs_before_direct_response() -> None:
    from agw_fast.config.model import DirectResponse
    from agw_fast.policies import run_steps

    steps = compile_request_steps(
        RoutePolicies(
            direct_response=DirectResponse(200, b"ok"),
            local_rate_limit=(LocalRateLimit(1, 1, 3600 * S),),
        )
    )
    request = _request()
    first = run_steps(steps, request)
    assert first is not None and first.reason == Reason.DIRECT_RESPONSE
    assert _fields(request).startswith(b"x-ratelimit-limit: 1\r\n")
    second = run_steps(steps, _request())
    assert second is not None and second.reason == Reason.RATE_LIMIT


# -- type: tokens (LLM requests: at least one token to start, usage charged at the end)


def test_peek_refills_without_taking() -> None:
    cells = [0, 10 * S]
    assert peek(cells, 0, 100, 40, 10 * S, 5 * S) == (0, 5 * S)
    assert peek(cells, 0, 100, 40, 10 * S, 25 * S) == (80, 5 * S)
    assert cells == [80, 30 * S]


def test_token_limits_need_one_token_and_charge_usage() -> None:
    clock = Clock()
    policies = RoutePolicies(
        local_rate_limit=(
            LocalRateLimit(1, 1, 60 * S),  # a requests limit: not theirs
            LocalRateLimit(100, 50, 60 * S, "tokens"),
            LocalRateLimit(1000, 1000, 3600 * S, "tokens"),
        )
    )
    limits = build_token_limits(policies, clock)
    assert limits is not None
    assert limits.check() == (
        True, b"x-ratelimit-limit: 100\r\nx-ratelimit-remaining: 100\r\nx-ratelimit-reset: 60\r\n"
    )
    limits.charge(99)  # the check itself takes nothing
    allowed, fields = limits.check()
    assert allowed and b"x-ratelimit-remaining: 1\r\n" in fields
    limits.charge(30)  # more than is left: the bucket stops at 0
    clock.now += 10 * S
    assert limits.check() == (
        False, b"x-ratelimit-limit: 100\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 50\r\n"
    )
    clock.now += 50 * S  # one refill of 50
    allowed, fields = limits.check()
    assert allowed and b"x-ratelimit-limit: 100\r\nx-ratelimit-remaining: 50\r\n" in fields
    # The other bucket lost the same 129 tokens.
    limits.charge(50)
    clock.now += 3600 * S
    assert limits.check()[0]
    assert build_token_limits(RoutePolicies(local_rate_limit=(LocalRateLimit(1, 1, S),))) is None
    assert build_token_limits(None) is None


def test_token_limits_take_a_tokenize_estimate_and_settle_the_difference() -> None:
    # agentgateway's check_llm_request with input_tokens (try_wait_n), then amend_tokens.
    clock = Clock()
    policies = RoutePolicies(
        local_rate_limit=(
            LocalRateLimit(100, 100, 60 * S, "tokens"),
            LocalRateLimit(30, 30, 3600 * S, "tokens"),
        )
    )
    limits = build_token_limits(policies, clock)
    assert limits is not None
    # 20 estimated tokens come out of both buckets; the fields are the most constrained's.
    assert limits.check(20) == (
        True, b"x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 10\r\nx-ratelimit-reset: 3600\r\n"
    )
    # The call used 15 input + 10 output: 5 more than estimated are taken.
    limits.charge(15 + 10 - 20)
    assert limits.check(6) == (
        False, b"x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 5\r\nx-ratelimit-reset: 3600\r\n"
    )
    # The first bucket gave its 6 before the second refused; agentgateway keeps them too.
    allowed, fields = limits.check(5)
    assert allowed and fields.startswith(b"x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 0\r\n")
    # An estimate above the usage is given back, never past the capacity.
    limits.charge(-5)
    assert limits.check() == (
        True, b"x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 5\r\nx-ratelimit-reset: 3600\r\n"
    )
    limits.charge(-1000)  # both buckets full again, not above
    assert limits.check()[1].startswith(b"x-ratelimit-limit: 30\r\nx-ratelimit-remaining: 30\r\n")


def test_token_limits_refuse_an_estimate_above_the_capacity() -> None:
    # try_wait_n: n > capacity can never succeed; the reset is 0 and nothing is taken.
    limits = build_token_limits(
        RoutePolicies(local_rate_limit=(LocalRateLimit(50, 50, 60 * S, "tokens"),)), Clock()
    )
    assert limits is not None
    assert limits.check(51) == (
        False, b"x-ratelimit-limit: 50\r\nx-ratelimit-remaining: 50\r\nx-ratelimit-reset: 0\r\n"
    )
    assert limits.check(50)[0]


def test_tokens_limits_make_no_request_step() -> None:
    policies = RoutePolicies(local_rate_limit=(LocalRateLimit(5, 5, S, "tokens"),))
    assert compile_request_steps(policies) == ()


# -- one bucket for processes forked after the build


def _hammer(step, n: int, results) -> None:  # type: ignore[no-untyped-def]
    allowed = sum(1 for _ in range(n) if step(_request()) is None)
    results.put(allowed)


def test_processes_forked_after_the_build_share_the_bucket() -> None:
    step = compile_request_steps(
        RoutePolicies(local_rate_limit=(LocalRateLimit(3000, 1, 3600 * S),))
    )[0]
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    workers = [ctx.Process(target=_hammer, args=(step, 2000, results)) for _ in range(4)]
    for worker in workers:
        worker.start()
    allowed = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert sum(allowed) == 3000
    assert step(_request()) is not None  # and the parent sees the empty bucket too


def test_a_process_killed_inside_the_lock_does_not_wedge_the_bucket() -> None:
    # Why a record lock and not a semaphore: the kernel releases it when its holder dies.
    parent = os.getpid()

    def clock() -> int:  # read inside the lock: the forked child dies right there
        if os.getpid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)
        return time.monotonic_ns()

    step = build_with_clock(
        RoutePolicies(local_rate_limit=(LocalRateLimit(5, 1, 3600 * S),)), clock
    )
    assert step is not None
    child = multiprocessing.get_context("fork").Process(target=step, args=(_request(),))
    child.start()
    child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL
    def wedged(signum: int, frame: object) -> None:
        raise TimeoutError("the bucket's lock was never released")

    previous = signal.signal(signal.SIGALRM, wedged)
    signal.alarm(10)  # a wedged lock would block forever: fail the test instead
    try:
        request = _request()
        assert step(request) is None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert _fields(request).startswith(b"x-ratelimit-limit: 5\r\nx-ratelimit-remaining: 4\r\n")


# -- conditional entries (store/policy.rs RequestPolicy::select: the first that matches)


def _conditional_step(clock: Clock):  # type: ignore[no-untyped-def]
    policies = _policies(
        {
            "conditional": [
                {
                    "condition": 'request.headers["x-tier"] == "free"',
                    "maxTokens": 1, "tokensPerFill": 1, "fillInterval": "10s",
                },
                {
                    "condition": 'request.path.startsWith("/api")',
                    "maxTokens": 3, "tokensPerFill": 1, "fillInterval": "20s",
                },
            ]
        }
    )
    assert policies is not None
    return _step(*policies.local_rate_limit, clock=clock)


def _tier(tier: bytes | None, path: bytes = b"/api") -> PolicyRequest:
    headers = [] if tier is None else [(b"x-tier", tier)]
    return PolicyRequest(b"GET", b"h", path, b"", headers, None, "127.0.0.1:1")


def test_conditional_first_matching_entry_is_the_only_limit() -> None:
    clock = Clock()
    step = _conditional_step(clock)
    request = _tier(b"free")  # both conditions hold: the first entry alone applies
    assert step(request) is None
    assert _fields(request) == (
        b"x-ratelimit-limit: 1\r\nx-ratelimit-remaining: 0\r\nx-ratelimit-reset: 10\r\n"
    )
    assert request.response_replaces is not None
    answer = step(_tier(b"free"))
    assert answer is not None and answer.reason == Reason.RATE_LIMIT
    assert b"x-ratelimit-limit: 1\r\nx-ratelimit-remaining: 0\r\n" in answer.response
    # The second entry's bucket was not touched by the free tier's requests.
    request = _tier(b"paid")
    assert step(request) is None
    assert _fields(request) == (
        b"x-ratelimit-limit: 3\r\nx-ratelimit-remaining: 2\r\nx-ratelimit-reset: 20\r\n"
    )
    # A condition that fails to evaluate (no x-tier header) is false: the next entry applies.
    request = _tier(None)
    assert step(request) is None
    assert b"x-ratelimit-remaining: 1\r\n" in _fields(request)


def test_conditional_without_a_match_is_not_limited_and_adds_no_fields() -> None:
    step = _conditional_step(Clock())
    for _ in range(5):
        request = _tier(None, b"/other")
        assert step(request) is None
        assert request.response_lines is None and request.response_replaces is None


def test_conditional_fallback_applies_when_nothing_else_matches() -> None:
    policies = _policies(
        {
            "conditional": [
                {"condition": "false", "maxTokens": 9, "fillInterval": "1s"},
                {"maxTokens": 1, "fillInterval": "1s"},
            ]
        }
    )
    assert policies is not None
    step = _step(*policies.local_rate_limit, clock=Clock())
    request = _request()
    assert step(request) is None
    assert b"x-ratelimit-limit: 1\r\n" in _fields(request)
    assert step(_request()) is not None


# -- conditional `type: tokens` entries: selected at the request step, used by the LLM call


def _mixed_policies() -> RoutePolicies:
    policies = _policies(
        {
            "conditional": [
                {
                    "condition": 'request.headers["x-tier"] == "free"', "type": "tokens",
                    "maxTokens": 100, "tokensPerFill": 100, "fillInterval": "60s",
                },
                {
                    "condition": 'request.headers["x-tier"] == "paid"', "type": "tokens",
                    "maxTokens": 1000, "tokensPerFill": 1000, "fillInterval": "60s",
                },
                {"maxTokens": 2, "tokensPerFill": 1, "fillInterval": "10s"},
            ]
        }
    )
    assert policies is not None
    return policies


def test_conditional_tokens_entry_is_recorded_on_the_request() -> None:
    clock = Clock()
    policies = _mixed_policies()
    # Conditional tokens limits are per request: the route has no static ones.
    assert build_token_limits(policies, clock) is None
    step = _step(*policies.local_rate_limit, clock=clock)
    free = _tier(b"free")
    assert step(free) is None
    # Selecting a tokens entry takes nothing and adds no fields at the request step.
    assert free.response_lines is None and free.response_replaces is None
    assert free.token_limits is not None
    assert free.token_limits.check() == (
        True, b"x-ratelimit-limit: 100\r\nx-ratelimit-remaining: 100\r\nx-ratelimit-reset: 60\r\n"
    )
    again = _tier(b"free")
    step(again)
    assert again.token_limits is free.token_limits  # one bucket for all free-tier requests
    free.token_limits.charge(150)
    assert free.token_limits.check()[0] is False
    paid = _tier(b"paid")
    step(paid)
    assert paid.token_limits is not None and paid.token_limits is not free.token_limits
    assert paid.token_limits.check() == (
        True, b"x-ratelimit-limit: 1000\r\nx-ratelimit-remaining: 1000\r\nx-ratelimit-reset: 60\r\n"
    )
    # The requests fallback still counts requests, and records no tokens limit.
    for expected in (b"1", b"0"):
        other = _tier(None)
        assert step(other) is None and other.token_limits is None
        assert b"x-ratelimit-remaining: %s\r\n" % expected in _fields(other)
    answer = step(_tier(None))
    assert answer is not None and answer.reason == Reason.RATE_LIMIT
    # The tokens entries' charges did not touch the fallback's bucket, nor it theirs.
    clock.now += 60 * S
    assert free.token_limits.check()[0]


def test_conditional_tokens_only_route_has_a_step() -> None:
    policies = _policies(
        {"conditional": [{"condition": "true", "type": "tokens", "fillInterval": "1s"}]}
    )
    assert policies is not None
    steps = compile_request_steps(policies)
    assert len(steps) == 1
    request = _request()
    assert steps[0](request) is None and request.token_limits is not None
    # maxTokens 0: no token ever, so every LLM call is refused.
    assert request.token_limits.check()[0] is False
