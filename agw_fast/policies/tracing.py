"""Tracing decisions, without I/O: W3C trace context, sampling, and the compiled CEL.

agentgateway's semantics (crates/agentgateway/src/telemetry/trc.rs and log.rs
`TraceSampler`, proxy/httpproxy.rs): a request whose `traceparent` parses is sampled by
`clientSampling` (default: yes), one without by `randomSampling` (default: no). A sampled
request gets a span of its own: the client's trace with a new span id (its flags kept), or
a new trace with the sampled flag; that span's `traceparent` replaces the client's on the
way upstream, so the upstream's spans are children of the gateway's. A span is exported
only when its sampled flag is set (a client saying "not sampled" is followed) and the
`filter`, if any, is true. `tracestate` is forwarded as the client sent it.

Sampling values: a boolean, or a number in 0..1 (the chance to sample), or a CEL expression
giving either; anything else (or an error) is "no", as agentgateway's `eval_rng`.
"""

from __future__ import annotations

import random
import re

from agw_fast.config.model import TracingPolicy
from agw_fast.core.cel import (
    LOG_VARIABLES,
    VARIABLES,
    CelCompileError,
    CelProgram,
    compile_expression,
)
from agw_fast.errors import ConfigError

__all__ = [
    "LLM_TRACE_FIELDS",
    "CompiledTracing",
    "Sampler",
    "compile_tracing",
    "format_traceparent",
    "parse_traceparent",
]

# `llm` at span time: the access log's fields plus those agentgateway's examples use.
# `prompt` and `completion` are accepted (the examples name them) but agw-fast does not
# capture them yet: an expression reading them yields nothing, so its attribute is absent.
LLM_TRACE_FIELDS = frozenset(
    {"provider", "requestModel", "responseModel", "inputTokens", "cachedInputTokens",
     "outputTokens", "totalTokens", "streaming", "prompt", "completion"}
)  # fmt: skip
_RESPONSE_FIELDS = frozenset({"code"})
_REQUEST_VARIABLES = frozenset({"request", "jwt", "apiKey", "basicAuth"})
_STRING = re.compile(r"""[rRbB]*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_FIELD_OF = re.compile(r"\b(response|llm)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")
_HEX = frozenset(b"0123456789abcdefABCDEF")


def parse_traceparent(value: bytes) -> tuple[int, int, int, int] | None:
    """(version, trace id, parent span id, flags) of a W3C `traceparent`, or None when it is
    malformed (Trace Context §3.2: four hex fields of 2, 32, 16 and 2 digits; version ff,
    an all-zero trace id or parent id are invalid). Accepts what agentgateway accepts."""
    if len(value) != 55:
        return None
    parts = value.split(b"-")
    if len(parts) != 4 or [len(p) for p in parts] != [2, 32, 16, 2]:
        return None
    for part in parts:
        if not _HEX.issuperset(part):
            return None
    version = int(parts[0], 16)
    trace_id = int(parts[1], 16)
    span_id = int(parts[2], 16)
    if version == 0xFF or trace_id == 0 or span_id == 0:
        return None
    return version, trace_id, span_id, int(parts[3], 16)


def format_traceparent(version: int, trace_id: int, span_id: int, flags: int) -> bytes:
    return b"%02x-%032x-%016x-%02x" % (version, trace_id, span_id, flags)


class Sampler:
    """One sampling setting: a constant chance (1.0 always, 0.0 never) or a CEL program."""

    __slots__ = ("chance", "program")

    def __init__(self, chance: float, program: CelProgram | None = None) -> None:
        self.chance = chance
        self.program = program

    def sample(self, bound: object | None) -> bool:
        program = self.program
        if program is None:
            chance = self.chance
        else:
            value = program.evaluate(bound)
            if isinstance(value, bool):
                return value
            if not isinstance(value, int | float):
                return False
            chance = float(value)
        if chance >= 1.0:
            return True
        return chance > 0.0 and random.random() < chance


class CompiledTracing:
    """A `TracingPolicy` with its CEL compiled: samplers, attributes, filter, removals."""

    __slots__ = (
        "attributes", "client", "filter", "needs_request", "policy", "random", "remove",
        "resources", "sampling_uses", "uses",
    )  # fmt: skip

    def __init__(self, policy: TracingPolicy) -> None:
        self.policy = policy
        self.random = _sampler(policy.random_sampling, False, f"{policy.path}.randomSampling")
        self.client = _sampler(policy.client_sampling, True, f"{policy.path}.clientSampling")
        self.filter = (
            None if policy.filter is None else _compile(policy.filter, f"{policy.path}.filter")
        )
        self.attributes = tuple(
            (name, _compile(text, f"{policy.path}.{_add_key(policy)}.{name}"))
            for name, text in policy.attributes
        )
        self.resources = tuple(
            (name, _compile(text, f"{policy.path}.resources.{name}"))
            for name, text in policy.resources
        )
        # Built-in attributes left out: removed ones and those an added one replaces.
        self.remove = policy.remove | {name for name, _ in policy.attributes}
        programs = [p for _, p in self.attributes]
        if self.filter is not None:
            programs.append(self.filter)
        self.uses: frozenset[str] = frozenset().union(*(p.uses for p in programs))
        self.sampling_uses: frozenset[str] = frozenset().union(
            *(s.program.uses for s in (self.random, self.client) if s.program is not None)
        )
        self.needs_request = bool((self.uses | self.sampling_uses) & _REQUEST_VARIABLES)


def compile_tracing(policy: TracingPolicy | None) -> CompiledTracing | None:
    return None if policy is None else CompiledTracing(policy)


def _add_key(policy: TracingPolicy) -> str:
    return "attributes" if policy.path.startswith("frontendPolicies") else "fields.add"


def _sampler(text: str | None, default: bool, path: str) -> Sampler:
    if text is None:
        return Sampler(1.0 if default else 0.0)
    stripped = text.strip()
    if stripped in ("true", "false"):
        return Sampler(1.0 if stripped == "true" else 0.0)
    try:
        return Sampler(min(max(float(stripped), 0.0), 1.0))
    except ValueError:
        pass
    try:
        program = compile_expression(text, VARIABLES)
    except CelCompileError as error:
        raise ConfigError(path, f"invalid CEL expression: {error}") from None
    return Sampler(0.0, program)


def _compile(text: str, path: str) -> CelProgram:
    try:
        program = compile_expression(text, LOG_VARIABLES, flatten=True)
    except CelCompileError as error:
        raise ConfigError(path, f"invalid CEL expression: {error}") from None
    for variable, field in _FIELD_OF.findall(_STRING.sub('""', text)):
        known = _RESPONSE_FIELDS if variable == "response" else LLM_TRACE_FIELDS
        if field not in known:
            listed = ", ".join(f"{variable}.{f}" for f in sorted(known))
            raise ConfigError(
                path, f"not supported: the CEL field `{variable}.{field}` (agw-fast has {listed})"
            )
    return program
