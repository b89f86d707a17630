"""`frontendPolicies.accessLog`: which requests get an access line, and what it holds.

agentgateway's semantics (crates/agentgateway/src/telemetry/log.rs, `CelLoggingExecutor` and
`DropOnLog::drop`): `filter` is a CEL expression evaluated when the request ends; the line
is written only when it yields true (an error or a non-boolean is false: `eval_bool`).
`remove` names fields left out of the line; each `add` entry (field name -> CEL expression)
is evaluated then and appended after the built-in fields, in file order, and a built-in
field of the same name is left out in its place (`LoggingFields::has`). An expression that
fails or yields null adds nothing. A map or list value is one field holding that JSON value
(agentgateway flattens only on its `flatten()` functions, which agw-fast refuses).

Variables at log time: `request`, `source`, `jwt`, `apiKey`, `basicAuth` (as for
`authorization`), `response.code`, and from an LLM call `llm.provider`, `llm.requestModel`,
`llm.responseModel`, `llm.inputTokens`, `llm.cachedInputTokens`, `llm.outputTokens`. Other
fields of `response` and `llm` (headers, body, cost...) are refused at load.

Everything is compiled here at load. `request` and the authentication variables need what
only the policy pipeline sees (headers, query, claims): when an expression uses them,
`capture_step` is added to every listener's steps so each request carries its
`PolicyRequest` to telemetry; otherwise nothing more is carried.
"""

from __future__ import annotations

import re

from agw_fast.config.model import AccessLogPolicy
from agw_fast.core.cel import (
    LOG_VARIABLES,
    CelCompileError,
    CelProgram,
    EvaluationError,
    compile_expression,
)
from agw_fast.errors import ConfigError
from agw_fast.policies.request import PolicyAnswer, PolicyRequest

__all__ = ["LLM_FIELDS", "CompiledAccessLog", "capture_step", "compile_access_log"]

# The `llm` fields agw-fast knows at log time (agentgateway's LLMContext names).
LLM_FIELDS = frozenset(
    {"provider", "requestModel", "responseModel", "inputTokens", "cachedInputTokens",
     "outputTokens"}
)  # fmt: skip
_RESPONSE_FIELDS = frozenset({"code"})
# The variables whose values only the policy pipeline holds (see `capture_step`).
_REQUEST_VARIABLES = frozenset({"request", "jwt", "apiKey", "basicAuth"})

_STRING = re.compile(r"""[rRbB]*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")
_FIELD_OF = re.compile(r"\b(response|llm)\s*\.\s*([A-Za-z_][A-Za-z0-9_]*)")


class CompiledAccessLog:
    """The compiled policy: `keep` and `additions` take the engine's bound variables."""

    __slots__ = ("additions_programs", "filter", "hidden", "needs_request", "uses")

    def __init__(
        self, filter: CelProgram | None, add: tuple[tuple[str, CelProgram], ...],
        remove: frozenset[str],
    ) -> None:  # fmt: skip
        self.filter = filter
        self.additions_programs = add
        # Built-in fields left out: removed ones and those an `add` entry replaces.
        self.hidden = remove | {name for name, _ in add}
        programs = ([filter] if filter is not None else []) + [p for _, p in add]
        self.uses: frozenset[str] = frozenset().union(*(p.uses for p in programs))
        self.needs_request = bool(self.uses & _REQUEST_VARIABLES)

    def keep(self, bound: object) -> bool:
        return self.filter is None or self.filter.evaluate_bool(bound)

    def additions(self, bound: object) -> list[tuple[str, object]]:
        """(field, value) for each `add` entry that yields a non-null value."""
        added = []
        for name, program in self.additions_programs:
            value = program.evaluate(bound)
            if value is not None and not isinstance(value, EvaluationError):
                added.append((name, value))
        return added


def _compile(text: str, path: str) -> CelProgram:
    try:
        program = compile_expression(text, LOG_VARIABLES)
    except CelCompileError as error:
        raise ConfigError(path, f"invalid CEL expression: {error}") from None
    for variable, field in _FIELD_OF.findall(_STRING.sub('""', text)):
        known = _RESPONSE_FIELDS if variable == "response" else LLM_FIELDS
        if field not in known:
            listed = ", ".join(f"{variable}.{f}" for f in sorted(known))
            raise ConfigError(
                path, f"not supported: the CEL field `{variable}.{field}` (agw-fast has {listed})"
            )
    return program


def compile_access_log(policy: AccessLogPolicy | None) -> CompiledAccessLog | None:
    """The compiled policy; None when there is none (the default access line)."""
    if policy is None or (policy.filter is None and not policy.add and not policy.remove):
        return None
    filter = None if policy.filter is None else _compile(policy.filter, f"{policy.path}.filter")
    add = tuple(
        (name, _compile(text, f"{policy.path}.add.{name}")) for name, text in policy.add
    )
    return CompiledAccessLog(filter, add, policy.remove)


def capture_step(request: PolicyRequest) -> PolicyAnswer | None:
    """A step that answers nothing: it makes the listener build a `PolicyRequest`, which
    then travels with the request to its access line."""
    return None
