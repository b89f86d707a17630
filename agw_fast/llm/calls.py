"""The upstream call for a routed `llm:` request: provider path, body and translation.

agentgateway picks, for the client's API (the route type) and the provider, the first
translation its provider speaks (llm/mod.rs `CHAT_TRANSLATIONS`): chat completions go to
Anthropic as Messages and to Gemini as native generateContent; Messages go to OpenAI-style
providers as chat completions, Responses to Gemini as chat completions on its
OpenAI-compatible endpoint; a `custom` provider (or preset) gets the first format it lists
that serves the call (llm/providers/custom.py); a format a provider cannot take is a 400.
Sans-IO.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from agw_fast.config.model import LLMModel
from agw_fast.core import cel
from agw_fast.llm.exchange import LLMRequest
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.custom import custom_format, custom_path
from agw_fast.llm.providers.openai import (
    LLMRequestError,
    default_path,
    serialize_body,
)
from agw_fast.llm.providers.vertex import PROVIDER_NAME as VERTEX_NAME
from agw_fast.llm.providers.vertex import vertex_call, vertex_host
from agw_fast.llm.router import cel_json
from agw_fast.llm.translate import StreamTranslator, Translation, TranslationError
from agw_fast.llm.translate.anthropic import (
    completions_to_messages,
    messages_passthrough,
    messages_to_completions,
)
from agw_fast.llm.translate.bedrock import bedrock_path, completions_to_bedrock
from agw_fast.llm.translate.gemini import (
    completions_to_gemini,
    gemini_passthrough,
    gemini_path,
)
from agw_fast.llm.translate.gemini_response import anthropic_error_from_google, is_google_error
from agw_fast.llm.translate.responses import responses_to_completions
from agw_fast.llm.usage import Usage

__all__ = [
    "ANTHROPIC_HOST",
    "ANTHROPIC_VERSION",
    "GEMINI_HOST",
    "GEMINI_KEY_PREFIX",
    "OPENAI_HOST",
    "default_host",
    "final_transformation",
    "prepare_call",
]

OPENAI_HOST = "api.openai.com"
ANTHROPIC_HOST = "api.anthropic.com"
GEMINI_HOST = "generativelanguage.googleapis.com"
ANTHROPIC_VERSION = "2023-06-01"
# Google API keys: sent as `x-goog-api-key` (native endpoints do not take them as a bearer
# token; the OpenAI-compatible ones take either).
GEMINI_KEY_PREFIX = "AIza"

_OPENAI_SUFFIX = {"responses": "responses", "embeddings": "embeddings"}
_NUMBER_TYPES = (int, float)


def default_host(model: LLMModel) -> str:
    """The provider's host when the model sets none (`baseUrl` / `hostOverride`)."""
    if model.provider == "anthropic":
        return ANTHROPIC_HOST
    if model.provider == "gemini":
        return GEMINI_HOST
    if model.bedrock is not None:
        return f"bedrock-runtime.{model.bedrock.region}.amazonaws.com"
    if model.provider == "vertex":
        assert model.vertex is not None
        return vertex_host(model.vertex.region)
    # A custom provider has none: the loader refuses one without `baseUrl`/`hostOverride`.
    assert model.provider != "custom", "custom providers always have a host"
    if model.provider == "azure":
        azure = model.azure
        assert azure is not None
        suffix = "openai.azure.com" if azure.resource_type == "openAI" else "services.ai.azure.com"
        return f"{azure.resource_name}.{suffix}"
    return OPENAI_HOST


def _unsupported(route_type: str, provider: str) -> LLMRequestError:
    return LLMRequestError(f"unsupported conversion: from {route_type} to provider {provider}")


def prepare_call(
    model: LLMModel,
    route_type: str,
    target: bytes,
    obj: dict[str, object] | None,
    body: bytes,
    changed: bool = True,
) -> LLMRequest:
    """The request to send for `obj` (the routed body) on `route_type` to `model`'s provider.

    `target` is the client's path and query, `body` its original bytes (sent unchanged for
    `passthrough`, and where no translation applies when `changed` is false). Raises
    `LLMRequestError` (400) for a conversion the provider lacks or a request the translation
    cannot express."""
    path, _, query_text = target.decode("latin-1").partition("?")
    query = "?" + query_text if query_text else ""
    provider = model.provider
    if route_type in ("passthrough", "detect") or obj is None:
        return LLMRequest(
            _prefixed(model, path).encode("latin-1") + query.encode("latin-1"),
            body,
            route_type,
            None,
            False,
            provider=_name(model),
        )
    stream = obj.get("stream") is True
    request_model = obj.get("model")
    assert type(request_model) is str  # the router made sure
    translation: Translation | None = None
    try:
        if provider == "custom":
            return _custom_call(
                model, route_type, path, query_text, obj, request_model, stream,
                None if changed else body,
            )
        if provider == "bedrock":
            return _bedrock_call(model, route_type, obj, request_model, stream)
        if provider == "vertex":
            path_out, out, translation, stream = vertex_call(
                model, route_type, path, obj, request_model, stream
            )
        elif provider in ("openAI", "azure"):
            foundry_claude = (
                provider == "azure" and _foundry(model) and _claude(model, request_model)
            )
            if foundry_claude:
                # Foundry serves Claude models on its Anthropic-native endpoint only.
                if route_type == "messages":
                    out, translation = messages_passthrough(obj)
                    suffix = "/anthropic/v1/messages"
                elif route_type == "completions":
                    out, translation = completions_to_messages(
                        obj, prompt_caching=model.prompt_caching
                    )
                    suffix = "/anthropic/v1/messages"
                elif route_type != "anthropicTokenCount":
                    raise _unsupported(route_type, provider)
                else:
                    out, suffix = serialize_body(obj), "/anthropic/v1/messages/count_tokens"
                prefix = model.path_prefix.rstrip("/") if model.path_prefix is not None else ""
                path_out = model.path_override or prefix + suffix
            elif route_type == "messages":
                out, translation = messages_to_completions(obj)
                path_out = _openai_path(model, "completions", request_model)
            elif route_type in ("completions", "responses", "embeddings", "rerank"):
                out = _openai_body(obj, route_type, None if changed else body)
                if model.keep_client_path and model.path_override is None:
                    path_out = path + query  # as the binds form's OpenAI fast path
                else:
                    path_out = _openai_path(model, route_type, request_model)
            else:
                raise _unsupported(route_type, provider)
        elif provider == "anthropic":
            if route_type == "completions":
                out, translation = completions_to_messages(
                    obj, prompt_caching=model.prompt_caching
                )
            elif route_type == "messages":
                out, translation = messages_passthrough(obj)
            elif route_type == "anthropicTokenCount":
                out = serialize_body(obj)
            else:
                raise _unsupported(route_type, provider)
            base = model.path_prefix.rstrip("/") if model.path_prefix is not None else "/v1"
            suffix = (
                "/messages/count_tokens" if route_type == "anthropicTokenCount" else "/messages"
            )
            path_out = model.path_override or base + suffix
        else:  # gemini
            prefix = model.path_prefix.rstrip("/") if model.path_prefix is not None else ""
            if route_type == "completions":
                out, translation = completions_to_gemini(obj)
                path_out = prefix + gemini_path(request_model, stream)
            elif route_type == "messages":
                out, inner = messages_to_completions(obj)
                translation = _GoogleErrors(inner)
                path_out = prefix + "/v1beta/openai/chat/completions"
            elif route_type == "responses":
                out, translation = responses_to_completions(obj)
                path_out = prefix + "/v1beta/openai/chat/completions"
            elif route_type == "embeddings":
                out = serialize_body(obj)
                path_out = prefix + "/v1beta/openai/embeddings"
            elif route_type in ("generateContent", "geminiCountTokens"):
                stream = path.endswith(":streamGenerateContent")
                obj.pop("model", None)
                out = serialize_body(obj)
                if route_type == "generateContent":
                    path_out = prefix + gemini_path(request_model, stream)
                    translation = gemini_passthrough()
                else:
                    path_out = prefix + f"/v1beta/models/{request_model}:countTokens"
            else:
                raise _unsupported(route_type, provider)
            if model.path_override is not None:
                path_out = model.path_override
    except TranslationError as error:
        raise LLMRequestError(str(error)) from None
    return _request(path_out, out, route_type, request_model, stream, obj, translation, model)


def _request(
    path_out: str,
    out: bytes,
    route_type: str,
    request_model: str,
    stream: bool,
    obj: dict[str, object],
    translation: Translation | None,
    model: LLMModel,
) -> LLMRequest:
    temperature = obj.get("temperature")
    if type(temperature) not in _NUMBER_TYPES:
        temperature = None
    max_tokens = obj.get("max_completion_tokens")
    if max_tokens is None:
        max_tokens = obj.get("max_tokens")
    if max_tokens is None:
        max_tokens = obj.get("max_output_tokens")  # the Responses API's name
    if type(max_tokens) is not int:
        max_tokens = None
    return LLMRequest(
        path_out.encode("latin-1"),
        out,
        route_type,
        request_model,
        stream,
        temperature,  # type: ignore[arg-type]
        max_tokens,
        provider=_name(model),
        translation=translation,
    )


class _GoogleErrors:
    """A Messages client's translation to Gemini's OpenAI-compatible endpoint, whose errors
    come in Google's shape: those become Anthropic errors directly (agentgateway does the
    same); anything else goes through the chat-completions translation."""

    __slots__ = ("_inner",)

    def __init__(self, inner: Translation) -> None:
        self._inner = inner

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        return self._inner.response_json(body)

    def error_json(self, status: int, body: bytes) -> bytes:
        if is_google_error(body):
            return anthropic_error_from_google(status, body)
        return self._inner.error_json(status, body)

    def stream(self) -> StreamTranslator:
        return self._inner.stream()


def _bedrock_call(
    model: LLMModel, route_type: str, obj: dict[str, object], request_model: str, stream: bool
) -> LLMRequest:
    """Chat completions to Bedrock's Converse API (agentgateway also maps Messages, Responses,
    embeddings, rerank and token counts to Bedrock; agw-fast has chat completions only).
    Raises TranslationError, LLMRequestError."""
    if route_type != "completions":
        raise LLMRequestError(
            f"translation from {route_type} to the bedrock provider is not implemented", 501
        )
    bedrock = model.bedrock
    assert bedrock is not None
    guardrail = None
    if bedrock.guardrail_identifier is not None and bedrock.guardrail_version is not None:
        guardrail = (bedrock.guardrail_identifier, bedrock.guardrail_version)
    out, translation = completions_to_bedrock(obj, request_model, guardrail)
    path_out = model.path_override or bedrock_path(request_model, stream)
    if model.path_override is None and model.path_prefix is not None:
        path_out = model.path_prefix.rstrip("/") + path_out
    return _request(path_out, out, route_type, request_model, stream, obj, translation, model)


def _custom_call(
    model: LLMModel,
    route_type: str,
    path: str,
    query: str,
    obj: dict[str, object],
    request_model: str,
    stream: bool,
    unchanged: bytes | None,
) -> LLMRequest:
    """A call to a `custom` provider: passed through in the client's format when the
    provider lists it, else translated to the first listed format that serves it (the
    order of agentgateway's `CHAT_TRANSLATIONS`). Raises TranslationError, LLMRequestError."""
    out_format = custom_format(model.formats, route_type)
    if out_format is None:
        raise _unsupported(route_type, _name(model))
    translation: Translation | None = None
    if route_type == "completions" and out_format == "messages":
        out, translation = completions_to_messages(obj, prompt_caching=model.prompt_caching)
    elif route_type == "completions" and out_format == "generateContent":
        out, translation = completions_to_gemini(obj)
    elif route_type == "messages" and out_format == "messages":
        out, translation = messages_passthrough(obj)
    elif route_type == "messages" and out_format == "completions":
        out, translation = messages_to_completions(obj)
    elif route_type == "responses" and out_format == "completions":
        out, translation = responses_to_completions(obj)
    elif route_type != out_format:
        # agentgateway also translates Messages to the Responses API here; agw-fast has no
        # translator for that.
        raise LLMRequestError(
            f"translation from {route_type} to {out_format} is not implemented (provider "
            f"{_name(model)} does not list {route_type})",
            501,
        )
    elif route_type in ("generateContent", "geminiCountTokens"):
        # The model and the streaming method are in the path, not the body.
        stream = route_type == "generateContent" and path.endswith(":streamGenerateContent")
        obj.pop("model", None)
        out = serialize_body(obj)
        if route_type == "generateContent":
            translation = gemini_passthrough()
    else:
        out = _openai_body(obj, route_type, unchanged)
    if model.path_override is not None:
        path_out = model.path_override
    else:
        path_out = custom_path(
            model.formats, model.path_prefix, out_format, request_model, stream, query
        )
    return _request(path_out, out, route_type, request_model, stream, obj, translation, model)


def _name(model: LLMModel) -> str:
    """agentgateway's provider name in telemetry (`gen_ai.provider.name`)."""
    if model.provider == "custom":
        return model.provider_name or "custom"
    return {"openAI": "openai", "anthropic": "anthropic", "gemini": "gemini",
            "azure": "azure", "bedrock": "aws.bedrock", "vertex": VERTEX_NAME,
            }[model.provider]  # fmt: skip


def _openai_body(obj: dict[str, object], route_type: str, unchanged: bytes | None) -> bytes:
    """The body for an OpenAI-style endpoint: `unchanged` (the client's bytes, when the router
    changed nothing) is sent as it is unless a stream needs `include_usage`."""
    if (
        route_type == "completions"
        and obj.get("stream") is True
        and obj.get("stream_options") is None
    ):
        obj["stream_options"] = {"include_usage": True}
    elif unchanged is not None:
        return unchanged
    return serialize_body(obj)


def _openai_path(model: LLMModel, route_type: str, request_model: str) -> str:
    if model.path_override is not None:
        return model.path_override
    azure = model.azure
    if azure is None:
        return default_path(route_type, model.path_prefix)
    suffix = _OPENAI_SUFFIX.get(route_type, "chat/completions")
    if azure.resource_type == "foundry":
        project = azure.project_name or azure.resource_name
        path = f"/api/projects/{project}/openai/v1/{suffix}"
    else:
        version = azure.api_version or "v1"
        if version == "v1":
            path = f"/openai/v1/{suffix}"
        elif version == "preview":
            path = f"/openai/v1/{suffix}?api-version=preview"
        elif route_type == "responses":
            path = f"/openai/responses?api-version={version}"
        else:
            deployment = model.model or request_model
            path = f"/openai/deployments/{deployment}/{suffix}?api-version={version}"
    if model.path_prefix is not None:
        path = model.path_prefix.rstrip("/") + path
    return path


def _claude(model: LLMModel, request_model: str) -> bool:
    return (model.model or request_model).lower().startswith("claude")


def _foundry(model: LLMModel) -> bool:
    return model.azure is not None and model.azure.resource_type == "foundry"


def _prefixed(model: LLMModel, path: str) -> str:
    """A passthrough path with `pathPrefix`: for providers whose API lives under `/v1` the
    prefix replaces it, for others it is put in front (agentgateway's `set_default_path`)."""
    prefix = model.path_prefix
    if model.path_override is not None:
        return model.path_override
    if prefix is None:
        return path
    if model.provider in ("openAI", "anthropic") and (path == "/v1" or path.startswith("/v1/")):
        path = path[3:]
    return prefix.rstrip("/") + path


def final_transformation(
    programs: Sequence[tuple[str, cel.CelProgram]],
    request: LLMRequest,
    request_variables: Callable[[], dict[str, object]],
) -> LLMRequest:
    """A model's `finalTransformation` on the body as it goes to the provider, after any
    translation (agentgateway's `apply_final_transformations`): each field is set to its
    expression's value, computed on that body (`llmRequest`) and the request's variables,
    or removed when the expression fails. A body that is not a JSON object (a `detect`
    request's opaque bytes) goes as it is. The recorded request parameters stay those of
    the client's request, as agentgateway reads them before it renders the body."""
    try:
        obj = loads(request.body)
    except (ValueError, RecursionError):
        return request
    if type(obj) is not dict:
        return request
    uses: set[str] = set()
    for _, program in programs:
        uses |= program.uses
    variables = request_variables() if uses - {"llmRequest"} else {}
    variables["llmRequest"] = obj
    bound = cel.activation(variables, cel.LLM_VARIABLES)
    # All are evaluated on the body as translated before any is set.
    results = [(key, program.evaluate(bound)) for key, program in programs]
    for key, value in results:
        if isinstance(value, cel.EvaluationError):
            obj.pop(key, None)
        else:
            obj[key] = cel_json(value)
    return replace(request, body=serialize_body(obj))
