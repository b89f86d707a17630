"""The binds form's `policies.ai` model aliases and prompt enrichment, compiled once per
backend (agentgateway's llm/policy/mod.rs `resolve_model_alias`, `apply_prompt_enrichment`
and the `prepend_prompts`/`append_prompts` of each request type in crates/llm/src/types/).

Where they run (agentgateway's llm/mod.rs): the provider's model replaces the client's, then
the body's `transformations`, `overrides` and `defaults` apply (llm/router.py
`apply_body_changes`), then the alias resolves the model the body now names, then the prompts
are added to the client-format body, before it is translated for the provider (where
`promptCaching` places its markers) and before `finalTransformations` set fields of the
translated body (llm/calls.py `final_transformation`). Sans-IO.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

from agw_fast.config.model import AIBackend, AIPolicy, BackendPolicies, Route
from agw_fast.core import cel
from agw_fast.errors import ConfigError

__all__ = ["RequestShaping", "check_expressions", "compile_shaping"]

Message = tuple[str, str]  # (role, content)


def _chat(messages: list[object], prepend: tuple[Message, ...], append: tuple[Message, ...]
          ) -> None:
    """Chat completions: each prompt is a message with its role as configured."""
    messages[:0] = [{"role": role, "content": content} for role, content in prepend]
    messages.extend({"role": role, "content": content} for role, content in append)


def _responses_item(role: str, content: str) -> dict[str, object]:
    """A Responses input item for a prompt, as agentgateway builds it: an assistant message
    with its text as content, any other role (unknown ones as `user`) with one input_text."""
    if role == "assistant":
        return {"type": "message", "role": "assistant", "content": content}
    if role not in ("system", "developer"):
        role = "user"
    return {"type": "message", "role": role, "content": [{"type": "input_text", "text": content}]}


def _split_system(
    prompts: tuple[Message, ...],
) -> tuple[list[str], list[Message]]:
    return (
        [content for role, content in prompts if role == "system"],
        [(role, content) for role, content in prompts if role != "system"],
    )


def _messages_system(obj: dict[str, object], before: list[str], after: list[str]) -> None:
    """Anthropic Messages: system prompts join `system`, which becomes a list of text blocks
    (a string system prompt is its first block)."""
    if not (before or after):
        return
    system = obj.get("system")
    if type(system) is list:
        blocks: list[object] = system
    elif type(system) is str:
        blocks = [{"type": "text", "text": system}]
    else:
        blocks = []
    blocks[:0] = [{"type": "text", "text": text} for text in before]
    blocks.extend({"type": "text", "text": text} for text in after)
    obj["system"] = blocks


def _gemini_content(role: str, content: str) -> dict[str, object]:
    return {"role": "model" if role == "assistant" else role, "parts": [{"text": content}]}


def _gemini_system(obj: dict[str, object], before: list[str], after: list[str]) -> None:
    """Gemini: system prompts are parts of `systemInstruction` (the snake_case spelling is
    read too, and written back in camelCase, as agentgateway re-serialises it)."""
    if not (before or after):
        return
    instruction = obj.pop("systemInstruction", None)
    if instruction is None:
        instruction = obj.pop("system_instruction", None)
    else:
        obj.pop("system_instruction", None)
    if type(instruction) is not dict:
        instruction = {}
    parts = instruction.get("parts")
    if type(parts) is not list:
        parts = instruction["parts"] = []
    parts[:0] = [{"text": text} for text in before]
    parts.extend({"text": text} for text in after)
    obj["systemInstruction"] = instruction


class RequestShaping:
    """`modelAliases` and `prompts` of one backend's merged `policies.ai`."""

    __slots__ = ("_exact", "_wildcards", "prepend", "append", "_enrich")

    def __init__(
        self,
        aliases: tuple[tuple[str, str], ...],
        prepend: tuple[Message, ...] = (),
        append: tuple[Message, ...] = (),
    ) -> None:
        # Every key is looked up exactly first (a wildcard key too, as agentgateway's map).
        self._exact = dict(aliases)
        wildcards = [
            (len(name), index, re.compile(".*".join(map(re.escape, name.split("*")))), target)
            for index, (name, target) in enumerate(aliases)
            if "*" in name
        ]
        # The longest pattern first (agentgateway's specificity); equal lengths in config
        # order, where agentgateway's hash map leaves the order unspecified.
        wildcards.sort(key=lambda entry: (-entry[0], entry[1]))
        self._wildcards = tuple((pattern, target) for _, _, pattern, target in wildcards)
        self.prepend = prepend
        self.append = append
        self._enrich: dict[str, Callable[[dict[str, object]], bool]] = {}
        if prepend or append:
            self._enrich = {
                "completions": self._completions,
                "responses": self._responses,
                "messages": self._messages,
                "anthropicTokenCount": self._messages,
                "generateContent": self._gemini,
                "geminiCountTokens": self._gemini,
            }

    @property
    def has_aliases(self) -> bool:
        return bool(self._exact)

    def alias(self, model: str) -> str | None:
        """The model an alias maps `model` to; None when none matches."""
        target = self._exact.get(model)
        if target is not None:
            return target
        for pattern, wildcard_target in self._wildcards:
            if pattern.fullmatch(model) is not None:
                return wildcard_target
        return None

    def enrich(self, obj: dict[str, object], route_type: str) -> bool:
        """Add the prompts to a client-format body of `route_type`; whether it changed.
        Embeddings, rerank, `detect` and `passthrough` bodies get none, as in agentgateway."""
        enrich = self._enrich.get(route_type)
        return enrich is not None and enrich(obj)

    # -- per client format ---------------------------------------------------------------

    def _completions(self, obj: dict[str, object]) -> bool:
        messages = obj.get("messages")
        if type(messages) is not list:
            return False  # not a chat request: the provider answers it as such
        _chat(messages, self.prepend, self.append)
        return True

    def _responses(self, obj: dict[str, object]) -> bool:
        """Responses: a text `input` becomes a user message item first (agentgateway's
        `take_input_as_items`), then the prompts go around the items."""
        raw = obj.get("input")
        if type(raw) is str:
            items: list[object] = [
                {"type": "message", "role": "user",
                 "content": [{"type": "input_text", "text": raw}]}
            ]  # fmt: skip
        elif type(raw) is list:
            items = raw
        elif raw is None:
            items = []
        else:
            return False
        items[:0] = [_responses_item(role, content) for role, content in self.prepend]
        items.extend(_responses_item(role, content) for role, content in self.append)
        obj["input"] = items
        return True

    def _messages(self, obj: dict[str, object]) -> bool:
        """Anthropic Messages (and its token count): system prompts into `system`, the others
        as messages with their role as configured."""
        messages = obj.get("messages")
        if type(messages) is not list:
            return False
        system_before, chat_before = _split_system(self.prepend)
        system_after, chat_after = _split_system(self.append)
        _messages_system(obj, system_before, system_after)
        _chat(messages, tuple(chat_before), tuple(chat_after))
        return True

    def _gemini(self, obj: dict[str, object]) -> bool:
        """Gemini native: system prompts into `systemInstruction`, the others as `contents`
        (an assistant's role is `model`)."""
        contents = obj.get("contents")
        if contents is None:
            contents = obj["contents"] = []
        elif type(contents) is not list:
            return False
        system_before, chat_before = _split_system(self.prepend)
        system_after, chat_after = _split_system(self.append)
        _gemini_system(obj, system_before, system_after)
        contents[:0] = [_gemini_content(role, content) for role, content in chat_before]
        contents.extend(_gemini_content(role, content) for role, content in chat_after)
        return True


def compile_shaping(policy: AIPolicy | None) -> RequestShaping | None:
    """The compiled aliases and prompts of a merged `policies.ai`; None when it sets
    neither (the router then pays nothing for them)."""
    if policy is None:
        return None
    prompts = policy.prompts
    prepend = prompts.prepend if prompts is not None else ()
    append = prompts.append if prompts is not None else ()
    if not (policy.model_aliases or prepend or append):
        return None
    return RequestShaping(policy.model_aliases, prepend, append)


def check_expressions(route: Route, path: str) -> None:
    """Compile the CEL of every `policies.ai` of `route` (at `path`) and its backends, to
    name a bad expression where it is written (the plan compiles the merged policies)."""
    for policy, where in _ai_policies(route, path):
        for key, expressions in (
            ("transformations", policy.transformations),
            ("finalTransformations", policy.final_transformations),
        ):
            for name, text in expressions or ():
                try:
                    cel.compile_expression(text, cel.LLM_VARIABLES)
                except cel.CelCompileError as error:
                    raise ConfigError(f"{where}.{key}.{name}", str(error)) from None


def _ai_policies(route: Route, path: str) -> Iterator[tuple[AIPolicy, str]]:
    def of(policies: BackendPolicies | None, where: str) -> Iterator[tuple[AIPolicy, str]]:
        if policies is not None and policies.ai is not None:
            yield policies.ai, f"{where}.policies.ai"

    if route.policies is not None and route.policies.ai is not None:
        yield route.policies.ai, f"{path}.policies.ai"
    for index, backend in enumerate(route.backends):
        where = f"{path}.backends[{index}]"
        yield from of(backend.policies, where)
        target = backend.target
        if isinstance(target, AIBackend):
            yield from of(target.policies, f"{where}.ai")
            for gi, group in enumerate(target.groups):
                for pi, provider in enumerate(group):
                    yield from of(
                        provider.policies, f"{where}.ai.groups[{gi}].providers[{pi}]"
                    )
