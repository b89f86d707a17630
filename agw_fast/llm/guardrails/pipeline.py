"""A model's guards, compiled, and how one request runs through them.

Request guards run in config order on the client's parsed request, before it is translated
for the provider (agentgateway's `apply_prompt_guard`): a mask changes the request for the
guards after it, a reject ends the run with that guard's answer. `RequestRun` is the state
of one run: `advance()` runs local guards until a service must be asked (a `GuardCall`: the
exchange makes it, then `answer` or `failed`), a rejection, or the end.

Response guards wrap the call's translation (`GuardedTranslation`), so they read and change
the response in the client's format: a JSON body is checked whole (masked, or replaced by
the rejection: `GuardRejected`); when a guard must ask a service (a webhook, a cloud guard),
`GuardPending` hands the exchange a `ResponseRun` to drive as the request side's; with
`streaming: Enabled`, a stream goes through a `StreamScanner`. A call that was not
translated gets the identity translation, so guarded routes use the translated relay and
routes without response guards keep their own path.

Each guard evaluated adds (phase, action) to `checks`, agentgateway's
`guardrail_checks{phase,action}`. Sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from agw_fast.config.model import GuardConfig, PromptGuard
from agw_fast.llm.guardrails.cloud import compile_cloud_guard
from agw_fast.llm.guardrails.content import GUARDED_ROUTE_TYPES, response_texts
from agw_fast.llm.guardrails.guards import (
    FAIL_OPEN,
    Endpoint,
    Guard,
    GuardCall,
    Prompt,
    Rejection,
    Reply,
    Verdict,
    compile_guard,
)
from agw_fast.llm.guardrails.regex import Detector, RegexMatcher
from agw_fast.llm.guardrails.stream import StreamScanner
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.openai import serialize_body
from agw_fast.llm.sse import SSEUsageObserver
from agw_fast.llm.translate import StreamTranslator, Translation, TranslationError
from agw_fast.llm.usage import Usage, usage_from_json_body

__all__ = [
    "Checks",
    "GuardPipeline",
    "GuardedStream",
    "GuardRejected",
    "GuardState",
    "GuardedTranslation",
    "GuardPending",
    "RequestRun",
    "ResponseRun",
    "compile_pipeline",
]

Checks = list[tuple[str, str]]  # (phase, action): "Request"/"Response", agentgateway's actions


class GuardState:
    """One exchange's guard bookkeeping: the checks made, and its guarded stream if any."""

    __slots__ = ("checks", "stream", "pending")

    def __init__(self) -> None:
        self.checks: Checks = []
        self.stream: GuardedStream | None = None
        self.pending = False  # response guards are asking their services


class GuardRejected(TranslationError):
    """A response guard rejected a JSON response: the client gets `rejection` instead."""

    def __init__(self, rejection: Rejection) -> None:
        super().__init__("rejected by a response guard")
        self.rejection = rejection


class GuardPending(TranslationError):
    """A response guard must ask its service: the exchange drives `run` (its `step` first)."""

    def __init__(self, run: ResponseRun, step: GuardCall) -> None:
        super().__init__("a response guard is asking its service")
        self.run = run
        self.step = step


class GuardPipeline:
    """One model's (or `ai` backend's) guards, compiled at load."""

    __slots__ = ("request", "response", "streaming", "remote")

    def __init__(self, request: Sequence[Guard], response: Sequence[Guard],
                 streaming: bool) -> None:
        self.request = tuple(request)
        self.response = tuple(response)
        self.streaming = streaming
        self.remote = tuple(g for g in (*self.request, *self.response) if g.remote)

    def start(
        self,
        route_type: str,
        obj: dict[str, Any] | None,
        headers: Sequence[tuple[bytes, bytes]],
        variables: Callable[[], dict[str, object]],
        checks: Checks,
    ) -> RequestRun | None:
        """A run of the request guards; None when none apply (no guards, or a route type
        that carries no prompt: embeddings, passthrough...)."""
        if not self.request or obj is None or route_type not in GUARDED_ROUTE_TYPES:
            return None
        return RequestRun(self.request, Prompt(route_type, obj, headers, variables), checks)

    def wrap(self, translation: Translation | None, route_type: str,
             checks: Checks) -> Translation | None:
        """The call's translation with the response guards on it (the same object when none
        apply to this route type)."""
        if not self.response or route_type not in GUARDED_ROUTE_TYPES:
            return translation
        return GuardedTranslation(translation, route_type, self, checks)


class RequestRun:
    """The request guards' run over one prompt (see the module docstring)."""

    __slots__ = ("guards", "prompt", "index", "checks", "changed")

    def __init__(self, guards: tuple[Guard, ...], prompt: Prompt, checks: Checks) -> None:
        self.guards = guards
        self.prompt = prompt
        self.index = 0
        self.checks = checks
        self.changed = False  # a guard masked the prompt: the body is serialised again

    @property
    def current_kind(self) -> str:
        """The kind of the guard being run (for logs)."""
        return self.guards[min(self.index, len(self.guards) - 1)].kind

    def advance(self) -> Rejection | GuardCall | None:
        """Run guards from the current one: a rejection, a call to make, or None (done)."""
        guards = self.guards
        while self.index < len(guards):
            step = guards[self.index].on_request(self.prompt)
            if isinstance(step, GuardCall):
                return step
            rejection = self._done(step)
            if rejection is not None:
                return rejection
        self.prompt.finish()
        return None

    def answer(self, status: int, body: bytes) -> Rejection | GuardCall | None:
        """The current guard's service answered: a rejection, the guard's next call, or None
        (call `advance`). Raises GuardFailed (then call `failed`)."""
        verdict = self.guards[self.index].request_answer(self.prompt, status, body)
        if isinstance(verdict, GuardCall):
            return verdict
        return self._done(verdict)

    def failed(self) -> bool:
        """The current guard's call failed: True when it fails open (the run goes on), else
        the request fails (agentgateway: 503 "prompt guard failed")."""
        if self.guards[self.index].fail_open:
            self._done(FAIL_OPEN)
            return True
        return False

    def _done(self, verdict: Verdict) -> Rejection | None:
        self.checks.append(("Request", verdict.action))
        if verdict.action == "Mask":
            self.changed = True
        self.index += 1
        self.prompt.stage = 0
        return verdict.rejection if verdict.action == "Reject" else None


class ResponseRun:
    """The response guards' run over one JSON response, from the first remote guard on:
    `answer`/`failed` as RequestRun's, then `result` (raises GuardRejected)."""

    __slots__ = ("guards", "reply", "index", "checks", "masked", "out", "usage", "model",
                 "rejection")  # fmt: skip

    def __init__(self, guards: tuple[Guard, ...], reply: Reply, checks: Checks, out: bytes,
                 usage: Usage | None, model: str | None) -> None:
        self.guards = guards
        self.reply = reply
        self.index = 0
        self.checks = checks
        self.masked = False
        self.out = out
        self.usage = usage
        self.model = model
        self.rejection: Rejection | None = None

    @property
    def current_kind(self) -> str:
        return self.guards[min(self.index, len(self.guards) - 1)].kind

    def advance(self) -> GuardCall | None:
        """Run guards from the current one: a call to make, or None (done or rejected)."""
        guards = self.guards
        while self.index < len(guards) and self.rejection is None:
            step = guards[self.index].on_response(self.reply)
            if isinstance(step, GuardCall):
                return step
            self._done(step)
        return None

    def answer(self, status: int, body: bytes) -> GuardCall | None:
        """The current guard's service answered; the next call to make, or None. Raises
        GuardFailed (then call `failed`)."""
        verdict = self.guards[self.index].response_answer(self.reply, status, body)
        self._done(verdict)
        return self.advance()

    def failed(self) -> bool:
        if self.guards[self.index].fail_open:
            self._done(FAIL_OPEN)
            return True
        return False

    def _done(self, verdict: Verdict) -> None:
        self.checks.append(("Response", verdict.action))
        self.index += 1
        if verdict.action == "Reject":
            self.rejection = verdict.rejection
        elif verdict.action == "Mask":
            self.masked = True

    def result(self) -> tuple[bytes, Usage | None, str | None]:
        """The response to send; raises GuardRejected."""
        if self.rejection is not None:
            raise GuardRejected(self.rejection)
        out = serialize_body(self.reply.obj) if self.masked else self.out
        return out, self.usage, self.model


def _compile(config: GuardConfig, moderation: Endpoint, environ: Mapping[str, str]) -> Guard:
    if config.kind in ("bedrockGuardrails", "googleModelArmor", "azureContentSafety"):
        return compile_cloud_guard(config, environ)
    return compile_guard(config, moderation)


def compile_pipeline(config: PromptGuard, moderation: Endpoint,
                     environ: Mapping[str, str] | None = None) -> GuardPipeline | None:
    """The guards of `config`; `moderation` is where openAIModeration guards call, `environ`
    holds the cloud guards' endpoint overrides (cloud.py's `*_URL_VARIABLE`)."""
    if not config.request and not config.response:
        return None
    env = environ if environ is not None else {}
    return GuardPipeline(
        [_compile(g, moderation, env) for g in config.request],
        [_compile(g, moderation, env) for g in config.response],
        config.streaming,
    )


class GuardedTranslation:
    """A call's translation (or the identity) with its response guards."""

    __slots__ = ("inner", "route_type", "pipeline", "checks")

    def __init__(self, inner: Translation | None, route_type: str, pipeline: GuardPipeline,
                 checks: Checks) -> None:
        self.inner = inner
        self.route_type = route_type
        self.pipeline = pipeline
        self.checks = checks

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        inner = self.inner
        if inner is not None:
            out, usage, model = inner.response_json(body)
        else:
            out = body
            usage, model = usage_from_json_body(body)
        try:
            obj = loads(out)
        except ValueError as error:
            raise TranslationError(f"the response is not JSON: {error}") from None
        if type(obj) is not dict:
            return out, usage, model
        reply = Reply(self.route_type, obj)
        reply.texts = response_texts(self.route_type, obj)
        run = ResponseRun(self.pipeline.response, reply, self.checks, out, usage, model)
        step = run.advance()
        if step is not None:
            raise GuardPending(run, step)
        return run.result()

    def error_json(self, status: int, body: bytes) -> bytes:
        return body if self.inner is None else self.inner.error_json(status, body)

    def stream(self) -> StreamTranslator:
        inner: StreamTranslator = (
            _IdentityStream() if self.inner is None else self.inner.stream()
        )
        pipeline = self.pipeline
        if not pipeline.streaming:
            return inner  # agentgateway: response guards skip streams unless enabled
        mask_detectors: list[Detector] = []
        rejects: list[tuple[RegexMatcher, bytes]] = []
        guards: list[Guard] = []
        for guard in pipeline.response:
            matcher = guard.stream_matcher()
            if matcher is None:
                continue
            guards.append(guard)
            if matcher.action == "reject":
                rejects.append((matcher, guard.rejection.body))
            else:
                mask_detectors += matcher.detectors
        if not guards:
            return inner
        mask = RegexMatcher("mask", mask_detectors) if mask_detectors else None
        scanner = StreamScanner(self.route_type, mask, rejects)
        return GuardedStream(inner, scanner, self.checks, len(guards) - len(rejects))


class _IdentityStream:
    """A stream relayed as it is (guards need the translated relay's hooks), its usage read
    as the untranslated relay reads it."""

    __slots__ = ("_observer", "usage", "model", "first_token_at")

    def __init__(self) -> None:
        self._observer = SSEUsageObserver()
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def feed(self, data: bytes) -> bytes:
        observer = self._observer
        observer.feed(data)
        self.usage, self.model = observer.usage, observer.model
        self.first_token_at = observer.first_data_at
        return data

    def finish(self) -> bytes:
        observer = self._observer
        observer.close()
        self.usage, self.model = observer.usage, observer.model
        return b""


class GuardedStream:
    """A stream translator whose output goes through the guards' window scanner."""

    __slots__ = (
        "inner", "scanner", "checks", "mask_guards", "_counted", "usage", "model",
        "first_token_at",
    )  # fmt: skip

    def __init__(self, inner: StreamTranslator, scanner: StreamScanner, checks: Checks,
                 mask_guards: int) -> None:
        self.inner = inner
        self.scanner = scanner
        self.checks = checks
        self.mask_guards = mask_guards
        self._counted = False
        self.usage: Usage | None = None
        self.model: str | None = None
        self.first_token_at: float | None = None

    def _observe(self) -> None:
        inner = self.inner
        self.usage, self.model, self.first_token_at = (
            inner.usage, inner.model, inner.first_token_at
        )

    @property
    def ended(self) -> bool:
        """A guard blocked the stream: what `feed` returned last ends it."""
        return self.scanner.ended

    def feed(self, data: bytes) -> bytes:
        scanner = self.scanner
        out = scanner.feed(self.inner.feed(data))
        self._observe()
        if scanner.ended:
            self._count()
        return out

    def finish(self) -> bytes:
        scanner = self.scanner
        out = b"" if scanner.ended else scanner.feed(self.inner.finish())
        out += scanner.finish()
        self._observe()
        self._count()
        return out

    def _count(self) -> None:
        """Once per stream: each stream guard's outcome (agentgateway counts none)."""
        if self._counted:
            return
        self._counted = True
        scanner = self.scanner
        rejects = scanner.reject_guards
        for index in range(rejects):
            if scanner.rejected_by is not None and index > scanner.rejected_by:
                break
            action = "Reject" if index == scanner.rejected_by else "Allow"
            self.checks.append(("Response", action))
        if scanner.rejected_by is None:
            action = "Mask" if scanner.masked else "Allow"
            self.checks += [("Response", action)] * self.mask_guards
