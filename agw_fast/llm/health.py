"""Target health and eviction for the `llm:` router (agentgateway's http/health.rs and the
endpoint bookkeeping of types/loadbalancer.rs), sans-IO and per process.

Each target keeps a health score (an exponentially weighted mean of healthy = 1 and
unhealthy = 0), its consecutive failures, how often it was evicted and until when. A failover
virtual model takes the first priority group with a target that is not evicted, and in it the
healthiest target; when every target is evicted the first group is used anyway, as
agentgateway falls back to evicted endpoints rather than failing.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from agw_fast.config.model import Eviction

__all__ = [
    "DEFAULT_EVICTION",
    "HealthState",
    "choose_failover",
    "eviction_seconds",
    "retry_after_seconds",
]

DEFAULT_EVICTION = 3.0  # seconds, when `eviction` is set without a duration or retry-after
# Weight of the newest response in the health score.
_ALPHA = 0.3


@dataclass(slots=True)
class HealthState:
    """One target's health, in one worker process."""

    health: float = 1.0
    consecutive_failures: int = 0
    times_evicted: int = 0
    evicted_until: float = 0.0  # monotonic seconds; 0: never evicted

    def available(self, now: float) -> bool:
        return self.evicted_until <= now

    def record(
        self,
        unhealthy: bool,
        eviction: Eviction | None,
        configured: bool,
        retry_after: float | None,
        now: float,
    ) -> float | None:
        """Record one response; returns the eviction time (seconds) when it evicts.

        `configured`: the target has a `health` policy (without one nothing is evicted).
        """
        duration: float | None = None
        if unhealthy and configured:
            duration = eviction_seconds(
                eviction, self.health, self.consecutive_failures, self.times_evicted, retry_after
            )
        self.health = self.health * (1 - _ALPHA) + (0.0 if unhealthy else _ALPHA)
        if unhealthy:
            self.consecutive_failures += 1
        else:
            self.consecutive_failures = 0
        if duration is not None:
            self.evicted_until = now + duration
            self.times_evicted += 1
            self.consecutive_failures = 0
            if eviction is not None and eviction.restore_health is not None:
                self.health = eviction.restore_health
        return duration


def eviction_seconds(
    eviction: Eviction | None,
    health: float,
    consecutive_failures: int,
    times_evicted: int,
    retry_after: float | None,
) -> float | None:
    """How long an unhealthy response evicts its target (None: not at all), as agentgateway's
    `eviction_decision`: the duration is `eviction.duration`, else the response's retry-after,
    else 3 s when `eviction` is set; it grows with each eviction (base x (times evicted + 1)).
    With `consecutiveFailures` or `healthThreshold` set, either condition must hold."""
    base = eviction.duration if eviction is not None else None
    if base is None:
        base = retry_after
    if base is None and eviction is not None:
        base = DEFAULT_EVICTION
    if base is None:
        return None
    if eviction is not None and (
        eviction.consecutive_failures is not None or eviction.health_threshold is not None
    ):
        threshold = eviction.health_threshold
        count = eviction.consecutive_failures
        below = threshold is not None and health < threshold
        exceeded = count is not None and count > 0 and consecutive_failures + 1 >= count
        if not (below or exceeded):
            return None
    return base * (times_evicted + 1)


def choose_failover(
    groups: Sequence[Sequence[int]], states: Sequence[HealthState], now: float
) -> int:
    """The target index to use: the healthiest available target of the first priority group
    that has one (ties at random), else the healthiest of the first group."""
    for group in groups:
        available = [i for i in group if states[i].available(now)]
        if available:
            return _healthiest(available, states)
    return _healthiest(list(groups[0]), states)


def _healthiest(candidates: list[int], states: Sequence[HealthState]) -> int:
    if len(candidates) == 1:
        return candidates[0]
    best = max(states[i].health for i in candidates)
    return random.choice([i for i in candidates if states[i].health >= best - 1e-9])


def retry_after_seconds(lines: Sequence[bytes]) -> float | None:
    """A response's `retry-after` (RFC 9110 §10.2.3: seconds or an HTTP date) in seconds."""
    for line in lines:
        if line.startswith(b"retry-after:"):
            value = line[12:].strip().decode("latin-1")
            if value.isdigit():
                return float(value)
            try:
                when = parsedate_to_datetime(value)
            except (TypeError, ValueError):
                return None
            return max(0.0, when.timestamp() - time.time())
    return None
