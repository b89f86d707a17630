"""`localRateLimit`: token buckets that hold across every worker process.

Semantics follow agentgateway (crates/agentgateway/src/http/localratelimit.rs and its fork of
pelikan's ratelimiter there):
  * a bucket starts full (`maxTokens`) and its first refill is one `fillInterval` after load;
    refills happen on that fixed grid, lazily: the first request after one or more due
    refills adds `tokensPerFill` per elapsed interval, capped at `maxTokens`;
  * each `type: requests` limit of the route takes one token per request, in config order;
    the first limit without a token answers 429 `rate limit exceeded` with that limit's
    `x-ratelimit-limit` (capacity), `-remaining` and `-reset` (whole seconds to the next
    refill). Tokens the limits before it took are not given back, as in agentgateway;
  * an allowed request's response carries the same three fields for the most constrained
    limit: the fewest tokens left, the first such limit on a tie (`most_constrained`);
  * a limit whose capacity is 0 refuses everything, with reset 0 (`try_wait_n`, n > capacity);
  * `type: tokens` limits (`TokenLimits`) apply to LLM exchanges only: once the request is
    parsed each needs one token left (nothing taken), or with `tokenize` takes the prompt's
    estimate; the call's input + output usage (less any estimate) is taken when it ends,
    never below 0 (`check_llm_request`, `amend_tokens` in llm/mod.rs);
  * a limited route's responses carry these fields in place of the upstream's own;
  * `conditional` entries (`RequestPolicy::select`, store/policy.rs): each is one bucket; the
    first entry whose CEL condition is true (or the last, condition-less fallback) is the
    request's only limit, and a request no entry selects is not limited at all. A selected
    `type: tokens` entry takes nothing at the request step; it is recorded on the request
    (`PolicyRequest.token_limits`) and the LLM exchange checks and charges it in place of the
    route's (httpproxy.rs keeps the selected entry in `llm_request_policies`).

Sharing: `build` runs when the config is compiled, which `serve()` does in the supervisor
before it forks the workers. Each route's buckets live in one memfd mapped MAP_SHARED, so all
workers (and any worker the supervisor forks again later) count in the same words; there is
no message per request. Python has no compare-and-swap on shared memory, so a request takes
a POSIX record lock (fcntl) on that memfd around its read-modify-write of the route's buckets
(one lock for all of them: one pair of system calls per request, however many limits).
Measured uncontended: a lock/unlock pair of fcntl costs ~0.8 µs where a multiprocessing
semaphore costs ~0.07 µs, but the kernel drops a record lock when its holder dies: a worker
killed by SIGKILL (OOM killer, the drain deadline) inside the few microseconds it holds the
lock would otherwise leave every worker blocked on that route for good. Record locks belong
to the process, not to the file description that fork shares, so the workers exclude each
other through the one inherited descriptor. The clock is CLOCK_MONOTONIC, system-wide on
Linux, so every process reads the same timeline.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import time
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from agw_fast.config.model import LocalRateLimit, RoutePolicies
from agw_fast.config.validate import join
from agw_fast.core.cel import CelCompileError, CelProgram, activation, compile_expression
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyAnswer, PolicyRequest, RequestStep

__all__ = [
    "RATE_LIMIT_FIELDS",
    "Cells",
    "SharedBuckets",
    "TokenLimits",
    "build",
    "build_token_limits",
    "build_with_clock",
    "bucket_files",
    "peek",
    "take",
]

_WORDS = 2  # per bucket: tokens available, next refill time (monotonic ns)
_NS = 1_000_000_000
_LIMITED_BODY = b"rate limit exceeded"  # ProxyError::RateLimitExceeded's text
# The fields a limited route's responses carry; an upstream's own are replaced by them.
RATE_LIMIT_FIELDS = frozenset(
    {b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"}
)
_FIELDS = b"x-ratelimit-limit: %d\r\nx-ratelimit-remaining: %d\r\nx-ratelimit-reset: %d\r\n"


class Cells(Protocol):
    """Words of shared memory (a memoryview cast to "Q"), or a list in tests."""

    def __getitem__(self, index: int, /) -> int: ...
    def __setitem__(self, index: int, value: int, /) -> None: ...


def take(
    cells: Cells, at: int, capacity: int, per_fill: int, interval: int, now: int
) -> tuple[bool, int, int]:
    """Take one token from the bucket at `cells[at:at + 2]` at time `now` (ns).

    Returns (taken, tokens left, ns until the next refill). The caller holds the lock.
    """
    available = cells[at]
    if capacity == 0:
        # agentgateway refuses a request for more tokens than the capacity before any refill.
        return False, available, 0
    refill_at = cells[at + 1]
    if now >= refill_at:
        intervals = (now - refill_at) // interval + 1
        refill_at += intervals * interval
        available = min(capacity, available + intervals * per_fill)
        cells[at + 1] = refill_at
        if available == 0:
            cells[at] = 0
            return False, 0, refill_at - now
    elif available == 0:
        return False, 0, refill_at - now
    available -= 1
    cells[at] = available
    return True, available, refill_at - now


def peek(
    cells: Cells, at: int, capacity: int, per_fill: int, interval: int, now: int
) -> tuple[int, int]:
    """Refill the bucket if due and return (tokens available, ns until the next refill)."""
    available = cells[at]
    refill_at = cells[at + 1]
    if now >= refill_at:
        intervals = (now - refill_at) // interval + 1
        refill_at += intervals * interval
        available = min(capacity, available + intervals * per_fill)
        cells[at] = available
        cells[at + 1] = refill_at
    return available, refill_at - now


class SharedBuckets:
    """The buckets of one route, in a MAP_SHARED memfd that also carries their lock."""

    __slots__ = ("__weakref__", "_mm", "cells", "fd")

    def __init__(self, limits: Sequence[LocalRateLimit], now: int) -> None:
        size = max(8 * _WORDS * len(limits), 8)
        files = _FILES
        adopted = files is not None and files.adopt is not None
        if files is not None and files.adopt is not None:
            # A worker compiling a reloaded config: the parent made this route's buckets
            # (and filled them) when it compiled the same config, and sent the descriptors.
            if not files.adopt:
                raise RuntimeError("fewer rate-limit buckets received than the config makes")
            self.fd = files.adopt.pop(0)
        else:
            # Inherited across fork (CLOEXEC only matters to exec); never closed while in
            # use, since closing any descriptor of the file would drop the process's record
            # locks on it.
            self.fd = os.memfd_create("agw-fast-ratelimit", os.MFD_CLOEXEC)
            os.ftruncate(self.fd, size)
            if files is not None:
                files.created.append(self.fd)
        # Closed with the buckets: a compiled config that is dropped (the CLI's check before
        # `serve()` compiles its own; the config a reload replaced, once its last request is
        # done) leaves no descriptor behind in the processes.
        weakref.finalize(self, os.close, self.fd)
        self._mm = mmap.mmap(self.fd, size)  # MAP_SHARED
        # Aligned 8-byte words: each load and store is one machine access.
        self.cells = memoryview(self._mm).cast("Q")
        if adopted:
            return
        for i, limit in enumerate(limits):
            self.cells[_WORDS * i] = limit.max_tokens
            self.cells[_WORDS * i + 1] = now + limit.fill_interval_ns


class _BucketFiles:
    """What `bucket_files` collects (the parent) or hands out (a worker), in compile order."""

    __slots__ = ("adopt", "created")

    def __init__(self, adopt: list[int] | None) -> None:
        self.adopt = adopt
        self.created: list[int] = []


_FILES: _BucketFiles | None = None


@contextlib.contextmanager
def bucket_files(adopt: Sequence[int] | None = None) -> Iterator[list[int]]:
    """Around a `compile_config`: with `adopt` None, yields the descriptors of the buckets the
    compile creates, in creation order (the supervisor sends them to the workers on a reload);
    with `adopt`, the compile maps those descriptors instead of creating buckets, in the same
    order (a worker compiling the same config), so every process counts in the same words.
    Compiling the same config creates its buckets in the same order. Descriptors of `adopt`
    the compile did not take are closed on the way out; too few raise RuntimeError."""
    global _FILES
    files = _BucketFiles(None if adopt is None else list(adopt))
    previous, _FILES = _FILES, files
    try:
        yield files.created
    finally:
        _FILES = previous
        left = files.adopt or []
        for fd in left:
            os.close(fd)
    if left:
        raise RuntimeError("more rate-limit buckets received than the config makes")


def build(policies: RoutePolicies) -> RequestStep | None:
    return build_with_clock(policies, time.monotonic_ns)


def build_with_clock(policies: RoutePolicies, clock: Callable[[], int]) -> RequestStep | None:
    """The route's `type: requests` step, or its `conditional` step (entries of both types);
    `clock` gives monotonic ns (tests pass a fake)."""
    if any(limit.condition is not None for limit in policies.local_rate_limit):
        return _conditional(policies.local_rate_limit, clock)
    limits = tuple(limit for limit in policies.local_rate_limit if limit.kind == "requests")
    if not limits:
        return None
    buckets = SharedBuckets(limits, clock())
    cells, fd = buckets.cells, buckets.fd
    plan = tuple(
        (_WORDS * i, limit.max_tokens, limit.tokens_per_fill, limit.fill_interval_ns)
        for i, limit in enumerate(limits)
    )
    lockf, lock, unlock = fcntl.lockf, fcntl.LOCK_EX, fcntl.LOCK_UN

    def check(request: PolicyRequest) -> PolicyAnswer | None:
        # The fewest tokens left so far: (capacity, left, ns to refill).
        best: tuple[int, int, int] | None = None
        refused = False
        lockf(fd, lock)
        try:
            now = clock()
            for at, capacity, per_fill, interval in plan:
                taken, left, wait = take(cells, at, capacity, per_fill, interval, now)
                if not taken:
                    best, refused = (capacity, left, wait), True
                    break
                if best is None or left < best[1]:
                    best = (capacity, left, wait)
        finally:
            lockf(fd, unlock)
        assert best is not None and buckets is not None  # `buckets` keeps the mapping alive
        capacity, left, wait = best
        fields = _FIELDS % (capacity, left, wait // _NS)
        if refused:
            return PolicyAnswer(
                local_response(429, _LIMITED_BODY, extra_headers=fields), Reason.RATE_LIMIT
            )
        request.add_response_lines(fields)
        return None

    return check


def _conditional(limits: Sequence[LocalRateLimit], clock: Callable[[], int]) -> RequestStep:
    """`conditional` entries (agentgateway's `RequestPolicy::select`, store/policy.rs): the
    first entry whose condition is true, or the condition-less fallback (always last), is the
    request's only limit; a condition that fails to evaluate is false. When none applies the
    request is not limited and its response carries no x-ratelimit-* fields (an upstream's
    own pass through); when one applies its fields replace the upstream's. A selected
    `type: tokens` entry is only recorded here (`request.token_limits`): its check and
    fields come with the LLM exchange, and a request that is no LLM call is not limited."""
    programs: list[CelProgram | None] = []
    for limit in limits:
        if limit.condition is None:
            programs.append(None)
            continue
        try:
            programs.append(compile_expression(limit.condition))
        except CelCompileError as error:
            where = join(limit.path, "condition")
            raise ConfigError(where, f"invalid CEL expression: {error}") from None
    uses = frozenset().union(*(p.uses for p in programs if p is not None))
    buckets = SharedBuckets(limits, clock())
    cells, fd = buckets.cells, buckets.fd
    entries = tuple(
        (
            program,
            # A `type: tokens` entry's TokenLimits, over its word pair in the same memfd.
            TokenLimits((limit,), clock, buckets, i) if limit.kind == "tokens" else None,
            _WORDS * i,
            limit.max_tokens,
            limit.tokens_per_fill,
            limit.fill_interval_ns,
        )
        for i, (program, limit) in enumerate(zip(programs, limits, strict=True))
    )
    lockf, lock, unlock = fcntl.lockf, fcntl.LOCK_EX, fcntl.LOCK_UN

    def check(request: PolicyRequest) -> PolicyAnswer | None:
        variables = activation(cel_variables(request, uses))
        for entry in entries:
            if entry[0] is None or entry[0].evaluate_bool(variables):
                break
        else:
            return None
        _, tokens, at, capacity, per_fill, interval = entry
        if tokens is not None:
            request.token_limits = tokens
            return None
        lockf(fd, lock)
        try:
            taken, left, wait = take(cells, at, capacity, per_fill, interval, clock())
        finally:
            lockf(fd, unlock)
        assert buckets is not None  # keeps the mapping alive
        fields = _FIELDS % (capacity, left, wait // _NS)
        if not taken:
            return PolicyAnswer(
                local_response(429, _LIMITED_BODY, extra_headers=fields), Reason.RATE_LIMIT
            )
        request.replace_response_fields(RATE_LIMIT_FIELDS)
        request.add_response_lines(fields)
        return None

    return check


class TokenLimits:
    """A route's `type: tokens` limits, which apply to LLM requests only (agentgateway's
    `check_llm_request` and `amend_tokens`). Once the request is parsed: without `tokenize`,
    every bucket must hold at least one token (nothing is taken); with it, the prompt's
    estimate is taken from each bucket in turn, all or nothing per bucket, and a bucket that
    cannot give it refuses the request (a larger estimate than the capacity always does; the
    buckets before it keep what they gave, as for `type: requests`). Once the response's usage
    is known, the difference is settled: input (cache included) plus output tokens, less the
    estimate already taken, is taken from every bucket, leaving it at 0 rather than below; an
    estimate larger than the usage gives the rest back, never filling a bucket past its
    capacity (agentgateway's `amend_tokens` has no cap, so a refund there can lift a bucket
    above `maxTokens`)."""

    __slots__ = ("_buckets", "_clock", "_plan")

    def __init__(
        self,
        limits: Sequence[LocalRateLimit],
        clock: Callable[[], int],
        buckets: SharedBuckets | None = None,
        first: int = 0,
    ) -> None:
        """`limits` get buckets of their own, or the ones from index `first` of `buckets`
        (a `conditional` entry's, in its route's memfd)."""
        self._clock = clock
        self._buckets = SharedBuckets(limits, clock()) if buckets is None else buckets
        self._plan = tuple(
            (_WORDS * (first + i), limit.max_tokens, limit.tokens_per_fill, limit.fill_interval_ns)
            for i, limit in enumerate(limits)
        )

    def check(self, estimate: int = 0) -> tuple[bool, bytes]:
        """(whether the request may go on, the x-ratelimit-* lines for its response): the
        first refusing bucket's numbers when refused, else the most constrained bucket's.
        `estimate`: the prompt's tokens counted up front (`tokenize`), 0 when not counted."""
        cells, fd = self._buckets.cells, self._buckets.fd
        best: tuple[int, int, int] | None = None
        allowed = True
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            now = self._clock()
            for at, capacity, per_fill, interval in self._plan:
                if estimate > capacity:
                    # agentgateway's try_wait_n: more than the bucket can ever hold, reset 0.
                    best, allowed = (capacity, cells[at], 0), False
                    break
                available, wait = peek(cells, at, capacity, per_fill, interval, now)
                if available < max(estimate, 1):
                    best, allowed = (capacity, available, wait), False
                    break
                if estimate:
                    available -= estimate
                    cells[at] = available
                if best is None or available < best[1]:
                    best = (capacity, available, wait)
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)
        assert best is not None
        capacity, left, wait = best
        return allowed, _FIELDS % (capacity, left, max(wait, 0) // _NS)

    def charge(self, tokens: int) -> None:
        """Settle a finished LLM call with every bucket (no refill first): take `tokens`,
        down to 0 at most, or give back `-tokens`, up to the capacity at most."""
        if tokens == 0:
            return
        cells, fd = self._buckets.cells, self._buckets.fd
        fcntl.lockf(fd, fcntl.LOCK_EX)
        try:
            for at, capacity, _, _ in self._plan:
                cells[at] = min(capacity, max(0, cells[at] - tokens))
        finally:
            fcntl.lockf(fd, fcntl.LOCK_UN)


def build_token_limits(
    policies: RoutePolicies | None, clock: Callable[[], int] = time.monotonic_ns
) -> TokenLimits | None:
    """The route's `type: tokens` limits, None when it has none (built before fork, too).
    `conditional` ones are per request: the route's step records the one it selects."""
    if policies is None:
        return None
    limits = tuple(limit for limit in policies.local_rate_limit if limit.kind == "tokens")
    if any(limit.condition is not None for limit in policies.local_rate_limit):
        return None
    return TokenLimits(limits, clock) if limits else None
