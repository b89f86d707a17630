"""The `llm:` model router: which configured model serves a request (agentgateway's
llm/model_router.rs), sans-IO.

A request names its model in the JSON body (`model`) or, for Gemini's native routes, in the
path. The router answers `/v1/models` itself, resolves virtual models (weighted, failover,
conditional) to a configured model, matches models by name pattern and header `matches`
(most specific pattern first), and applies the model's request-body changes (provider model,
`transformation`, `overrides`, `defaults`, in agentgateway's order). Errors are OpenAI-style
JSON with agentgateway's messages and codes.
"""

from __future__ import annotations

import json
import random
import re
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, cast
from urllib.parse import unquote

from agw_fast.config.model import LLMModel, LLMVirtualModel, ValueMatch
from agw_fast.config.rust_regex import compile_rust_regex
from agw_fast.core import cel
from agw_fast.core.authorization import RuleSet
from agw_fast.errors import ConfigError, ProxyError
from agw_fast.llm import tokenizer
from agw_fast.llm.health import HealthState, choose_failover
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.openai import LLMRequestError, RouteTypeResolver
from agw_fast.llm.shaping import RequestShaping

if TYPE_CHECKING:
    from agw_fast.llm.guardrails import GuardPipeline

__all__ = [
    "DEFAULT_ROUTE_TYPES",
    "LocalAnswer",
    "ModelRoute",
    "ModelRouter",
    "ProviderGroups",
    "Routed",
    "apply_body_changes",
    "cel_json",
    "llm_error",
]

# agentgateway's `default_route_types()`: path suffix -> route type. `detect` forwards and
# observes; `passthrough` forwards untouched.
DEFAULT_ROUTE_TYPES: tuple[tuple[str, str], ...] = (
    ("/v1/chat/completions", "completions"),
    ("/v1/messages", "messages"),
    ("/v1/messages/count_tokens", "anthropicTokenCount"),
    (":rawPredict", "messages"),
    (":streamRawPredict", "messages"),
    (":generateContent", "generateContent"),
    (":streamGenerateContent", "generateContent"),
    (":countTokens", "geminiCountTokens"),
    ("/v1/responses", "responses"),
    ("/v1/images/generations", "detect"),
    ("/v1/images/edits", "detect"),
    ("/v1/images/variations", "detect"),
    ("/v1/responses/compact", "detect"),
    ("/v1/embeddings", "embeddings"),
    ("/v1/rerank", "rerank"),
    ("/v2/rerank", "rerank"),
    ("*", "passthrough"),
)
_PATH_MODEL = re.compile(
    r"/models/([^/:]+):(?:generateContent|streamGenerateContent|countTokens|rawPredict|streamRawPredict)$"
)
# agentgateway's own answer for the `models` route type of an `ai` backend.
MODELS_NOT_IMPLEMENTED = """{"error":"Route 'Models' not implemented"}"""
_NO_HEADERS: dict[str, str] = {}
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def llm_error(status: int, message: str, code: str) -> LocalAnswer:
    """agentgateway's `llm_error_response`: OpenAI's error shape."""
    body = _encode(
        {"error": {"message": message, "type": "invalid_request_error", "code": code}}
    ).encode()
    return LocalAnswer(status, body)


class LocalAnswer(NamedTuple):
    """The router answers the request itself (JSON body unless `content_type` says else)."""

    status: int
    body: bytes
    content_type: bytes = b"application/json"


# A model matched by name and headers whose `authorization` denies the request, with no
# other model matching (agentgateway's `model_authorization_denied_response`).
_MODEL_DENIED = llm_error(403, "Model authorization denied", "model_authorization_denied")
# A failover target's `authorization` is agentgateway's backend policy on that model, not
# the router's check: its answer is the authorization policy's (`AuthorizationFailed`).
_BACKEND_DENIED = LocalAnswer(403, b"authorization failed", b"text/plain")


@dataclass(eq=False, slots=True)
class ModelRoute:
    """One `llm.models` entry, compiled. `backend` is the plan's runtime backend for it
    (opaque here: the llm layer does not know the proxy's types)."""

    config: LLMModel
    index: int
    header_matches: tuple[tuple[tuple[str, re.Pattern[str] | None, str], ...], ...]
    transformations: tuple[tuple[str, cel.CelProgram], ...]
    route_types: RouteTypeResolver
    unhealthy: cel.CelProgram | None = None  # health.unhealthyExpression
    backend: object = None
    authorization: RuleSet | None = None  # the model's `authorization` rules
    # `finalTransformation`: set on the provider-format body (calls.final_transformation)
    final_transformations: tuple[tuple[str, cel.CelProgram], ...] = ()
    # The binds form's `policies.ai` model aliases and prompts (ProviderGroups only).
    shaping: RequestShaping | None = None
    guards: GuardPipeline | None = None  # `guardrails` (llm/guardrails), compiled by the plan

    @property
    def name(self) -> str:
        return self.config.name

    def matches_headers(self, headers: dict[str, str]) -> bool:
        if not self.header_matches:
            return True
        for group in self.header_matches:
            for name, pattern, exact in group:
                value = headers.get(name)
                if value is None:
                    break
                if pattern is not None:
                    if pattern.fullmatch(value) is None:
                        break
                elif value != exact:
                    break
            else:
                return True
        return False


@dataclass(eq=False, slots=True)
class _Virtual:
    config: LLMVirtualModel
    conditions: tuple[cel.CelProgram | None, ...] = ()
    cumulative: tuple[int, ...] = ()
    groups: tuple[tuple[int, ...], ...] = ()  # failover: target indexes by priority
    # failover: each target's model route and health, in this process
    target_routes: tuple[ModelRoute, ...] = ()
    health: list[HealthState] = field(default_factory=list)


@dataclass(eq=False, slots=True)
class Routed:
    """The request goes to `route`'s provider; `obj` is the body after the model's changes
    (None for a route type whose body is not read)."""

    route: ModelRoute
    route_type: str
    requested_model: str
    obj: dict[str, object] | None
    health: HealthState | None = None  # a failover target's health, to record the outcome
    virtual: _Virtual | None = None
    # Whether `obj` differs from the client's body (when not, its bytes can be sent as they
    # are, with no serialisation).
    changed: bool = True

    def record(self, unhealthy: bool, retry_after: float | None, now: float) -> float | None:
        """A failover target's response outcome; the eviction seconds when it evicts."""
        state = self.health
        if state is None:
            return None
        health = self.route.config.health
        return state.record(
            unhealthy,
            health.eviction if health is not None else None,
            health is not None,
            retry_after,
            now,
        )


class ModelRouter:
    """Compiled once per config; `resolve` per request."""

    def __init__(
        self,
        models: Sequence[ModelRoute],
        virtual_models: Sequence[LLMVirtualModel],
        created: int,
    ) -> None:
        self.models = tuple(models)
        # Header `matches` are rare: without them no request's headers are looked at.
        self.reads_headers = any(m.header_matches for m in self.models)
        self.created = created
        # Only a router with a model that has `authorization` rules checks any per request.
        self.authorizing = any(m.authorization is not None for m in self.models)
        self.virtual: dict[str, _Virtual] = {}
        for vm in virtual_models:
            self.virtual.setdefault(vm.name, self._compile_virtual(vm))

    def _compile_virtual(self, vm: LLMVirtualModel) -> _Virtual:
        compiled = _Virtual(vm)
        if vm.kind == "conditional":
            compiled.conditions = tuple(
                None if t.when is None else _compile(t.when, t.path + ".when", cel.LLM_VARIABLES)
                for t in vm.targets
            )
        elif vm.kind == "weighted":
            running = 0
            cumulative = []
            for t in vm.targets:
                running += t.weight
                cumulative.append(running)
            compiled.cumulative = tuple(cumulative)
        else:
            priorities = sorted({t.priority for t in vm.targets})
            compiled.groups = tuple(
                tuple(i for i, t in enumerate(vm.targets) if t.priority == p) for p in priorities
            )
            routes = []
            for t in vm.targets:
                route = self._concrete(t.model, allow_internal=True, headers=None)
                # The loader checked every target matches a model.
                assert isinstance(route, ModelRoute)
                routes.append(route)
            compiled.target_routes = tuple(routes)
            compiled.health = [HealthState() for _ in vm.targets]
        return compiled

    # -- per request ------------------------------------------------------------------------

    def resolve(
        self,
        path: str,
        header_fields: Sequence[tuple[bytes, bytes]],
        body: bytes,
        request_variables: Callable[[], dict[str, object]],
        now: float,
    ) -> LocalAnswer | Routed:
        authorized = _authorizer(request_variables) if self.authorizing else None
        if _is_model_list(path):
            return self.model_list(authorized)
        obj: dict[str, object]
        path_model = _PATH_MODEL.search(path)
        if path_model is not None:
            # Gemini's native routes name the model in the path; it wins over the body's.
            requested = unquote(path_model.group(1))
            try:
                parsed = loads(body) if body else {}
            except (ValueError, RecursionError):
                parsed = {}
            obj = parsed if type(parsed) is dict else {}
        else:
            try:
                parsed = loads(body)
            except (ValueError, RecursionError):
                return llm_error(400, "LLM request body must be valid JSON", "invalid_request_body")
            model = parsed.get("model") if type(parsed) is dict else None
            if type(model) is not str:
                return llm_error(
                    400, "LLM request body is missing string field 'model'", "missing_model"
                )
            obj = cast("dict[str, object]", parsed)
            requested = model
        headers = _header_values(header_fields) if self.reads_headers else _NO_HEADERS
        virtual = self.virtual.get(requested)
        health: HealthState | None = None
        if virtual is not None:
            chosen = self._virtual_target(virtual, obj, request_variables, now)
            if isinstance(chosen, LocalAnswer):
                return chosen
            target_model, index = chosen
            if virtual.config.kind == "failover":
                route = virtual.target_routes[index]
                health = virtual.health[index]
                if authorized is not None and not authorized(route):
                    return _BACKEND_DENIED
            else:
                found = self._concrete(
                    target_model, allow_internal=True, headers=headers, authorized=authorized
                )
                if isinstance(found, LocalAnswer):
                    return found
                if found is None:
                    return llm_error(
                        404,
                        f"Virtual model {virtual.config.name} selected target {target_model}, "
                        "but no matching model was found",
                        "virtual_model_target_not_found",
                    )
                route = found
            requested = target_model
        else:
            found = self._concrete(
                requested, allow_internal=False, headers=headers, authorized=authorized
            )
            if found is None:
                return llm_error(404, "Model not found", "model_not_found")
            if isinstance(found, LocalAnswer):
                return found
            route = found
        # The chosen model goes into the body before the model's own changes (a Gemini native
        # body carries none; its provider call takes it out again).
        original = obj.get("model")
        obj["model"] = requested
        route_type = route.route_types(path)
        routed = Routed(route, route_type, requested, obj, health, virtual)
        error = self._mutate(routed, request_variables)
        config = route.config
        routed.changed = (
            path_model is not None
            or obj["model"] != original
            or bool(config.transformation or config.overrides or config.defaults)
        )
        if error is not None:
            return error
        return routed

    def model_list(self, authorized: Callable[[ModelRoute], bool] | None = None) -> LocalAnswer:
        """Public models the request may use (agentgateway lists a model only if its
        `authorization` allows the request), then virtual models."""
        entries = [
            m.name
            for m in self.models
            if m.config.public and (authorized is None or authorized(m))
        ]
        entries += list(self.virtual)
        body = _encode(
            {
                "data": [
                    {"id": name, "object": "model", "created": self.created, "owned_by": "openai"}
                    for name in entries
                ],
                "object": "list",
            }
        ).encode()
        return LocalAnswer(200, body)

    def _concrete(
        self,
        model: str,
        *,
        allow_internal: bool,
        headers: dict[str, str] | None,
        authorized: Callable[[ModelRoute], bool] | None = None,
    ) -> ModelRoute | LocalAnswer | None:
        """The first model matching by name and headers that the request is authorized
        for; the 403 answer when models matched but each one's `authorization` denied."""
        denied = False
        for route in self.models:
            if not (allow_internal or route.config.public):
                continue
            if not _name_matches(route.config.name, model):
                continue
            if headers is not None and not route.matches_headers(headers):
                continue
            if authorized is not None and not authorized(route):
                denied = True
                continue
            return route
        return _MODEL_DENIED if denied else None

    def _virtual_target(
        self,
        virtual: _Virtual,
        obj: dict[str, object],
        request_variables: Callable[[], dict[str, object]],
        now: float,
    ) -> tuple[str, int] | LocalAnswer:
        targets = virtual.config.targets
        kind = virtual.config.kind
        if kind == "weighted":
            total = virtual.cumulative[-1]
            if total <= 0:
                return llm_error(
                    404,
                    f"Virtual model {virtual.config.name} could not be resolved",
                    "virtual_model_not_resolved",
                )
            index = bisect_right(virtual.cumulative, random.randrange(total))
            return targets[index].model, index
        if kind == "failover":
            index = choose_failover(virtual.groups, virtual.health, now)
            return targets[index].model, index
        bound: object = None
        for index, condition in enumerate(virtual.conditions):
            if condition is None:
                return targets[index].model, index
            if bound is None:
                variables = request_variables() if condition.uses - {"llmRequest"} else {}
                variables["llmRequest"] = obj
                bound = cel.activation(variables, cel.LLM_VARIABLES)
            if condition.evaluate_bool(bound):
                return targets[index].model, index
        return llm_error(
            400,
            f"Virtual model {virtual.config.name} did not match any conditional target",
            "virtual_model_no_matching_target",
        )

    def _mutate(
        self, routed: Routed, request_variables: Callable[[], dict[str, object]]
    ) -> LocalAnswer | None:
        """The provider model, then `transformation` (evaluated on the body before any
        change of this step), `overrides` and `defaults`, as agentgateway orders them."""
        obj = routed.obj
        if obj is None or routed.route_type in ("passthrough", "detect"):
            return None
        config = routed.route.config
        provider_model = config.model
        if provider_model is None and routed.health is not None:
            # A failover target without params.model sends the target's name
            # (agentgateway's `ensure_ai_provider_model`).
            provider_model = routed.requested_model
        if provider_model is not None:
            obj["model"] = provider_model
        if not apply_body_changes(routed.route, obj, request_variables):
            return None
        if type(obj.get("model")) is not str:
            return llm_error(
                400,
                "failed to process LLM request: missing field: model not specified",
                "missing_model",
            )
        return None


def apply_body_changes(
    route: ModelRoute,
    obj: dict[str, object],
    request_variables: Callable[[], dict[str, object]],
) -> bool:
    """The model's `transformation` (each expression evaluated on the body before any change
    of this step), `overrides` and `defaults`, in agentgateway's order
    (`apply_request_body_mutations`); False when it has none."""
    config = route.config
    transformations = route.transformations
    if not (transformations or config.overrides or config.defaults):
        return False
    results: list[tuple[str, object]] = []
    if transformations:
        uses: set[str] = set()
        for _, program in transformations:
            uses |= program.uses
        variables = request_variables() if uses - {"llmRequest"} else {}
        variables["llmRequest"] = obj
        bound = cel.activation(variables, cel.LLM_VARIABLES)
        for key, program in transformations:
            value = program.evaluate(bound)
            results.append((key, None if isinstance(value, cel.EvaluationError) else value))
    for key, value in config.overrides:
        obj[key] = value
    for key, value in results:
        if value is None:
            obj.pop(key, None)
        else:
            obj[key] = cel_json(value)
    for key, value in config.defaults:
        obj.setdefault(key, value)
    return True


def compile_model_route(config: LLMModel, index: int) -> ModelRoute:
    """A `ModelRoute` with its CEL and header patterns compiled (ConfigError on a bad one)."""
    matches = tuple(
        tuple(_header_match(m, compile_rust_regex) for m in group)
        for group in config.header_matches
    )
    transformations = tuple(
        (key, _compile(text, f"{config.path}.transformation.{key}", cel.LLM_VARIABLES))
        for key, text in config.transformation
    )
    routes = DEFAULT_ROUTE_TYPES
    if config.passthrough is not None:
        kind = "detect" if config.passthrough == "detect" else "passthrough"
        routes = tuple((s, kind if s == "*" else t) for s, t in routes)
    health = config.health
    unhealthy = None
    if health is not None and health.unhealthy_expression is not None:
        unhealthy = _compile(health.unhealthy_expression, health.path, cel.HEALTH_VARIABLES)
    final = tuple(
        (key, _compile(text, f"{config.path}.finalTransformation.{key}", cel.LLM_VARIABLES))
        for key, text in config.final_transformation
    )
    if config.tokenize:
        tokenizer.preload()  # at load, before the workers fork: never on the request path
    return ModelRoute(
        config,
        index,
        matches,
        transformations,
        RouteTypeResolver(routes),
        unhealthy,
        authorization=RuleSet.compile(config.authorization),
        final_transformations=final,
    )


def _authorizer(
    request_variables: Callable[[], dict[str, object]],
) -> Callable[[ModelRoute], bool]:
    """Whether a model's `authorization` lets this request through; the request's CEL
    variables are bound once, on the first model that has rules."""
    bound: object = None

    def authorized(route: ModelRoute) -> bool:
        nonlocal bound
        rules = route.authorization
        if rules is None:
            return True
        if bound is None:
            bound = cel.activation(request_variables())
        return rules.allows(bound)

    return authorized


def _header_match(
    match: ValueMatch, compile_regex: Callable[[str], re.Pattern[str]]
) -> tuple[str, re.Pattern[str] | None, str]:
    name = match.name.lower()
    if match.kind == "regex":
        return name, compile_regex(match.value), ""
    return name, None, match.value


def _compile(text: str, path: str, variables: tuple[str, ...]) -> cel.CelProgram:
    try:
        return cel.compile_expression(text, variables)
    except cel.CelCompileError as error:
        raise ConfigError(path, str(error)) from None


def cel_json(value: object) -> object:
    """A CEL result as JSON data (bytes become text)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value


def _name_matches(pattern: str, model: str) -> bool:
    if pattern == "*":
        return True
    if pattern.endswith("*"):
        return model.startswith(pattern[:-1])
    if pattern.startswith("*"):
        return model.endswith(pattern[1:])
    return pattern == model


def _is_model_list(path: str) -> bool:
    path = path.rstrip("/")
    for base in ("/v1/models", "/models"):
        if path == base or path.startswith(base + "/"):
            return True
    return False


def _header_values(fields: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for name, value in fields:
        key = name.decode("latin-1")
        if key not in headers:
            headers[key] = value.decode("latin-1")
    return headers


class ProviderGroups:
    """The binds form's `ai` backend when it needs more than the OpenAI fast path: a provider
    other than OpenAI, a route type that is translated, or `groups` (priority groups of
    providers with failover, as agentgateway's `EndpointSet`). The route type comes from the
    route's `ai.routes`; the provider's `model`, when set, replaces the client's."""

    __slots__ = ("routes", "groups", "route_types", "health")

    def __init__(
        self,
        routes: Sequence[ModelRoute],
        groups: tuple[tuple[int, ...], ...],
        route_types: RouteTypeResolver,
    ) -> None:
        self.routes = tuple(routes)
        self.groups = groups
        self.route_types = route_types
        self.health = [HealthState() for _ in routes]

    def resolve(
        self,
        path: str,
        header_fields: Sequence[tuple[bytes, bytes]],
        body: bytes,
        request_variables: Callable[[], dict[str, object]],
        now: float,
    ) -> LocalAnswer | Routed:
        route_type = self.route_types(path)
        if route_type == "models":
            raise ProxyError(501, MODELS_NOT_IMPLEMENTED, content_type=b"application/json")
        index = 0 if len(self.routes) == 1 else choose_failover(self.groups, self.health, now)
        route = self.routes[index]
        health = self.health[index]
        if route_type == "passthrough":
            return Routed(route, route_type, "", None, health)
        try:
            parsed = loads(body)
        except (ValueError, RecursionError) as error:
            if route_type == "detect":
                return Routed(route, route_type, "", None, health)
            raise LLMRequestError(f"invalid JSON: {error}") from None
        if type(parsed) is not dict:
            if route_type == "detect":
                return Routed(route, route_type, "", None, health)
            raise LLMRequestError("invalid JSON: request body must be a JSON object")
        obj = cast("dict[str, object]", parsed)
        path_model = _PATH_MODEL.search(path)
        if path_model is not None and type(obj.get("model")) is not str:
            obj["model"] = unquote(path_model.group(1))
        provider_model = route.config.model
        changed = path_model is not None
        if route_type != "detect":
            # agentgateway's order (llm/mod.rs `read_body_resolving_model`, then
            # `apply_model_alias` and `prepare_request`): the provider's model, the body's
            # transformations, overrides and defaults, the alias of the model the body then
            # names, the prompts. A `detect` body is forwarded as the client sent it.
            if provider_model is not None:
                obj["model"] = provider_model
                changed = True
            if apply_body_changes(route, obj, request_variables):
                changed = True
        model = obj.get("model")
        if type(model) is not str:
            if route_type == "detect":
                return Routed(route, route_type, "", None, health)
            raise LLMRequestError("missing field: model not specified")
        shaping = route.shaping
        if shaping is not None and route_type != "detect":
            aliased = shaping.alias(model) if shaping.has_aliases else None
            if aliased is not None and aliased != model:
                obj["model"] = model = aliased
                changed = True
            if shaping.enrich(obj, route_type):
                changed = True
        return Routed(route, route_type, model, obj, health, None, changed)
