"""The guard kinds: one class each behind one small interface, `Guard`.

A guard answers for a request (`on_request`) and a JSON response (`on_response`) with a
`Verdict` (allow, mask, which it has applied in place, or reject with its prebuilt answer),
or, when it needs a service, a `GuardCall`: the HTTP request to make. The proxy makes it
(bounded by `timeout`) and hands back the answer (`request_answer`/`response_answer`), or
the failure (`fail_open` decides: a `FAIL_OPEN` verdict, or the request fails). A guard
that can read a stream window gives a `RegexMatcher` (`stream_matcher`). Adding a kind (a
cloud guard) is one more class here and one line in `compile_guard`.

Sans-IO: calls are described as bytes; nothing here opens a connection.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal, NamedTuple

from agw_fast.config.model import (
    BackendTLS,
    GuardConfig,
    GuardRejection,
    HeaderModifier,
    ModerationConfig,
    WebhookConfig,
)
from agw_fast.config.rust_regex import compile_rust_regex
from agw_fast.core import cel
from agw_fast.core.rewrite import ResponseHeaderPlan
from agw_fast.errors import ConfigError
from agw_fast.llm.guardrails.content import (
    ResponseText,
    TextSlot,
    finish_slots,
    request_messages,
    request_slots,
    set_request_messages,
    set_response_texts,
)
from agw_fast.llm.guardrails.regex import PatternDetector, RegexMatcher, builtin_detector
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.vertex import AccessToken

__all__ = [
    "ALLOW",
    "Endpoint",
    "FAIL_OPEN",
    "GUARD_TIMEOUT",
    "MASK",
    "Guard",
    "GuardCall",
    "GuardFailed",
    "ModerationGuard",
    "Prompt",
    "RegexGuard",
    "Rejection",
    "Reply",
    "Verdict",
    "WebhookGuard",
    "compile_guard",
    "dumps",
    "modified_lines",
    "rejection_of",
]

GUARD_TIMEOUT = 10.0  # agentgateway's `with_default_timeout` for guard services
dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


class Rejection(NamedTuple):
    """A guard's answer when it rejects: status, body, and header lines (`rejection.headers`
    applied to an empty head)."""

    status: int
    body: bytes
    lines: bytes = b""
    content_type: bytes | None = None


def rejection_of(config: GuardRejection) -> Rejection:
    lines = b""
    content_type = None
    if config.headers is not None:
        plan = ResponseHeaderPlan.build([config.headers])
        lines = plan.extra if plan is not None else b""
    return Rejection(config.status, config.body, lines, content_type)


class Verdict(NamedTuple):
    action: Literal["Allow", "Mask", "Reject", "FailOpen"]  # agentgateway's GuardrailAction
    rejection: Rejection | None = None


ALLOW = Verdict("Allow")
MASK = Verdict("Mask")
FAIL_OPEN = Verdict("FailOpen")


class GuardCall(NamedTuple):
    """One HTTP/1.1 request to a guard service: `target` is the plan's runtime backend."""

    target: object
    request: bytes  # head and body, ready to write
    timeout: float
    # A token a worker keeps fresh (Google's): its header line goes in as the call is made,
    # and the call fails while there is none.
    credential: AccessToken | None = None


class Endpoint(NamedTuple):
    """Where a guard service is: `tls` is the BackendTLS to use (None: plain HTTP)."""

    host: str
    port: int
    authority: bytes
    path: bytes
    tls: BackendTLS | None
    where: str  # its config path, for errors


class GuardFailed(Exception):
    """A guard service's answer could not be used (treated as the call failing)."""


class Prompt:
    """The client's parsed request as the request guards see and change it."""

    __slots__ = ("route_type", "obj", "headers", "variables", "stage", "_slots")

    def __init__(
        self,
        route_type: str,
        obj: dict[str, Any],
        headers: Sequence[tuple[bytes, bytes]],
        variables: Callable[[], dict[str, object]],
    ) -> None:
        self.route_type = route_type
        self.obj = obj
        self.headers = headers  # the client's request fields (lowercase names)
        self.variables = variables  # CEL variables of the client request (built on demand)
        self.stage = 0  # which of a guard's calls is being answered (a guard of several)
        self._slots: list[TextSlot] | None = None

    def slots(self) -> list[TextSlot]:
        if self._slots is None:
            self._slots = request_slots(self.route_type, self.obj)
        return self._slots

    def changed(self) -> None:
        """The prompt was replaced (a webhook's mask): slots are read again."""
        if self._slots is not None:
            finish_slots(self._slots)
        self._slots = None

    def finish(self) -> None:
        if self._slots is not None:
            finish_slots(self._slots)


class Reply:
    """A JSON response in the client's format, as response guards see and change it."""

    __slots__ = ("route_type", "obj", "texts", "headers")

    def __init__(self, route_type: str, obj: dict[str, Any],
                 headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.route_type = route_type
        self.obj = obj
        self.texts: list[ResponseText] = []
        self.headers = headers


class Guard:
    """The interface; the default answers allow everything."""

    kind = "guard"
    remote = False  # makes calls: the exchange runs it in its async step
    fail_open = False  # a failed call allows the request (recorded as FailOpen)
    rejection: Rejection = Rejection(403, b"")
    scope: frozenset[str] = frozenset()
    # A remote guard's service: where it is, and the runtime backend the plan made for it
    # (the proxy opens connections to `target` from the worker's pool).
    endpoint: Endpoint | None = None
    target: object = None

    def on_request(self, prompt: Prompt) -> Verdict | GuardCall:
        return ALLOW

    def request_answer(self, prompt: Prompt, status: int, body: bytes
                       ) -> Verdict | GuardCall:
        """The verdict, or the guard's next call (a guard that asks twice)."""
        return ALLOW

    def on_response(self, reply: Reply) -> Verdict | GuardCall:
        return ALLOW

    def response_answer(self, reply: Reply, status: int, body: bytes) -> Verdict:
        return ALLOW

    def stream_matcher(self) -> RegexMatcher | None:
        return None


class RegexGuard(Guard):
    kind = "regex"

    def __init__(self, config: GuardConfig) -> None:
        regex = config.regex
        assert regex is not None
        try:
            detectors = [
                builtin_detector(r.builtin) if r.builtin is not None
                else PatternDetector(r.pattern or "")
                for r in regex.rules
            ]
        except ValueError as error:  # translated once at load; a builtin cannot fail
            raise ConfigError(config.path, str(error)) from None
        self.matcher = RegexMatcher(regex.action, detectors)
        self.rejection = rejection_of(config.rejection)
        self.scope = config.scope

    def on_request(self, prompt: Prompt) -> Verdict:
        matcher = self.matcher
        scope = self.scope
        slots = [s for s in prompt.slots() if s.scope in scope]
        if matcher.action == "reject":
            for slot in slots:
                if matcher.rejects(slot.text):
                    return Verdict("Reject", self.rejection)
            return ALLOW
        masked = False
        for slot in slots:
            text = matcher.mask(slot.text)
            if text is not None:
                slot.set(text)
                masked = True
        return MASK if masked else ALLOW

    def on_response(self, reply: Reply) -> Verdict:
        matcher = self.matcher
        if matcher.action == "reject":
            for item in reply.texts:
                if matcher.rejects(item.text):
                    return Verdict("Reject", self.rejection)
            return ALLOW
        masked = False
        for item in reply.texts:
            text = matcher.mask(item.text)
            if text is not None:
                item.set(text)
                masked = True
        return MASK if masked else ALLOW

    def stream_matcher(self) -> RegexMatcher:
        return self.matcher


def _request_bytes(method: bytes, path: bytes, authority: bytes, lines: Sequence[bytes],
                   body: bytes) -> bytes:
    head = [method + b" " + path + b" HTTP/1.1", b"host: " + authority]
    head += lines
    head += [b"content-type: application/json", b"content-length: %d" % len(body)]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


class WebhookGuard(Guard):
    """agentgateway's webhook guard (llm/policy/webhook.rs): POST `/request` with
    `{"body": {"messages": [...]}}`, or `/response` with `{"body": {"choices": [...]}}`;
    the answer's `action` passes, masks (the messages or choices to use) or rejects (its
    `body` and `status_code`)."""

    kind = "webhook"
    remote = True

    def __init__(self, config: GuardConfig) -> None:
        webhook = config.webhook
        assert webhook is not None
        self.config: WebhookConfig = webhook
        self.fail_open = webhook.fail_open
        self.rejection = rejection_of(config.rejection)
        self.scope = config.scope
        host = webhook.host if ":" not in webhook.host else f"[{webhook.host}]"
        self.authority = f"{host}:{webhook.port}".encode()
        self.endpoint = Endpoint(webhook.host, webhook.port, self.authority, b"/request", None,
                                 webhook.path)
        self.headers = tuple(
            (name, _compile(text, f"{webhook.path}.headers.{name}"))
            for name, text in webhook.headers
        )
        self.forward = tuple(
            (
                m.name.encode("latin-1"),
                compile_rust_regex(m.value) if m.kind == "regex" else m.value,
            )
            for m in webhook.forward_header_matches
        )

    def _call(self, default_path: bytes, headers: Sequence[tuple[bytes, bytes]],
              variables: Callable[[], dict[str, object]], llm_request: object,
              body: bytes) -> GuardCall:
        method, path, authority = b"POST", default_path, self.authority
        lines = self._forwarded(headers)
        if self.headers:
            values = dict(variables())
            values["llmRequest"] = llm_request
            bound = cel.activation(values, cel.LLM_VARIABLES)
            for name, program in self.headers:
                value = _header_value(program.evaluate(bound))
                if value is None:
                    continue
                if name == ":path":
                    path = value
                elif name == ":method":
                    method = value
                elif name == ":authority":
                    authority = value
                elif not name.startswith(":"):
                    key = name.encode("latin-1")
                    lines = [line for line in lines if line.split(b":", 1)[0] != key]
                    lines.append(key + b": " + value)
        return GuardCall(self.target, _request_bytes(method, path, authority, lines, body),
                         GUARD_TIMEOUT)

    def _forwarded(self, headers: Sequence[tuple[bytes, bytes]]) -> list[bytes]:
        """agentgateway's forwardHeaderMatches: a header whose value (any of them) matches
        is forwarded with all its values."""
        out: list[bytes] = []
        for name, match in self.forward:
            values = [v for n, v in headers if n == name]
            if any(_value_matches(match, v) for v in values):
                out += [name + b": " + v for v in values]
        return out

    def on_request(self, prompt: Prompt) -> GuardCall:
        messages = request_messages(prompt.route_type, prompt.obj)
        body = dumps({"body": {"messages": messages}}).encode()
        return self._call(b"/request", prompt.headers, prompt.variables, prompt.obj, body)

    def request_answer(self, prompt: Prompt, status: int, body: bytes) -> Verdict:
        action = _action(status, body)
        mask = _mask_body(action)
        if mask is not None:
            messages = mask.get("messages")
            if type(messages) is not list or not _messages(messages):
                raise GuardFailed("invalid webhook response")
            prompt.changed()
            set_request_messages(prompt.route_type, prompt.obj, messages)
            return MASK
        return _pass_or_reject(action)

    def on_response(self, reply: Reply) -> GuardCall:
        choices = [
            {"message": {"role": "assistant", "content": t.text}} for t in reply.texts
        ]
        body = dumps({"body": {"choices": choices}}).encode()
        return self._call(b"/response", reply.headers, dict, None, body)

    def response_answer(self, reply: Reply, status: int, body: bytes) -> Verdict:
        action = _action(status, body)
        mask = _mask_body(action)
        if mask is not None:
            choices = mask.get("choices")
            if type(choices) is not list:
                raise GuardFailed("invalid webhook response")
            texts = []
            for choice in choices:
                message = choice.get("message") if type(choice) is dict else None
                content = message.get("content") if type(message) is dict else None
                texts.append(content if type(content) is str else "")
            set_response_texts(reply.texts, texts)
            return MASK
        return _pass_or_reject(action)


def _messages(value: object) -> bool:
    return type(value) is list and all(
        type(m) is dict and type(m.get("role")) is str and type(m.get("content")) is str
        for m in value
    )


def _action(status: int, body: bytes) -> dict[str, Any]:
    if not 200 <= status < 300:
        raise GuardFailed(f"webhook answered {status}")
    try:
        doc = loads(body)
    except ValueError as error:
        raise GuardFailed(f"webhook answer is not JSON: {error}") from None
    action = doc.get("action") if type(doc) is dict else None
    if type(action) is not dict:
        raise GuardFailed("webhook answer has no action")
    return action


def _mask_body(action: dict[str, Any]) -> dict[str, Any] | None:
    """A mask action's body (serde's untagged order: mask, reject, pass)."""
    body = action.get("body")
    if type(body) is dict and ("messages" in body or "choices" in body):
        return body
    return None


def _pass_or_reject(action: dict[str, Any]) -> Verdict:
    body, status = action.get("body"), action.get("status_code")
    if type(body) is str and type(status) is int and 100 <= status <= 999:
        return Verdict("Reject", Rejection(status, body.encode()))
    return ALLOW


def _value_matches(match: str | re.Pattern[str], value: bytes) -> bool:
    """A HeaderValueMatch: exact, or a regex matching the whole value."""
    text = value.decode("latin-1")
    if isinstance(match, str):
        return text == match
    return match.fullmatch(text) is not None


def _header_value(value: object) -> bytes | None:
    if isinstance(value, cel.EvaluationError) or value is None:
        return None
    if isinstance(value, bytes):
        text = value
    elif isinstance(value, bool):
        text = b"true" if value else b"false"
    elif isinstance(value, (str, int, float)):
        text = str(value).encode("utf-8")
    else:
        return None
    if b"\r" in text or b"\n" in text:
        return None
    return text


def _compile(text: str, path: str) -> cel.CelProgram:
    try:
        return cel.compile_expression(text, cel.LLM_VARIABLES)
    except cel.CelCompileError as error:
        raise ConfigError(path, str(error)) from None


class ModerationGuard(Guard):
    """agentgateway's openAIModeration (llm/policy/moderation.rs): the prompt's message texts
    to OpenAI's `/v1/moderations`; any result flagged rejects. Request guards only."""

    kind = "openAIModeration"
    remote = True

    def __init__(self, config: GuardConfig, endpoint: Endpoint) -> None:
        moderation = config.moderation
        assert moderation is not None
        self.config: ModerationConfig = moderation
        self.rejection = rejection_of(config.rejection)
        self.scope = config.scope
        tls = moderation.backend_tls or endpoint.tls
        self.endpoint = endpoint._replace(tls=tls, where=moderation.path)
        self.authority = endpoint.authority
        self.path = endpoint.path
        lines: list[bytes] = []
        auth = moderation.auth
        if auth is not None:
            lines.append(f"{auth.header_name}: {auth.prefix}{auth.key}".encode("latin-1"))
        self.lines = modified_lines(lines, moderation.request_headers)

    def on_request(self, prompt: Prompt) -> GuardCall:
        texts = [m["content"] for m in request_messages(prompt.route_type, prompt.obj)]
        body = dumps({"input": texts, "model": self.config.model}).encode()
        request = _request_bytes(b"POST", self.path, self.authority, self.lines, body)
        return GuardCall(self.target, request, GUARD_TIMEOUT)

    def request_answer(self, prompt: Prompt, status: int, body: bytes) -> Verdict:
        if not 200 <= status < 300:
            raise GuardFailed(f"moderation answered {status}")
        try:
            doc = loads(body)
        except ValueError as error:
            raise GuardFailed(f"moderation answer is not JSON: {error}") from None
        results = doc.get("results") if type(doc) is dict else None
        if type(results) is not list:
            raise GuardFailed("moderation answer has no results")
        if any(type(r) is dict and r.get("flagged") is True for r in results):
            return Verdict("Reject", self.rejection)
        return ALLOW


def modified_lines(lines: list[bytes], modifier: HeaderModifier | None) -> list[bytes]:
    if modifier is None:
        return lines
    names = {n.lower() for n, _ in modifier.set} | {n.lower() for n in modifier.remove}
    kept = [line for line in lines
            if line.split(b":", 1)[0].decode("latin-1").lower() not in names]
    kept += [f"{n}: {v}".encode("latin-1") for n, v in (*modifier.set, *modifier.add)]
    return kept


def compile_guard(config: GuardConfig, moderation: Endpoint) -> Guard:
    """The guard for one config entry; `moderation`: OpenAI's moderation endpoint."""
    if config.kind == "regex":
        return RegexGuard(config)
    if config.kind == "webhook":
        return WebhookGuard(config)
    return ModerationGuard(config, moderation)
