"""One proxied request/response: from the routed request head to the relayed response.

The lifecycle, written down once:

1. `start()`: arm the timeout; on a plain route build the upstream head now (the body is
   streamed behind it); on an LLM route collect the body first (`on_request_body`), since the
   model and usage logic need all of it, then build head and body (`_send_llm_request`).
2. `_acquire()`: take an idle pooled connection, or open one in a Task (`_connect`, the only
   await). Until attached, request bytes wait in `out` (bounded: past 64 KiB the client stops
   being read). While the client connection processes one read the exchange is "corked", so a
   small request's head and body leave in one write (`uncork`).
3. Attached (`_attach`), the exchange is the connection's `ResponseSink`: `on_response_head`,
   `on_response_body`, `on_response_end` relay the response as it arrives; backpressure runs
   both ways through `pause_*`/`resume_*`.
4. `_finish()` runs exactly once, whatever the ending (response complete, `fail` with a local
   error, `abort` because the client left, upstream lost): telemetry records the exchange, then
   the client connection is told whether it may keep the connection alive.

Errors before the response head become a local error response; after it, the client
connection is closed (never a truncated body framed as complete). A reused pooled connection
that the server had closed is retried once on a fresh one when nothing was answered and the
request can be sent again whole.

A route with `retry` sends the request again, from the same replay buffer, when an attempt
fails before any response byte reached the client: a connection error or connect timeout, or
a response whose status is in `codes` or for which `condition` holds (decided on its head,
before anything is relayed; the connection is closed unread, as agentgateway drops that
response). The request must have been read whole first
for a status retry, and its body must fit `MAX_REPLAY` (agentgateway's 64 KiB, httpproxy.rs
MAX_BUFFERED_BYTES). Each resend carries `x-retry-attempt: n`; `backoff` waits on a loop timer.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, cast

from agw_fast.core import cel
from agw_fast.core.http1 import BODY_CHUNKED, BODY_CLOSE, ResponseHead
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import build_upstream_head, local_response, without_body
from agw_fast.errors import ProxyError
from agw_fast.llm.calls import final_transformation, prepare_call
from agw_fast.llm.exchange import LLMRequest, LLMResponseObserver, prepare_llm_request
from agw_fast.llm.guardrails import (
    GuardCall,
    GuardedStream,
    GuardFailed,
    GuardPending,
    GuardRejected,
    GuardState,
    Rejection,
    RequestRun,
)
from agw_fast.llm.health import retry_after_seconds
from agw_fast.llm.providers.openai import decode_request_body
from agw_fast.llm.router import LocalAnswer, ModelRouter, ProviderGroups, Routed
from agw_fast.llm.tokenizer import count_prompt_tokens
from agw_fast.llm.translate import Translation, TranslationError
from agw_fast.llm.translate.relay import TranslatedRelay
from agw_fast.log import logger
from agw_fast.policies.cel_context import cel_variables, response_variable
from agw_fast.policies.localratelimit import RATE_LIMIT_FIELDS
from agw_fast.policies.request import PolicyRequest
from agw_fast.proxy.guard_call import GuardCallError, call_guard
from agw_fast.proxy.upstream import UpstreamConnection
from agw_fast.telemetry.record import RequestRecord, RequestRecorder
from agw_fast.telemetry.tracing import PendingSpan

if TYPE_CHECKING:
    from agw_fast.plan import RuntimeBackend, RuntimeRoute
    from agw_fast.policies.request import LLMTokenLimits, PolicyRequest
    from agw_fast.proxy.pool import UpstreamPool

__all__ = ["Client", "Exchange", "ReadPause", "Services"]

# Request body bytes held while the upstream connection opens; above this we stop reading
# the client until the bytes are on their way (rule 3: never an unbounded body in memory).
PENDING_BODY_HIGH_WATER = 64 * 1024
# Below this, the request head and body are joined into one bytes object for the write.
JOIN_LIMIT = 64 * 1024
# Request bodies up to this are kept for `retry` (agentgateway's MAX_BUFFERED_BYTES).
MAX_REPLAY = 64 * 1024

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_REQUEST_VARIABLES = frozenset(cel.VARIABLES)
_CHUNKED_LINE = b"transfer-encoding: chunked\r\n"
_LAST_CHUNK = b"0\r\n\r\n"


class ReadPause:
    """Why the client connection stopped reading; it resumes when no reason is left."""

    PENDING = 1  # request body bytes wait for the upstream connection to open
    UPSTREAM = 2  # the upstream connection's send buffer is full
    PIPELINE = 4  # pipelined requests wait behind the response in flight


class Client(Protocol):
    """The client connection as an exchange uses it (`DownstreamProtocol` implements it)."""

    keep_alive: bool
    closing: bool
    http11: bool
    writing_paused: bool
    peer: str  # the client's "addr:port" once known ("" before `peer_name` is asked)

    def peer_name(self) -> str: ...

    def write(self, data: bytes) -> None: ...
    def writelines(self, first: bytes, second: bytes) -> None: ...
    def close(self) -> None: ...
    def pause_reading(self, reason: int) -> None: ...
    def resume_reading(self, reason: int) -> None: ...
    def exchange_finished(self, keep_alive: bool) -> None: ...


class Services(Protocol):
    """What the worker lends every exchange: its loop, upstream pool, tasks and telemetry."""

    loop: asyncio.AbstractEventLoop
    pool: UpstreamPool
    recorder: RequestRecorder  # told about every finished request

    def spawn(self, work: Coroutine[object, object, None]) -> None: ...


class Exchange:
    """One proxied request: from the routed request head to the relayed response's end.

    Created by the client connection for each routed request; it is the upstream
    connection's `ResponseSink` while attached to one, and reports exactly once, in
    `_finish`, to telemetry and then to the client connection (`exchange_finished`).
    """

    __slots__ = (
        "down",
        "services",
        "route",
        "backend",
        "method",
        "target",
        "client_path",
        "client_host",
        "authority",
        "headers",
        "head_request",
        "response_drop",
        "request_chunked",
        "request_length",
        "request_done",
        "content_encoding",
        "started",
        "upstream",
        "out",
        "out_size",
        "corked",
        "replay",
        "head_out",
        "timer",
        "status",
        "response_started",
        "response_close",
        "dechunk",
        "finished",
        "upstream_reading_paused",
        "body_parts",
        "body_size",
        "body_limit",
        "llm",
        "replayable",
        "error",
        "reason",
        "response_extra",
        "policy_lines",
        "retries_left",
        "retries",
        "relay_drop",
        "replay_size",
        "policy_request",
        "routed",
        "relay",
        "guard",
        "call_started",
        "head_at",
        "request_processing",
        "response_processing",
        "body_bytes",
        "span",
    )

    def __init__(
        self,
        down: Client,
        services: Services,
        route: RuntimeRoute,
        backend: RuntimeBackend,
        method: bytes,
        target: bytes,
        client_path: bytes,
        client_host: bytes,
        authority: bytes,
        headers: list[tuple[bytes, bytes]],
        request_length: int,
        request_chunked: bool,
        content_encoding: bytes | None,
        started: float,
        policy_request: PolicyRequest | None = None,
    ) -> None:
        self.down = down
        self.services = services
        self.route = route
        self.backend = backend
        self.method = method
        self.target = target
        self.client_path = client_path  # as the client sent it (logs), before any rewrite
        self.client_host = client_host  # the Host the client sent (the upstream's may differ)
        self.authority = authority
        self.headers = headers
        self.head_request = method == b"HEAD"
        self.response_drop = backend.response_drop
        # Response lines the gateway adds: the backend's plan, plus what this request's
        # policy steps asked for (set by the client side before `start`).
        self.response_extra = backend.response_extra
        # The policy steps' part of that, which the gateway's own error answers carry too
        # (agentgateway merges policy response headers into every response, errors included).
        self.policy_lines = b""
        self.request_length = request_length
        self.request_chunked = request_chunked
        self.request_done = False
        self.content_encoding = content_encoding
        self.started = started
        self.upstream: UpstreamConnection | None = None
        self.out: list[bytes] = []  # upstream bytes not yet written (see `uncork`)
        self.out_size = 0
        self.corked = True  # created inside the downstream's event loop: see `uncork`
        self.replay: list[bytes] | None = None  # the request's parts, kept while resendable
        self.head_out: bytes | None = None  # response head waiting to go out with its body
        self.timer: asyncio.TimerHandle | None = None
        self.status = 0
        self.response_started = False
        self.response_close = False
        self.dechunk = False
        self.finished = False
        self.upstream_reading_paused = False
        self.body_parts: list[bytes] | None = None
        self.body_size = 0
        self.body_limit = 0
        self.llm: LLMResponseObserver | None = None
        # -1: no Content-Length header (a bodiless request); 0 is forwarded as sent.
        self.replayable = not request_chunked and request_length <= 0
        self.retries_left = 0  # resends `retry` still allows; 0 on routes without it
        self.retries = 0  # resends made
        self.replay_size = 0
        if route.retry is not None:
            # The fields not to relay while `response_drop` lets a `retry.condition` see them
            # all. Set on `retry` routes only: read only where `retries_left` was armed.
            self.relay_drop: frozenset[bytes] | None = None
            self._arm_retry(route.retry.attempts)
        self.error: str | None = None
        self.reason: str | None = Reason.UPSTREAM
        # The request as policies saw it, for access-log and retry-condition CEL and the
        # `conditional` tokens limit its steps selected (None unless a step ran).
        self.policy_request = policy_request
        # The `llm:` form: the model the router chose, and a translated response's state.
        self.routed: Routed | None = None
        self.relay: TranslatedRelay | None = None
        self.guard: GuardState | None = None  # a model with `guardrails` (llm/guardrails)
        # Telemetry (agentgateway's processing and upstream-call metrics): when the upstream
        # call under way was made (0.0: none), when its response head came, and what the
        # record reports (see `telemetry.record`).
        self.call_started = 0.0
        self.head_at = 0.0
        self.request_processing: float | None = None
        self.response_processing: float | None = None
        self.body_bytes = 0
        self.span: PendingSpan | None = None  # set by the client side when traced

    # -- request side -----------------------------------------------------------------------

    def start(self, expect_continue: bool, spent: float = 0.0) -> None:
        """`spent`: seconds of the route's request timeout a `delay` policy already used."""
        route = self.route
        backend = self.backend
        timeout = route.request_timeout
        if spent and timeout is not None:
            timeout -= spent
        message = "request timeout"
        backend_timeout = backend.backend_request_timeout
        if backend_timeout is not None and (timeout is None or backend_timeout < timeout):
            timeout, message = backend_timeout, "upstream call timeout"
        if timeout is not None:
            self.timer = self.services.loop.call_later(timeout, self._timed_out, message)
        if expect_continue:
            self.down.write(_CONTINUE)
        if self.retries_left:
            condition = route.retry_condition
            if condition is not None and condition.headers:
                # agentgateway asks the condition before its response policies run, so it
                # sees the fields a header modifier or a rate limit will replace: parse them
                # all, and leave them out of the relayed head once no retry is made.
                self.relay_drop = self.response_drop
                self.response_drop = frozenset()
        if backend.ai is not None:
            self.body_parts = []  # LLM routes need the whole body before anything goes out
            self.body_limit = backend.ai.max_body
            return
        if self.request_chunked:
            framing = _CHUNKED_LINE
        elif self.request_length >= 0:
            framing = b"content-length: %d\r\n" % self.request_length
        else:
            framing = b""
        self.out.append(
            build_upstream_head(
                self.method,
                self.target,
                self.authority,
                self.headers,
                backend.request_headers,
                framing,
            )
        )
        if self.retries_left:
            self.replay = [self.out[0]]  # body parts join it as they arrive (`_keep`)
        self._acquire()

    def _arm_retry(self, attempts: int) -> None:
        if self.request_chunked or self.request_length <= MAX_REPLAY:
            self.retries_left = attempts
            self.replayable = True
        # else: agentgateway does not retry a body it could not hold whole.

    def disable_retry(self) -> None:
        """Send this request once only (a false `retry.precondition`); before `start`."""
        self.retries_left = 0
        self.replayable = not self.request_chunked and self.request_length <= 0

    def on_request_body(self, data: bytes) -> None:
        if self.finished:
            return
        parts = self.body_parts
        if parts is not None:
            self.body_size += len(data)
            if self.body_size > self.body_limit:
                self.fail(
                    413, "failed to process LLM request: request was too large",
                    Reason.INVALID_REQUEST,
                )
                return
            parts.append(data)
            return
        if self.replay is not None:
            self._keep(data)  # `retry` only: other routes reach here with no replay kept
        if self.request_chunked:
            # Framed as a chunk around the data, which itself is not copied.
            parts = [b"%x\r\n" % len(data), data, b"\r\n"]
            if not self.corked and self.upstream is not None:
                self.upstream.writelines(parts)
                return
            self.out += parts
            self.out_size += len(data)
        elif not self.corked and self.upstream is not None:
            self.upstream.write(data)
            return
        else:
            self.out.append(data)
            self.out_size += len(data)
        if self.out_size > PENDING_BODY_HIGH_WATER and self.upstream is None:
            self.down.pause_reading(ReadPause.PENDING)

    def _keep(self, data: bytes) -> None:
        """Keep a body part for a resend, or stop retrying once the body outgrows the bound."""
        replay = self.replay
        assert replay is not None
        self.replay_size += len(data)
        if self.replay_size > MAX_REPLAY:
            self.replay = None
            self.replayable = False
            self._stop_retrying()
        elif self.request_chunked:
            replay += (b"%x\r\n" % len(data), data, b"\r\n")
        else:
            replay.append(data)

    def on_request_end(self) -> None:
        self.request_done = True
        if self.finished:
            return
        if self.body_parts is not None:
            self._send_llm_request()
            return
        if self.request_chunked:
            if self.replay is not None:
                self.replay.append(_LAST_CHUNK)
            if not self.corked and self.upstream is not None:
                self.upstream.write(_LAST_CHUNK)
            else:
                self.out.append(_LAST_CHUNK)

    def _send_llm_request(self) -> None:
        ai = self.backend.ai
        assert ai is not None and self.body_parts is not None
        body = b"".join(self.body_parts)
        self.body_parts = None
        try:
            if self.backend.router is not None:
                llm_request = self._route_llm_request(self.backend.router, ai.max_body, body)
                if llm_request is None:
                    return
            else:
                llm_request = prepare_llm_request(ai, self.target, body, self.content_encoding)
        except ProxyError as error:  # LLMRequestError and the `models` 501
            # agentgateway: a request it cannot process is the client's fault (4xx), one it
            # does not implement an internal error.
            reason = Reason.INVALID_REQUEST if error.status < 500 else Reason.INTERNAL
            self.fail(error.status, error.body, reason, error.content_type)
            return
        self._send_prepared(llm_request)

    def _send_prepared(self, llm_request: LLMRequest) -> None:
        """The LLM call is ready: token limits, the upstream head, then the connection."""
        limits = self._token_limits()
        if limits is not None:
            # agentgateway checks `type: tokens` limits once the LLM request is parsed; the
            # fields of a `type: requests` limit, already set, are kept (set_ratelimit_headers).
            allowed, fields = limits.check(llm_request.input_tokens or 0)
            if not allowed:
                self.fail(429, "rate limit exceeded", Reason.RATE_LIMIT, extra_headers=fields)
                return
            if b"x-ratelimit-limit: " not in self.response_extra:
                self.response_extra += fields
                if limits is not self.route.token_limits:
                    # A `conditional` route's plan keeps the upstream's fields: these replace
                    # them (in the drop a `retry.condition` has set aside, while it is).
                    if self.retries_left and self.relay_drop is not None:
                        self.relay_drop = self.relay_drop | RATE_LIMIT_FIELDS
                    else:
                        self.response_drop = self.response_drop | RATE_LIMIT_FIELDS
        self.llm = LLMResponseObserver(llm_request, self.started)
        self.target = llm_request.target
        headers = self.headers
        if llm_request.decoded or self.routed is not None:
            # The body goes out decoded and re-serialised: its old coding no longer applies.
            headers = [h for h in headers if h[0] != b"content-encoding"]
        framing = b"content-length: %d\r\n" % len(llm_request.body)
        signer = self.backend.signer
        if signer is not None:
            # Bedrock: the SigV4 signature covers this head's target, Host and the body.
            framing += signer.sign(self.method, self.authority, self.target, llm_request.body)
        credential = self.backend.credential
        if credential is not None:
            # A token fetched at run time (Vertex AI): the plan already drops the client's
            # `authorization`; the worker's refresher keeps this line current.
            if not credential.line:
                self.fail(
                    503,
                    "backend authentication failed: no Google access token yet (see the "
                    "gateway log)",
                    Reason.UPSTREAM_FAILURE,
                )
                return
            framing = credential.line + framing
        head = build_upstream_head(
            self.method, self.target, self.authority, headers, self.backend.request_headers,
            framing,
        )
        self.out = [head, llm_request.body]
        self.replayable = True
        if self.retries_left and self.body_size > MAX_REPLAY:
            self._stop_retrying()  # agentgateway holds 64 KiB of the client's body for `retry`
        self._acquire()

    def _route_llm_request(
        self, router: ModelRouter | ProviderGroups, max_body: int, body: bytes
    ) -> LLMRequest | None:
        """The `llm:` form: the router picks a model (or answers itself, then None), whose
        backend this exchange then uses; its provider's call is prepared. Raises ProxyError."""
        if self.content_encoding is not None:
            body = decode_request_body(body, self.content_encoding.decode("latin-1"), max_body)
        path = self.client_path.decode("latin-1")
        variables = self._cel_request_variables(body)
        resolved = router.resolve(path, self.headers, body, variables, time.monotonic())
        if isinstance(resolved, LocalAnswer):
            if resolved.status == 200:
                reason = Reason.DIRECT_RESPONSE
            elif resolved.content_type == b"text/plain":  # a failover target's authorization
                reason = Reason.AUTHORIZATION
            else:
                reason = Reason.INVALID_REQUEST
            self.fail(resolved.status, resolved.body.decode(), reason, resolved.content_type)
            return None
        self.routed = resolved
        guards = resolved.route.guards
        if guards is not None:
            guard = self.guard = GuardState()
            run = guards.start(
                resolved.route_type, resolved.obj, self.headers, variables, guard.checks
            )
            if run is not None:
                step = run.advance()
                if isinstance(step, GuardCall):
                    # A guard service must be asked first: the exchange's one async step.
                    self.services.spawn(self._guard_calls(run, step, resolved, body, variables))
                    return None
                if step is not None:
                    self._rejected(step)
                    return None
                if run.changed:
                    resolved.changed = True
        return self._prepared_call(resolved, body, variables)

    def _prepared_call(
        self, resolved: Routed, body: bytes, variables: Callable[[], dict[str, object]]
    ) -> LLMRequest:
        """The routed request as its provider's call; this exchange now uses its backend."""
        route = resolved.route
        estimate = None
        if route.config.tokenize and resolved.obj is not None:
            # Counted before the provider's translation, as agentgateway's to_llm_request.
            estimate = count_prompt_tokens(resolved.route_type, resolved.obj)
        llm_request = prepare_call(
            route.config, resolved.route_type, self.target, resolved.obj, body, resolved.changed
        )
        guards = route.guards
        if guards is not None and guards.response:
            assert self.guard is not None
            translation = guards.wrap(
                llm_request.translation, llm_request.route_type, self.guard.checks
            )
            if translation is not llm_request.translation:
                llm_request = replace(llm_request, translation=translation)
        if estimate is not None:
            llm_request = llm_request.with_estimate(estimate)
        final = route.final_transformations
        if final and _final_applies(llm_request.route_type, self.headers):
            llm_request = final_transformation(final, llm_request, variables)
        backend = cast("RuntimeBackend", route.backend)
        self.backend = backend
        self.authority = backend.auto_authority or self.client_host
        drop = self.response_drop
        # The router's own drop is the hop-by-hop set the model's includes: a new set only
        # when a policy step added names of its own.
        self.response_drop = backend.response_drop if drop <= backend.response_drop else (
            drop | backend.response_drop
        )
        if backend.response_extra:
            self.response_extra = backend.response_extra + self.response_extra
        return llm_request

    async def _guard_calls(
        self,
        run: RequestRun,
        call: GuardCall,
        resolved: Routed,
        body: bytes,
        variables: Callable[[], dict[str, object]],
    ) -> None:
        """Ask the guard services the run needs, in order, then send (or answer) the request.
        A call that fails (unreachable, timeout, an unusable answer) fails the request with
        agentgateway's 503, unless its guard fails open."""
        try:
            await self._run_guards(run, call, resolved, body, variables)
        except Exception:
            # A bug must cost this request, never leave it waiting for its timeout.
            logger.exception("internal error running prompt guards")
            self.fail(503, "failed to process LLM request: prompt guard failed", Reason.INTERNAL)

    async def _run_guards(
        self,
        run: RequestRun,
        call: GuardCall,
        resolved: Routed,
        body: bytes,
        variables: Callable[[], dict[str, object]],
    ) -> None:
        step: Rejection | GuardCall | None = call
        while isinstance(step, GuardCall):
            try:
                status, answer = await call_guard(self.services.pool, step)
                if self.finished:
                    return
                step = run.answer(status, answer)
                if step is None:
                    step = run.advance()
            except (GuardCallError, GuardFailed) as error:
                if self.finished:
                    return
                if not run.failed():
                    logger.warning("prompt guard %s failed: %s", run.current_kind, error)
                    self.fail(
                        503, "failed to process LLM request: prompt guard failed", Reason.INTERNAL
                    )
                    return
                logger.warning("prompt guard %s failed, failing open: %s", run.current_kind,
                               error)
                step = run.advance()
        if self.finished:
            return
        if step is not None:
            self._rejected(step)
            return
        if run.changed:
            resolved.changed = True
        try:
            llm_request = self._prepared_call(resolved, body, variables)
        except ProxyError as error:
            reason = Reason.INVALID_REQUEST if error.status < 500 else Reason.INTERNAL
            self.fail(error.status, error.body, reason, error.content_type)
            return
        self._send_prepared(llm_request)

    def _rejected(self, rejection: Rejection) -> None:
        """A guard rejected the request: its configured answer (agentgateway's
        GuardrailRejected), with the policy steps' fields as every local answer."""
        if self.finished:
            return
        self._release_upstream()
        self.status = rejection.status
        self.reason = Reason.GUARDRAIL
        self.error = "rejected by a prompt guard"
        keep_alive = self.down.keep_alive and not self.down.closing and self.request_done
        response = local_response(
            rejection.status,
            rejection.body,
            content_type=rejection.content_type,
            extra_headers=_merged_fields(self.policy_lines, rejection.lines),
            close=not keep_alive,
        )
        self.down.write(without_body(response) if self.head_request else response)
        self._finish(keep_alive=keep_alive)

    def _cel_request_variables(self, body: bytes) -> Callable[[], dict[str, object]]:
        """The CEL variables a model's `transformation` or a `conditional` target reads,
        built only if one asks (`request` also has the body, as agentgateway's)."""

        def build() -> dict[str, object]:
            policy_request = self.policy_request
            if policy_request is None:
                path, query = self.client_path, b""
                question = self.target.find(b"?")
                if question != -1:
                    query = self.target[question:]
                policy_request = PolicyRequest(
                    self.method, self.client_host, path, query, self.headers, None,
                    self.down.peer or self.down.peer_name(),
                )
            variables = cel_variables(policy_request, _REQUEST_VARIABLES)
            request = variables["request"]
            assert isinstance(request, dict)
            request["body"] = body
            return variables

        return build

    def _acquire(self) -> None:
        services = self.services
        now = self.call_started = time.monotonic()
        if self.request_processing is None:
            self.request_processing = now - self.started
        connection = services.pool.take(self.backend.pool_key)
        if connection is not None:
            self._attach(connection)
        else:
            services.spawn(self._connect())

    async def _connect(self) -> None:
        try:
            connection = await self.services.pool.connect(self.backend)
        except TimeoutError:
            if self.retries_left and self._retry():
                return
            self.fail(504, "upstream call timeout", Reason.TIMEOUT)
            return
        except (OSError, ssl.SSLError, ssl.CertificateError) as error:
            if self.retries_left and self._retry():
                return
            self.fail(503, f"upstream call failed: {_describe(error)}", Reason.UPSTREAM_FAILURE)
            return
        except Exception:
            # A bug must cost this request, never leave it waiting forever.
            logger.exception("internal error opening an upstream connection")
            self.fail(503, "upstream call failed: internal error", Reason.UPSTREAM_FAILURE)
            return
        if self.finished:
            self.services.pool.put(connection)
            return
        self._attach(connection)

    def _attach(self, connection: UpstreamConnection) -> None:
        self.upstream = connection
        connection.attach(self)
        if self.down.writing_paused:
            self.pause_response()
        if not self.corked:
            self.uncork()

    def uncork(self) -> None:
        """Write what the request side produced as one write (one syscall), then go direct.

        The downstream keeps the exchange corked while it processes the events of one read,
        so a small request's head and body reach the upstream together.
        """
        self.corked = False
        upstream = self.upstream
        out = self.out
        if upstream is None or not out:
            return
        self.out = []
        if self.replayable and self.replay is None:
            self.replay = out  # the parts themselves: keeping them costs no copy
        if len(out) == 1:
            upstream.write(out[0])
        elif sum(map(len, out)) < JOIN_LIMIT:
            upstream.write(b"".join(out))  # small: one copy beats a gather list
        else:
            upstream.writelines(out)  # a large LLM body is not copied to be sent
        if self.out_size > PENDING_BODY_HIGH_WATER:
            self.down.resume_reading(ReadPause.PENDING)
        self.out_size = 0

    # -- backpressure (called by the two connections) ----------------------------------------

    def pause_request_body(self) -> None:
        self.down.pause_reading(ReadPause.UPSTREAM)

    def resume_request_body(self) -> None:
        self.down.resume_reading(ReadPause.UPSTREAM)

    def pause_response(self) -> None:
        upstream = self.upstream
        if upstream is not None and not self.upstream_reading_paused:
            assert upstream.transport is not None
            upstream.transport.pause_reading()
            self.upstream_reading_paused = True

    def resume_response(self) -> None:
        upstream = self.upstream
        if upstream is not None and self.upstream_reading_paused:
            assert upstream.transport is not None
            upstream.transport.resume_reading()
        self.upstream_reading_paused = False

    # -- response side (ResponseSink) -------------------------------------------------------

    def _call_ended(self, now: float) -> None:
        self.services.recorder.upstream_call(
            self.backend.ai is not None, now - self.call_started
        )
        self.call_started = 0.0

    def on_response_head(self, head: ResponseHead) -> None:
        now = self.head_at = time.monotonic()
        if self.call_started:
            self._call_ended(now)
        if self.retries_left and self._retry_response(head):
            return
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.routed is not None:
            self._record_health(head.status, head.lines)
            llm = self.llm
            if llm is not None and llm.request.translation is not None:
                self._translated_head(head, llm.request.translation)
                return
        self.response_started = True
        self.status = head.status
        down = self.down
        dechunk = head.framing == BODY_CHUNKED and not down.http11
        close = (
            not down.keep_alive
            or down.closing
            or not self.request_done
            or head.framing == BODY_CLOSE
            or dechunk
        )
        self.response_close = close
        lines = head.lines
        if dechunk:
            # An HTTP/1.0 client gets the payload itself, delimited by the close.
            lines = [line for line in lines if not _is_transfer_encoding(line)]
        # Held back so that a body arriving in the same read leaves in the same write.
        self.head_out = b"".join(
            (
                head.status_line,
                b"\r\n",
                b"\r\n".join(lines),
                b"\r\n" if lines else b"",
                self.response_extra,
                b"connection: close\r\n\r\n" if close else b"\r\n",
            )
        )
        llm = self.llm
        observe = llm is not None and llm.on_response_head(
            head.status, head.content_type, head.lines
        )
        if dechunk or (observe and head.framing == BODY_CHUNKED):
            self.dechunk = dechunk
            if llm is not None:
                llm.chunked = True
            upstream = self.upstream
            assert upstream is not None
            # Relayed as it came (not de-chunked): the scanner hands the payload straight to
            # the observer's reader, two calls fewer per SSE event.
            upstream.set_payload_observer(
                self._on_payload if dechunk or llm is None else llm.payload_reader()
            )
        self.response_processing = time.monotonic() - now

    def _translated_head(self, head: ResponseHead, translation: Translation) -> None:
        relay = self.relay = TranslatedRelay(
            translation, head.status, head.status_line, head.content_type, head.lines
        )
        relay.dechunked = head.framing == BODY_CHUNKED
        guard = self.guard
        if guard is not None and isinstance(relay.stream, GuardedStream):
            guard.stream = relay.stream
        self.status = head.status
        down = self.down
        if relay.streaming:
            self.response_started = True
            relay.chunked = down.http11
            close = (
                not down.keep_alive or down.closing or not self.request_done or not down.http11
            )
            self.response_close = close
            self.head_out = relay.stream_head(self.response_extra, close)
            self.response_processing = time.monotonic() - self.head_at
        if head.framing == BODY_CHUNKED:
            upstream = self.upstream
            assert upstream is not None
            upstream.set_payload_observer(self._on_translated_payload)

    def _on_translated_payload(self, data: bytes) -> None:
        # Called per chunk of the provider's read; `on_response_body` writes what the whole
        # read translated to, once (a send per read, not per event).
        relay = self.relay
        assert relay is not None
        relay.add(data)

    def _cut_translated(self, error: str) -> None:
        """A provider stream that cannot be translated: what was sent stays sent, and the
        connection closes without the last chunk, so the client sees an incomplete body."""
        logger.warning("closing a translated LLM stream: %s", error)
        self.flush_response_head()
        self.error = error
        self._release_upstream()
        self.down.close()
        self._finish(keep_alive=False)

    def _end_blocked(self, relay: TranslatedRelay) -> None:
        """A response guard blocked the stream: its error event went out; the stream ends
        here (the rest of the provider's response is not read)."""
        llm = self.llm
        assert llm is not None
        llm.translated(relay.usage, relay.model, relay.first_token_at)
        self.flush_response_head()
        self.error = "stream blocked by a response guard"
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.close()
        if relay.chunked:
            self.down.write(b"0\r\n\r\n")
            self._finish(keep_alive=not self.response_close)
        else:
            self.down.close()  # a close-delimited body ends with the connection
            self._finish(keep_alive=False)

    def _end_translated(self, relay: TranslatedRelay) -> None:
        """The provider's response ended: the rest of a stream, or the whole translated
        body (a 502 when it cannot be translated)."""
        llm = self.llm
        assert llm is not None
        if relay.streaming:
            tail = relay.finish()
            llm.translated(relay.usage, relay.model, relay.first_token_at)
            self.flush_response_head()
            if tail:
                self.body_bytes += len(tail)
                self.down.write(tail)
            if relay.error is not None:
                self._cut_translated(relay.error)
            return
        down = self.down
        close = not down.keep_alive or down.closing or not self.request_done
        self.response_close = close
        self.response_started = True
        try:
            body = relay.body()
        except GuardPending as pending:
            # A response guard asks its service: the answer waits for it (`_finish` too).
            assert self.guard is not None
            self.guard.pending = True
            self.services.spawn(self._response_guards(relay, pending, close))
            return
        except GuardRejected as rejected:
            self._response_rejected(relay, rejected.rejection, close)
            return
        except TranslationError as error:
            self.status = 502
            self.reason = Reason.UPSTREAM_FAILURE
            self.error = f"failed to process LLM response: {error}"
            llm.translated(None, None, None)
            message = self.error.encode()
            self.body_bytes = len(message)
            down.write(
                local_response(502, message, extra_headers=self.policy_lines, close=close)
            )
            return
        self._write_translated(relay, body, close)

    def _write_translated(self, relay: TranslatedRelay, body: bytes, close: bool) -> None:
        llm = self.llm
        assert llm is not None
        llm.translated(relay.usage, relay.model, None)
        self.body_bytes = len(body)
        if self.head_at:
            self.response_processing = time.monotonic() - self.head_at
        self.down.write(
            b"".join(
                (
                    relay.status_line,
                    b"\r\n",
                    b"".join(line + b"\r\n" for line in relay.lines),
                    b"content-type: application/json\r\n",
                    b"content-length: %d\r\n" % len(body),
                    self.response_extra,
                    b"connection: close\r\n\r\n" if close else b"\r\n",
                    body,
                )
            )
        )

    def _response_rejected(self, relay: TranslatedRelay, rejection: Rejection, close: bool
                           ) -> None:
        llm = self.llm
        assert llm is not None
        llm.translated(relay.usage, relay.model, None)
        self.status = rejection.status
        self.reason = Reason.GUARDRAIL
        self.error = "response rejected by a prompt guard"
        self.down.write(
            local_response(
                rejection.status,
                rejection.body,
                content_type=rejection.content_type,
                extra_headers=_merged_fields(self.policy_lines, rejection.lines),
                close=close,
            )
        )

    async def _response_guards(self, relay: TranslatedRelay, pending: GuardPending,
                               close: bool) -> None:
        """Ask the response guards' services, in order, then answer: the (perhaps masked)
        response, the rejection, or agentgateway's 503 when a call fails (unless its guard
        fails open). The exchange finishes here."""
        try:
            try:
                await self._run_response_guards(relay, pending, close)
            except Exception:
                logger.exception("internal error running response guards")
                self._response_guard_failed(relay, close)
        finally:
            # Whatever happened above, the exchange finishes exactly once.
            guard = self.guard
            if guard is not None and guard.pending:
                guard.pending = False
                self._finish(keep_alive=not close)

    async def _run_response_guards(self, relay: TranslatedRelay, pending: GuardPending,
                                   close: bool) -> None:
        run = pending.run
        step: GuardCall | None = pending.step
        while step is not None:
            try:
                status, answer = await call_guard(self.services.pool, step)
                if self.finished:
                    return
                step = run.answer(status, answer)
            except (GuardCallError, GuardFailed) as error:
                if self.finished:
                    return
                if not run.failed():
                    logger.warning("response guard %s failed: %s", run.current_kind, error)
                    self._response_guard_failed(relay, close)
                    return
                logger.warning("response guard %s failed, failing open: %s", run.current_kind,
                               error)
                step = run.advance()
        if self.finished:
            return
        relay.usage, relay.model = run.usage, run.model
        try:
            body, _, _ = run.result()
        except GuardRejected as rejected:
            self._response_rejected(relay, rejected.rejection, close)
            return
        self._write_translated(relay, body, close)

    def _response_guard_failed(self, relay: TranslatedRelay, close: bool) -> None:
        if self.finished:
            return
        llm = self.llm
        assert llm is not None
        llm.translated(relay.usage, relay.model, None)
        self.status = 503
        self.reason = Reason.INTERNAL
        self.error = "failed to process LLM response: prompt guard failed"
        self.down.write(
            local_response(503, self.error.encode(), extra_headers=self.policy_lines, close=close)
        )

    def _record_health(self, status: int, lines: list[bytes] | None) -> None:
        """A failover target's response: unhealthy by its `health.unhealthyExpression`, else
        for a 5xx (or no connection: `lines` None and `status` 0)."""
        routed = self.routed
        assert routed is not None
        if routed.health is None:
            return
        program = routed.route.unhealthy
        if program is not None and status:
            variables = {"response": response_variable(status, lines)}
            unhealthy = program.evaluate_bool(cel.activation(variables, cel.HEALTH_VARIABLES))
        else:
            unhealthy = status == 0 or status >= 500
        retry_after = retry_after_seconds(lines) if unhealthy and lines else None
        evicted = routed.record(unhealthy, retry_after, time.monotonic())
        if evicted is not None:
            logger.warning(
                "LLM target %s evicted for %.3gs after %s",
                routed.requested_model, evicted,
                f"status {status}" if status else "a connection failure",
            )

    def _on_payload(self, data: bytes) -> None:
        if self.dechunk:
            self.flush_response_head()
            self.down.write(data)
        if self.llm is not None:
            self.llm.feed(data)

    def flush_response_head(self) -> None:
        head = self.head_out
        if head is not None:
            self.head_out = None
            self.down.write(head)

    def on_response_body(self, data: bytes) -> None:
        relay = self.relay
        if relay is not None:
            if not relay.dechunked:
                relay.add(data)
            out = relay.take()
            if out:
                self.flush_response_head()
                self.body_bytes += len(out)
                self.down.write(out)
            if relay.error is not None and relay.streaming and not self.finished:
                self._cut_translated(relay.error)
            elif self.guard is not None and not self.finished:
                stream = self.guard.stream
                if stream is not None and stream.ended:
                    self._end_blocked(relay)
            return
        head = self.head_out
        if head is not None:
            self.head_out = None
            if self.dechunk:
                self.down.write(head)
            else:
                self.down.writelines(head, data)
        elif not self.dechunk:
            self.down.write(data)
        if not self.dechunk:
            llm = self.llm
            if llm is not None and llm.observing and not llm.chunked:
                llm.feed(data)

    def on_response_end(self, reusable: bool) -> None:
        if self.relay is not None and not self.finished:
            self._end_translated(self.relay)
        self.flush_response_head()
        if self.upstream_reading_paused:
            # Before the connection leaves us: a pooled connection must be reading, or it
            # would never see its next response (nor the server closing it).
            self.resume_response()
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            if self.relay is None and not self.finished:
                self.body_bytes = upstream.payload
            if reusable and self.request_done and not self.finished:
                upstream.detach()
                self.services.pool.put(upstream)
            else:
                upstream.close()
        guard = self.guard
        if guard is not None and guard.pending:
            return  # the response guards' step answers and finishes (`_response_guards`)
        self._finish(keep_alive=not self.response_close)

    def on_upstream_lost(self, message: str, response_started: bool, retryable: bool) -> None:
        upstream = self.upstream
        self.upstream = None
        if self.finished:
            return
        relay = self.relay
        if relay is not None and not relay.streaming and not self.response_started:
            # A translated or guarded JSON answer is held until it is whole: nothing reached
            # the client, so it gets a proper error instead of a closed connection.
            self.fail(502, f"upstream call failed: {message}", Reason.UPSTREAM_FAILURE)
            return
        if response_started or self.response_started:
            if upstream is not None and self.relay is None:
                self.body_bytes = upstream.payload
            self.flush_response_head()  # what was relayed so far, then the cut
            self.error = f"upstream call failed: {message}"
            # A close, not an abort: the bytes already relayed still reach the client, and
            # the missing end of the framing tells it the body is incomplete.
            self.down.close()
            self._finish(keep_alive=False)
            return
        if retryable and upstream is not None and upstream.requests > 1 and self.replayable:
            # A pooled connection the server closed as we reused it: nothing was answered,
            # and the request can be sent again as a whole, so try once on a fresh one.
            self.replayable = self.retries_left > 0  # `retry` may still need it
            self.upstream_reading_paused = False
            if self.replay is not None:
                self.out = self._replayed()
            self.services.spawn(self._connect())
            return
        if self.retries_left and self._retry():
            return
        self.fail(503, f"upstream call failed: {message}", Reason.UPSTREAM_FAILURE)

    # -- retry (routes with `retry` only) ----------------------------------------------------

    def _retry_response(self, head: ResponseHead) -> bool:
        """On a response head: whether it is retried (then the response is dropped): its
        status is in `codes`, or else `condition` holds (agentgateway's `should_retry`)."""
        route = self.route
        retry = route.retry
        assert retry is not None
        # Only a request read whole can be sent again whole (agentgateway returns the
        # response when the body was not all buffered).
        if not self.request_done or not self.replayable or self.finished:
            return self._relayed(head)
        if head.status not in retry.codes:
            condition = route.retry_condition
            if condition is None or not condition.holds(
                head.status, head.lines, self.policy_request
            ):
                return self._relayed(head)
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            # agentgateway drops the response unread, which closes its connection.
            upstream.close()
        return self._retry()

    def _relayed(self, head: ResponseHead) -> bool:
        """A response head that is not retried: its lines as they are relayed. False."""
        drop = self.relay_drop
        if drop is not None:
            head.lines = [line for line in head.lines if line[: line.find(b":")] not in drop]
        return False

    def _stop_retrying(self) -> None:
        self.retries_left = 0
        if self.relay_drop is not None:
            # Heads are no longer asked about: the parser drops the fields again.
            self.response_drop = self.relay_drop
            self.relay_drop = None

    def _retry(self) -> bool:
        """Send the request again after `backoff`; False when it cannot be (then the caller
        answers as it would without `retry`)."""
        if self.finished or not self.replayable:
            return False
        if self.call_started:
            self._call_ended(time.monotonic())
        self.retries_left -= 1
        if not self.retries_left:
            self._stop_retrying()
        self.retries += 1
        self.upstream = None
        self.upstream_reading_paused = False
        self.down.resume_reading(ReadPause.UPSTREAM)
        retry = self.route.retry
        assert retry is not None
        if retry.backoff:
            # agentgateway sleeps within the request timeout: our timer still runs, and
            # ends the exchange (504) if it fires first; `_resend` then does nothing.
            self.services.loop.call_later(retry.backoff, self._resend)
        else:
            self._resend()
        return True

    def _resend(self) -> None:
        if self.finished:
            return
        if self.replay is not None:
            self.out = self._replayed()
        elif self.out:  # never written (the connection never opened): the parts wait here
            self.out[0] = _with_attempt(self.out[0], self.retries)
        self._acquire()

    def _replayed(self) -> list[bytes]:
        replay = self.replay
        assert replay is not None
        if not self.retries:
            return list(replay)
        return [_with_attempt(replay[0], self.retries), *replay[1:]]

    # -- endings ----------------------------------------------------------------------------

    def _timed_out(self, message: str) -> None:
        self.timer = None
        self.fail(504, message, Reason.TIMEOUT)

    def fail(
        self,
        status: int,
        body: str,
        reason: str,
        content_type: bytes = b"text/plain",
        extra_headers: bytes = b"",
    ) -> None:
        """End the exchange with a local error (or a closed connection once answering);
        `reason` is a `Reason` for telemetry. `extra_headers` (complete lines) go with the
        policy steps' fields and replace those of the same names."""
        if self.finished:
            return
        if (
            self.routed is not None
            and not self.response_started
            and reason in (Reason.UPSTREAM_FAILURE, Reason.TIMEOUT)
            and self.llm is not None
        ):
            self._record_health(0, None)  # the target did not answer
        if self.call_started:
            self._call_ended(time.monotonic())
        upstream = self.upstream
        if upstream is not None and self.response_started and self.relay is None:
            self.body_bytes = upstream.relayed_payload()
        self._release_upstream()
        self.error = body
        if self.response_started:
            self.down.close()
            self._finish(keep_alive=False)
            return
        self.status = status
        self.reason = reason
        # With the request body still coming, the connection ends after this answer (with a
        # lingering close): skipping an unknown amount of body is not worth keeping it.
        keep_alive = self.down.keep_alive and not self.down.closing and self.request_done
        message = body.encode()
        if not self.head_request:
            self.body_bytes = len(message)
        response = local_response(
            status,
            message,
            content_type=content_type,
            extra_headers=_merged_fields(self.policy_lines, extra_headers),
            close=not keep_alive,
        )
        self.down.write(without_body(response) if self.head_request else response)
        self._finish(keep_alive=keep_alive)

    def request_body_invalid(self, message: str) -> None:
        """The request body's framing broke: answer unless the client has seen bytes already.

        On an LLM route nothing has gone upstream yet (the body is read first): the body could
        not be read, a 503 as agentgateway answers. On other routes the head may be upstream;
        that connection is closed (never pooled mid-request) and the client gets a 400, or
        a closed connection if the response had started.
        """
        if self.body_parts is not None:
            self.fail(503, f"failed to process LLM request: {message}", Reason.INVALID_REQUEST)
        else:
            # A close instead once the response has started.
            self.fail(400, message, Reason.INVALID_REQUEST)

    def abort(self) -> None:
        """The client went away: drop the upstream connection, never pool it."""
        if self.finished:
            return
        self.error = "downstream closed"
        if not self.response_started:
            self.reason = None  # no response at all: agentgateway's labels read "unknown"
        self._release_upstream()
        self._finish(keep_alive=False)

    def _release_upstream(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        # A connection being opened is left to finish: `_connect` sees the exchange is over
        # and pools it, where cancelling could drop a socket that had just connected.
        upstream = self.upstream
        self.upstream = None
        if upstream is not None:
            upstream.close()

    def _token_limits(self) -> LLMTokenLimits | None:
        """The `type: tokens` limits of this LLM call: the route's, or the `conditional` entry
        its request step selected (read on LLM calls only, so other requests pay nothing)."""
        limits: LLMTokenLimits | None = self.route.token_limits
        if limits is None and self.policy_request is not None:
            limits = self.policy_request.token_limits
        return limits

    def _finish(self, keep_alive: bool) -> None:
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        try:
            down = self.down
            llm = self.llm
            outcome = None
            if self.guard is not None and self.guard.checks:
                self.services.recorder.guardrail_checks(self.guard.checks)
            if llm is not None:
                outcome = llm.outcome()
                limits = self._token_limits()
                if limits is not None:
                    # agentgateway's amend_tokens: the call's real input (cache included)
                    # and output usage, less the `tokenize` estimate its check took.
                    limits.charge(
                        (outcome.normalized_input_tokens() or 0)
                        + (outcome.output_tokens or 0)
                        - (llm.request.input_tokens or 0)
                    )
            backend = self.backend
            record: RequestRecord = (
                self.route.labels,
                backend.name,
                backend.endpoint,
                backend.protocol,
                self.method,
                self.client_host,
                self.client_path,
                "HTTP/1.1" if down.http11 else "HTTP/1.0",
                down.peer or down.peer_name(),
                self.status,
                self.reason,
                self.error,
                time.monotonic() - self.started,
                outcome,
                self.retries,
                self.policy_request,
                self.body_bytes,
                self.request_processing,
                self.response_processing,
            )
            self.services.recorder.record(record)
            span = self.span
            if span is not None:
                span.finish(record)
        finally:
            # Even if telemetry failed, the connection must move on (or close).
            self.down.exchange_finished(keep_alive)


def _final_applies(route_type: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a `finalTransformation` applies: never to a passthrough body; to a `detect`
    body only when the client sent it as JSON (agentgateway forwards other bodies opaque)."""
    if route_type == "passthrough":
        return False
    if route_type != "detect":
        return True
    for name, value in headers:
        if name == b"content-type":
            return value.partition(b";")[0].strip().lower() == b"application/json"
    return False


def _merged_fields(base: bytes, replacing: bytes) -> bytes:
    """Field lines `base` then `replacing`, without the `base` lines `replacing` names."""
    if not base or not replacing:
        return base + replacing
    names = {line.split(b":", 1)[0].lower() for line in replacing.splitlines()}
    kept = [
        line for line in base.splitlines(keepends=True)
        if line.split(b":", 1)[0].lower() not in names
    ]
    return b"".join(kept) + replacing


def _with_attempt(head: bytes, attempt: int) -> bytes:
    """`head` with `x-retry-attempt: attempt` in place of any the client sent (agentgateway
    sets the field on every resend)."""
    lines = [
        line for line in head[:-4].split(b"\r\n")
        if line.split(b":", 1)[0].lower() != b"x-retry-attempt"
    ]
    lines.append(b"x-retry-attempt: %d" % attempt)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_transfer_encoding(line: bytes) -> bool:
    return line.split(b":", 1)[0].lower() == b"transfer-encoding"


def _describe(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed: {error.verify_message}"
    if isinstance(error, ssl.SSLError):
        return f"TLS error: {error.reason or error}"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(error, ConnectionResetError):
        return "connection reset"
    text = str(error) or type(error).__name__
    return text

