"""Limits and budgets shared by every worker of every instance, counted in Redis (sans-IO).

The decisions are local and synchronous, as a request step must be: each worker keeps, per
bucket and key (a `Slot`), what Redis last told it and what it has done since; the worker's
sync loop (`agw_fast.server.shared_store`) sends the changes in one pipelined batch per round
trip and feeds the replies back (`begin_batch` / `complete_batch` / `fail_batch`). No request
waits for Redis.

The bucket in Redis is agentgateway's token bucket (starts full, `tokensPerFill` added per
`fillInterval` on a fixed grid, capped at `maxTokens`), updated atomically by one Lua script
(`BUCKET_SCRIPT`) on Redis' own clock, so every instance sees one timeline. One call:
refill, give back returned lease tokens, take what the worker owes, grant a new lease.

A worker admits a `type: requests` request
  1. from its **lease**: tokens Redis already took from the bucket for this worker (at most
     a quarter of what the bucket holds, so leases shrink as the bucket empties; `lease.size`
     at first, doubled up to 32 times that each time the worker runs dry before Redis
     answers, so that a lease covers its request rate times the round trip). With a quarter
     of it spent it asks for more in the background;
  2. else, when Redis' last reply said the bucket is empty, it refuses until the refill time
     that reply gave (429);
  3. else on **credit**: at most `lease.credit` requests admitted before Redis has confirmed
     them (they are owed, and taken from the bucket in the next batch);
  4. else it refuses (429) until the reply arrives.
An LLM call on a `type: tokens` bucket is admitted by rule 2 and 3 (nothing is taken up front,
as agentgateway only checks for one token); its input + output tokens are owed when it ends.

Accuracy, per bucket and key, with N instances of W workers and credit C:
  * leases never overshoot: their tokens were taken in Redis before being spent;
  * credit overshoots only when a batch owes more than the bucket holds; the reply then says
    "empty", and that worker uses no more credit until the refill. So in any fill interval the
    admitted requests (LLM calls for `type: tokens`) exceed what the bucket gives by at most
    N * W * C (the start counts as an interval: a full bucket). C = 0 never overshoots but
    refuses a worker's first request for a key until Redis has answered;
  * undershoot (a 429 while the fleet-wide bucket has tokens): tokens sitting in other workers'
    leases (each at most a quarter of what was left; given back after `lease.idle` unused),
    and requests past a worker's credit during one round trip;
  * tokens of an LLM call admitted in time are all charged, as in agentgateway (one call may
    take a bucket below zero, which is clamped there).
Failures (`failureMode`, as agentgateway's `remoteRateLimit`): while Redis cannot be reached, a
request that needs Redis (no lease left) gets 500 `rate limit failed` (failClosed) or is let
through (failOpen); lease tokens keep being spent, and what is owed is kept and sent once
Redis answers again (no restart needed). A Redis restart without persistence forgets the
buckets: each starts full again, so a restart may let through up to `maxTokens` more per key.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from agw_fast.config.limits import LeaseSettings
from agw_fast.core.cel import CelProgram, activation
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import LLMTokenLimits, PolicyAnswer, PolicyRequest, RequestStep

__all__ = [
    "ALLOW",
    "BUCKET_SCRIPT",
    "FAIL",
    "REFUSE",
    "BucketSpec",
    "Limiter",
    "SharedTokenLimits",
    "Slot",
    "build_step",
]

# KEYS[1]: the bucket. ARGV: capacity, per fill, interval ms, lease wanted, owed, given back,
# key TTL ms (0: none). Returns {granted, tokens left, ms to the next refill}.
BUCKET_SCRIPT = """
local cap = tonumber(ARGV[1])
local per = tonumber(ARGV[2])
local iv = tonumber(ARGV[3])
local want = tonumber(ARGV[4])
local owed = tonumber(ARGV[5])
local back = tonumber(ARGV[6])
local ttl = tonumber(ARGV[7])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 't', 'r')
local tokens = tonumber(state[1])
local refill = tonumber(state[2])
if tokens == nil or refill == nil then
  tokens = cap
  refill = now + iv
elseif now >= refill then
  local n = math.floor((now - refill) / iv) + 1
  refill = refill + n * iv
  tokens = math.min(cap, tokens + n * per)
end
tokens = math.min(cap, tokens + back)
tokens = math.max(0, tokens - owed)
local grant = 0
if want > 0 and tokens > 0 then
  grant = math.min(want, math.max(1, math.floor(tokens / 4)))
  tokens = tokens - grant
end
redis.call('HSET', KEYS[1], 't', string.format('%.0f', tokens), 'r', string.format('%.0f', refill))
if ttl > 0 then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return {grant, tokens, refill - now}
"""

ALLOW, REFUSE, FAIL = 0, 1, 2
_LIMITED_BODY = b"rate limit exceeded"
_FAILED_BODY = b"rate limit failed"  # agentgateway's ProxyError::RateLimitFailed (500)
_FIELDS = b"x-ratelimit-limit: %d\r\nx-ratelimit-remaining: %d\r\nx-ratelimit-reset: %d\r\n"
_RATE_LIMIT_FIELDS = frozenset(
    {b"x-ratelimit-limit", b"x-ratelimit-remaining", b"x-ratelimit-reset"}
)


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """One shared bucket definition: `id` names it in Redis (with the key's digest)."""

    id: str
    capacity: int
    per_fill: int
    interval_ms: int
    kind: str  # "requests" or "tokens"

    @property
    def ttl_ms(self) -> int:
        """How long an untouched bucket is kept: by then it would be full again anyway."""
        if self.per_fill <= 0:
            return 0
        return (math.ceil(self.capacity / self.per_fill) + 1) * self.interval_ms


class Slot:
    """What one worker knows of one bucket and key, and what it did since Redis last said."""

    __slots__ = (
        "spec", "redis_key", "lease", "owed", "sending", "back", "available", "refill_at",
        "synced", "credit", "credit_sent", "used_at", "dirty", "want", "target",
    )  # fmt: skip

    def __init__(self, spec: BucketSpec, redis_key: str, now: float) -> None:
        self.spec = spec
        self.redis_key = redis_key
        self.lease = 0  # tokens taken in Redis for this worker, not spent yet
        self.owed = 0  # tokens spent that Redis has not been told of
        self.sending = 0  # of those, in the batch in flight
        self.back = 0  # lease tokens to give back in the next batch
        self.available = spec.capacity  # the bucket at Redis' last reply (after our take)
        self.refill_at = 0.0  # monotonic time of the next refill, per that reply
        self.synced = False  # whether a reply came yet
        self.credit = 0  # admitted on credit since the last reply (sent ones included)
        self.credit_sent = 0  # of those, in the batch in flight
        self.used_at = now
        self.dirty = False
        self.want = 0  # lease asked for in the batch in flight
        self.target = 0  # the lease this worker aims to hold (0: `lease.size`)

    def known_empty(self, now: float) -> bool:
        return self.synced and now < self.refill_at and self.available - self.owed <= 0

    def fields(self, now: float) -> bytes:
        left = max(0, self.available - self.owed) + self.lease
        wait = max(0.0, self.refill_at - now) if self.synced else self.spec.interval_ms / 1000
        return _FIELDS % (self.spec.capacity, left, int(wait))


class Limiter:
    """One worker's view of every shared bucket (built before fork: each worker then has its
    own copy, empty). `wake` is set by the worker's sync loop: called when a slot needs Redis."""

    def __init__(
        self,
        lease: LeaseSettings,
        fail_open: bool,
        key_prefix: str,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lease_size = lease.size
        self.max_lease = 32 * lease.size
        self.credit = lease.credit
        self.idle = lease.idle
        self.fail_open = fail_open
        self.key_prefix = key_prefix
        self.clock = clock
        self.slots: dict[tuple[str, str], Slot] = {}
        self.dirty: list[Slot] = []
        self.down = False  # the last batch could not reach Redis
        self.wake: Callable[[], None] = _nothing
        self.specs: dict[str, BucketSpec] = {}
        self.unkeyed: list[BucketSpec] = []

    def register(self, spec: BucketSpec, keyed: bool = False) -> BucketSpec:
        """A bucket used by some route; the same id must mean the same bucket."""
        known = self.specs.setdefault(spec.id, spec)
        if known != spec:
            raise ValueError(f"bucket {spec.id!r} defined twice differently")
        # Prewarmed: key-less buckets big enough that a full lease per worker strands little.
        big = spec.capacity >= 16 * self.lease_size
        if not keyed and big and spec.kind == "requests" and spec not in self.unkeyed:
            self.unkeyed.append(spec)
        return known

    def prewarm(self) -> None:
        """Ask for a lease of every large bucket without a key (a worker starting): its
        first requests then need no credit."""
        now = self.clock()
        for spec in self.unkeyed:
            self._mark(self.slot(spec, "", now))

    def slot(self, spec: BucketSpec, key: str, now: float) -> Slot:
        slot = self.slots.get((spec.id, key))
        if slot is None:
            if key:
                # Keys may be credentials (`apiKey.key`): Redis sees a digest only.
                digest = hashlib.blake2b(key.encode(), digest_size=12).hexdigest()
                redis_key = f"{self.key_prefix}{spec.id}:{digest}"
            else:
                redis_key = f"{self.key_prefix}{spec.id}"
            slot = self.slots[(spec.id, key)] = Slot(spec, redis_key, now)
        return slot

    def _mark(self, slot: Slot) -> None:
        if not slot.dirty:
            slot.dirty = True
            if not self.dirty:
                self.wake()
            self.dirty.append(slot)

    def take(self, slot: Slot, now: float) -> int:
        """One `type: requests` token: ALLOW, REFUSE (429) or FAIL (500, failClosed)."""
        slot.used_at = now
        if slot.spec.capacity == 0:
            return REFUSE  # as agentgateway: more than the capacity is never granted
        if slot.lease > 0:
            slot.lease -= 1
            if slot.lease <= ((slot.target or self.lease_size) * 3) // 4:
                self._mark(slot)  # prefetch the next lease with a quarter spent
            return ALLOW
        if slot.known_empty(now):
            return REFUSE
        self._mark(slot)
        if self.down:
            if not self.fail_open:
                return FAIL
            slot.owed += 1  # counted once Redis is back
            return ALLOW
        if slot.credit < self.credit:
            slot.credit += 1
            slot.owed += 1
            return ALLOW
        # Dry before Redis answered: this worker needs a larger lease at its rate (leases
        # never overshoot; they shrink near empty and go back when idle).
        slot.target = min(max(slot.target, self.lease_size) * 2, self.max_lease)
        return REFUSE

    def check_tokens(self, slot: Slot, now: float) -> bool:
        """Whether an LLM call may start on a `type: tokens` bucket (nothing is taken)."""
        slot.used_at = now
        if slot.spec.capacity == 0 or slot.known_empty(now):
            return False
        self._mark(slot)  # its usage will be owed; and the view gets refreshed
        if self.down:
            return self.fail_open  # the step already answered 500 when failing closed
        if slot.credit < self.credit:
            slot.credit += 1
            return True
        return False

    def charge(self, slot: Slot, tokens: int) -> None:
        if tokens > 0:
            slot.owed += tokens
            self._mark(slot)

    # -- the sync loop's side -----------------------------------------------------------------

    def sweep(self, now: float) -> None:
        """Give back leases unused for `lease.idle`; forget slots with nothing to remember."""
        idle_since = now - self.idle
        for key, slot in list(self.slots.items()):
            if slot.used_at >= idle_since or slot.dirty:
                continue
            if slot.lease > 0:
                slot.back += slot.lease
                slot.lease = 0
                self._mark(slot)
            elif slot.owed == 0 and slot.back == 0 and not slot.known_empty(now):
                del self.slots[key]

    def release_all(self) -> None:
        """Give every lease back in the next batch (the worker is stopping)."""
        for slot in self.slots.values():
            if slot.lease > 0:
                slot.back += slot.lease
                slot.lease = 0
                self._mark(slot)
            elif slot.owed > 0:
                self._mark(slot)

    def begin_batch(self) -> list[tuple[Slot, tuple[int, int, int, int, int, int, int]]]:
        """The slots to send now with their script arguments; their owed tokens and given-back
        lease move to `sending` until `complete_batch` or `fail_batch`."""
        slots, self.dirty = self.dirty, []
        batch = []
        for slot in slots:
            slot.dirty = False
            spec = slot.spec
            want = 0
            target = slot.target or self.lease_size
            if spec.kind == "requests" and slot.back == 0 and slot.lease <= (target * 3) // 4:
                want = target - slot.lease
            if want == 0 and slot.owed == 0 and slot.back == 0 and spec.kind == "requests":
                continue  # a reply came since it was marked: nothing to say
            slot.want = want
            slot.sending, slot.owed = slot.owed, 0
            slot.credit_sent = slot.credit
            args = (spec.capacity, spec.per_fill, spec.interval_ms, want, slot.sending,
                    slot.back, spec.ttl_ms)  # fmt: skip
            slot.back = 0
            batch.append((slot, args))
        return batch

    def complete_batch(
        self,
        batch: Sequence[tuple[Slot, tuple[int, ...]]],
        replies: Sequence[Sequence[int]],
        now: float,
    ) -> None:
        self.down = False
        for (slot, _), (granted, left, wait_ms) in zip(batch, replies, strict=True):
            slot.lease += int(granted)
            slot.available = int(left)
            slot.refill_at = now + int(wait_ms) / 1000
            slot.synced = True
            slot.sending = 0
            slot.credit -= slot.credit_sent  # confirmed; later ones wait for the next reply
            slot.credit_sent = 0

    def fail_batch(
        self, batch: Sequence[tuple[Slot, tuple[int, ...]]], down: bool = True
    ) -> None:
        """Redis did not answer: keep what was owed for the next attempt (Redis may or may
        not have applied it; counting it twice errs on the refusing side)."""
        self.down = down or self.down
        for slot, args in batch:
            slot.owed += slot.sending
            slot.sending = 0
            slot.back += args[5]
            slot.credit_sent = 0
            if not slot.dirty:
                slot.dirty = True
                self.dirty.append(slot)


def _nothing() -> None:
    pass


class SharedTokenLimits:
    """The `type: tokens` buckets of one LLM call (`LLMTokenLimits`): shared slots, and the
    local limits the request had before (a route's own, or a `conditional` entry's)."""

    __slots__ = ("_estimate", "_limiter", "_local", "_slots")

    def __init__(
        self, limiter: Limiter, slots: list[Slot], local: LLMTokenLimits | None
    ) -> None:
        self._limiter = limiter
        self._slots = slots
        self._local = local
        self._estimate = 0

    def check(self, estimate: int = 0) -> tuple[bool, bytes]:
        """`estimate`: a `tokenize` count the local limits take up front; the shared buckets
        are charged the call's whole usage when it ends (their leases settle then)."""
        self._estimate = estimate
        fields = b""
        if self._local is not None:
            allowed, fields = self._local.check(estimate)
            if not allowed:
                return allowed, fields
        now = self._limiter.clock()
        best: Slot | None = None
        for slot in self._slots:
            if not self._limiter.check_tokens(slot, now):
                return False, slot.fields(now)
            if best is None or slot.available < best.available:
                best = slot
        if not fields and best is not None:
            fields = best.fields(now)
        return True, fields

    def charge(self, tokens: int) -> None:
        """`tokens`: the call's usage less the estimate `check` took (agentgateway's
        amend_tokens); the shared buckets took nothing up front, so they get it all."""
        if self._local is not None:
            self._local.charge(tokens)
        for slot in self._slots:
            self._limiter.charge(slot, tokens + self._estimate)


Keyed = tuple[BucketSpec, CelProgram | None]


def _key(program: CelProgram | None, variables: object) -> str | None:
    if program is None:
        return ""
    value = program.evaluate(variables)
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None  # no value (or an error): the budget does not apply to this request
    return str(value)


def build_step(
    limiter: Limiter,
    requests: Sequence[Keyed],
    tokens: Sequence[Keyed],
    local_tokens: LLMTokenLimits | None,
) -> RequestStep:
    """A route's step for its shared buckets: takes a token from each `requests` one (the first
    without one answers 429, as local limits do), and records the `tokens` ones (with the
    route's local `type: tokens` limits) on the request for its LLM exchange."""
    uses = frozenset().union(*(p.uses for _, p in (*requests, *tokens) if p is not None))
    clock = limiter.clock
    failed = local_response(500, _FAILED_BODY)

    def step(request: PolicyRequest) -> PolicyAnswer | None:
        variables = activation(cel_variables(request, uses)) if uses else None
        now = clock()
        best: Slot | None = None
        for spec, program in requests:
            key = _key(program, variables)
            if key is None:
                continue
            slot = limiter.slot(spec, key, now)
            verdict = limiter.take(slot, now)
            if verdict == REFUSE:
                fields = slot.fields(now)
                response = local_response(429, _LIMITED_BODY, extra_headers=fields)
                return PolicyAnswer(response, Reason.RATE_LIMIT)
            if verdict == FAIL:
                return PolicyAnswer(failed, Reason.RATE_LIMIT)
            if best is None or slot.available + slot.lease < best.available + best.lease:
                best = slot
        if tokens:
            if limiter.down and not limiter.fail_open:
                return PolicyAnswer(failed, Reason.RATE_LIMIT)
            slots = []
            for spec, program in tokens:
                key = _key(program, variables)
                if key is not None:
                    slots.append(limiter.slot(spec, key, now))
            local = request.token_limits or local_tokens
            if slots:
                request.token_limits = SharedTokenLimits(limiter, slots, local)
            else:
                request.token_limits = local
        if best is not None:
            lines = request.response_lines
            if lines is None or not any(b"x-ratelimit-limit:" in line for line in lines):
                request.replace_response_fields(_RATE_LIMIT_FIELDS)
                request.add_response_lines(best.fields(now))
        return None

    return step
