"""Authorization rule sets: the CEL `allow`/`deny`/`require` evaluation shared by the
`authorization` policy (policies/authorization.py) and the `llm:` model router's per-model
`authorization` (llm/router.py).

agentgateway's evaluation (crates/agentgateway/src/http/authorization.rs, `RuleSets::validate`):
no rules allow everything; any true `deny` denies; then every `require` must be true; then
any true `allow` allows; otherwise the request is allowed only when there are no `allow`
rules (a deny-only list is a denylist, an allow list an allowlist). A rule whose evaluation
fails (a missing header, a wrong type) counts as false (`eval_bool`): a failed `deny` does
not deny, a failed `require` denies.
"""

from __future__ import annotations

from agw_fast.config.model import Authorization
from agw_fast.core.cel import Activation, CelCompileError, CelProgram, compile_expression
from agw_fast.errors import ConfigError

__all__ = ["RuleSet"]


class RuleSet:
    """One `authorization`'s rules, compiled. `uses`: the CEL variables they read."""

    __slots__ = ("allow", "deny", "require", "uses")

    def __init__(
        self,
        allow: tuple[CelProgram, ...],
        deny: tuple[CelProgram, ...],
        require: tuple[CelProgram, ...],
    ) -> None:
        self.allow = allow
        self.deny = deny
        self.require = require
        self.uses: frozenset[str] = frozenset().union(*(p.uses for p in (*allow, *deny, *require)))

    @classmethod
    def compile(cls, authorization: Authorization | None) -> RuleSet | None:
        """The compiled rules; None when there are none (everyone has access, at no cost).
        Raises ConfigError naming a rule whose CEL does not compile."""
        if authorization is None or not authorization.rules:
            return None
        modes: dict[str, list[CelProgram]] = {"allow": [], "deny": [], "require": []}
        for rule in authorization.rules:
            try:
                program = compile_expression(rule.expression)
            except CelCompileError as error:
                raise ConfigError(rule.path, f"invalid CEL expression: {error}") from None
            modes[rule.mode].append(program)
        return cls(tuple(modes["allow"]), tuple(modes["deny"]), tuple(modes["require"]))

    def allows(self, bound: Activation) -> bool:
        """Whether the rules let a request through; `bound` is its CEL activation."""
        for program in self.deny:
            if program.evaluate_bool(bound):
                return False
        for program in self.require:
            if not program.evaluate_bool(bound):
                return False
        for program in self.allow:
            if program.evaluate_bool(bound):
                return True
        return not self.allow
