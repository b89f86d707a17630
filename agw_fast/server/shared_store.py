"""Shared limits: wiring them into the compiled routes, and each worker's Redis sync loop.

`attach` runs where the config is compiled (before fork): it turns the limits file's budgets,
and with `shareLocalRateLimits` the routes' `localRateLimit` buckets, into one request step per
route (`agw_fast.policies.shared_limits.build_step`) and returns the `Limiter` they share.
Each worker then runs a `SharedStore`: one Task that sends what its limiter has to say to
Redis in pipelined batches (one EVALSHA per bucket and key touched, one round trip per batch)
and feeds the replies back. Requests never wait for it.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import ssl
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agw_fast.config.limits import LeaseSettings, RedisSettings, SharedLimitsConfig
from agw_fast.config.model import Config, RoutePolicies
from agw_fast.config.validate import join
from agw_fast.core.cel import CelCompileError, CelProgram, compile_expression
from agw_fast.errors import ConfigError
from agw_fast.log import logger
from agw_fast.plan import RuntimeBind
from agw_fast.policies import STEP_BUILDERS, RequestStep, localratelimit
from agw_fast.policies.shared_limits import BUCKET_SCRIPT, BucketSpec, Limiter, Slot, build_step
from agw_fast.telemetry.store_status import DOWN, UP, StoreStatus

__all__ = ["SharedStore", "attach", "redacted_url"]

_SCRIPT_SHA = hashlib.sha1(BUCKET_SCRIPT.encode()).hexdigest()


def _interval_ms(ns: int) -> int:
    return max(1, math.ceil(ns / 1_000_000))


def attach(runtime: list[RuntimeBind], config: Config, limits: SharedLimitsConfig) -> Limiter:
    """Give the routes of `runtime` their shared-limit steps; ConfigError for a bad budget."""
    limiter = Limiter(limits.lease, limits.failure_mode == "failOpen", limits.redis.key_prefix)
    budgets: list[tuple[tuple[str, ...] | None, BucketSpec, CelProgram | None]] = []
    for budget in limits.budgets:
        program = None
        if budget.key is not None:
            try:
                program = compile_expression(budget.key)
            except CelCompileError as error:
                where = join(budget.path, "key")
                raise ConfigError(where, f"invalid CEL expression: {error}") from None
        spec = BucketSpec(
            f"budget:{budget.name}", budget.max_tokens, budget.tokens_per_fill,
            _interval_ms(budget.fill_interval_ns), budget.kind,
        )
        budgets.append((budget.routes, limiter.register(spec, program is not None), program))
    policies_by_key: dict[str, RoutePolicies | None] = {}
    for bind in config.binds:
        for listener in bind.listeners:
            for declared in listener.routes:
                key = f"bind/{bind.port}/{listener.name}/{declared.namespace}/{declared.name}"
                policies_by_key[key] = declared.policies
    known_names = {route.name for b in runtime for li in b.listeners.values()
                   for route in li.routes()}  # fmt: skip
    for routes, spec, _ in budgets:
        for name in routes or ():
            if name not in known_names:
                raise ConfigError(limits.source, f"budget {spec.id[7:]!r}: no route named {name!r}")
    for runtime_bind in runtime:
        for table in runtime_bind.listeners.values():
            for route in table.routes():
                policies = policies_by_key.get(route.key)
                requests: list[tuple[BucketSpec, CelProgram | None]] = []
                tokens: list[tuple[BucketSpec, CelProgram | None]] = []
                share = bool(
                    limits.share_local_rate_limits and policies and policies.local_rate_limit
                )
                if share:
                    assert policies is not None
                    if any(limit.condition is not None for limit in policies.local_rate_limit):
                        raise ConfigError(
                            f"{limits.source}: shareLocalRateLimits",
                            f"not supported: conditional localRateLimit (route {route.key}); "
                            "use budgets with a CEL key instead",
                        )
                    for i, limit in enumerate(policies.local_rate_limit):
                        spec = limiter.register(BucketSpec(
                            f"route:{route.key}:{i}", limit.max_tokens, limit.tokens_per_fill,
                            _interval_ms(limit.fill_interval_ns), limit.kind,
                        ))
                        (requests if limit.kind == "requests" else tokens).append((spec, None))
                for names, spec, program in budgets:
                    if names is None or route.name in names:
                        (requests if spec.kind == "requests" else tokens).append((spec, program))
                if not requests and not tokens:
                    continue
                # The route's own `type: tokens` limits move into the step, which hands them
                # to the LLM exchange together with the shared ones.
                local_tokens = None if share else route.token_limits
                route.token_limits = None
                step = build_step(limiter, requests, tokens, local_tokens)
                route.request_steps = _steps(policies or RoutePolicies(), step, share)
    return limiter


def _steps(policies: RoutePolicies, shared: RequestStep, share: bool) -> tuple[RequestStep, ...]:
    """The route's steps in agentgateway's order, the shared step where rate limits go (in
    place of the local ones when they are shared)."""
    steps: list[RequestStep] = []
    for builder in STEP_BUILDERS:
        if builder is localratelimit.build:
            local = None if share else builder(policies)
            if local is not None:
                steps.append(local)
            steps.append(shared)
            continue
        step = builder(policies)
        if step is not None:
            steps.append(step)
    return tuple(steps)


def redacted_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def _client(settings: RedisSettings) -> Any:
    import redis.asyncio
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_timeout": settings.timeout,
        "socket_connect_timeout": settings.connect_timeout,
        # The sync loop retries on its own schedule; a failed batch must fail fast.
        "retry": Retry(NoBackoff(), 0),
        "retry_on_timeout": False,
    }
    if settings.username is not None:
        options["username"] = settings.username
    if settings.password is not None:
        options["password"] = settings.password
    if urlsplit(settings.url).scheme == "rediss":
        if settings.ca_cert is not None:
            options["ssl_ca_certs"] = settings.ca_cert
        if settings.insecure_skip_verify:
            options["ssl_cert_reqs"] = ssl.CERT_NONE
            options["ssl_check_hostname"] = False
    return redis.asyncio.Redis.from_url(settings.url, **options)


class SharedStore:
    """One worker's link to Redis for its `Limiter` (see the module docstring)."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        limiter: Limiter,
        limits: SharedLimitsConfig,
        status: StoreStatus | None,
        worker: int,
    ) -> None:
        from redis.exceptions import NoScriptError, RedisError

        self._errors: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)
        self._no_script = NoScriptError
        self.loop = loop
        self.limiter = limiter
        self.settings: RedisSettings = limits.redis
        self.lease: LeaseSettings = limits.lease
        self.fail_open = limits.failure_mode == "failOpen"
        self.status = status
        self.worker = worker
        self.redis = _client(self.settings)
        self.event = asyncio.Event()
        limiter.wake = self.event.set
        limiter.prewarm()
        self.down_since: float | None = None
        self.closing = False
        self.sent_at = 0.0  # when the last batch or PING went out (loop time)
        self.task: asyncio.Task[None] | None = loop.create_task(self._run())
        self.task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # Never silently: without the loop no worker would learn of Redis again.
            logger.error(
                "worker %d: shared limits sync loop failed: %r", self.worker, task.exception()
            )

    async def _run(self) -> None:
        limiter = self.limiter
        sweep_every = min(self.lease.idle / 2, 1.0)
        next_sweep = self.loop.time() + sweep_every
        try:
            # Loaded before any request needs it (EVALSHA after a Redis restart reloads it).
            async with asyncio.timeout(self.settings.timeout + self.settings.connect_timeout):
                await self.redis.script_load(BUCKET_SCRIPT)
        except self._errors as error:
            self._went_down(error)
        while True:
            if not self.event.is_set():
                try:
                    await asyncio.wait_for(
                        self.event.wait(), max(0.0, next_sweep - self.loop.time())
                    )
                except TimeoutError:
                    pass
            self.event.clear()
            if self.loop.time() >= next_sweep:
                limiter.sweep(limiter.clock())
                next_sweep = self.loop.time() + sweep_every
                if not limiter.dirty and self.sent_at < self.loop.time() - sweep_every:
                    # Quiet: a PING keeps `store_up` and the log true without traffic.
                    await self.ping()
            if self.closing:
                return
            if limiter.dirty and not await self.flush():
                if self.closing:
                    return
                await asyncio.sleep(self.lease.retry)

    async def ping(self) -> None:
        self.sent_at = self.loop.time()
        try:
            async with asyncio.timeout(self.settings.timeout):
                await self.redis.ping()
        except self._errors as error:
            self.limiter.down = True
            self._went_down(error)
            return
        self.limiter.down = False
        self._came_back()

    async def flush(self) -> bool:
        """Send one batch; False when Redis could not be reached (the batch is kept)."""
        batch = self.limiter.begin_batch()
        if not batch:
            return True
        self.sent_at = self.loop.time()
        try:
            async with asyncio.timeout(self.settings.timeout):
                replies = await self._execute(batch)
        except self._errors as error:
            self.limiter.fail_batch(batch)
            self._went_down(error)
            return False
        except asyncio.CancelledError:
            # Whether Redis applied it is unknown: owe it again (errs on the refusing side).
            self.limiter.fail_batch(batch, down=False)
            raise
        self.limiter.complete_batch(batch, replies, self.limiter.clock())
        self._came_back()
        return True

    async def _execute(
        self, batch: list[tuple[Slot, tuple[int, int, int, int, int, int, int]]]
    ) -> list[list[int]]:
        for attempt in (1, 2):
            pipe = self.redis.pipeline(transaction=False)
            for slot, args in batch:
                pipe.evalsha(_SCRIPT_SHA, 1, slot.redis_key, *args)
            results = await pipe.execute(raise_on_error=False)
            if attempt == 1 and any(isinstance(r, self._no_script) for r in results):
                # A new (or restarted) Redis: load the script, then send the batch again
                # (a NOSCRIPT call changed nothing).
                await self.redis.script_load(BUCKET_SCRIPT)
                continue
            for result in results:
                if isinstance(result, BaseException):
                    raise result
            return [list(r) for r in results]
        raise AssertionError("unreachable")

    def _went_down(self, error: BaseException) -> None:
        if self.status is not None:
            self.status.count_error(self.worker)
            self.status.set_state(self.worker, DOWN)
        if self.down_since is None:
            self.down_since = self.loop.time()
            what = "let through (failureMode: failOpen)" if self.fail_open else (
                "answered 500 (failureMode: failClosed)"
            )
            logger.warning(
                "worker %d: shared limits store %s unreachable: %s; requests that need it are "
                "%s until it answers again",
                self.worker, redacted_url(self.settings.url),
                str(error) or type(error).__name__, what,
            )

    def _came_back(self) -> None:
        if self.status is not None:
            self.status.set_state(self.worker, UP)
        if self.down_since is not None:
            logger.warning(
                "worker %d: shared limits store %s reachable again after %.1fs",
                self.worker, redacted_url(self.settings.url), self.loop.time() - self.down_since,
            )
            self.down_since = None

    async def close(self) -> None:
        """Stop the loop, give the leases back and send what is owed (best effort)."""
        if self.task is not None:
            # Let a batch in flight finish: its reply carries a lease and confirms what it
            # owed, which a cancelled one would leave unknown.
            self.closing = True
            self.event.set()
            try:
                await asyncio.wait_for(self.task, self.settings.timeout + self.lease.retry)
            except (TimeoutError, asyncio.CancelledError):
                pass
            self.task = None
        self.limiter.release_all()
        if not self.limiter.down:
            await self.flush()
        try:
            await self.redis.aclose()
        except self._errors:
            pass
