"""Vertex AI (`provider: vertex`): which of its APIs serves a model, paths, bodies, the token.

agentgateway (crates/llm/src/vertex.rs, llm/mod.rs) decides per model what Vertex speaks:
Anthropic models (`claude-*`, `anthropic/...`, `publishers/anthropic/models/...`) take
Anthropic Messages on `publishers/anthropic/models/{model}:rawPredict` (`:streamRawPredict`
for streams), with `anthropic_version: vertex-2023-10-16` in the body and no `model` there;
Gemini models take native generateContent on `publishers/google/models/{model}`; everything
else, and Messages or Responses clients of a Gemini model, Vertex's OpenAI-compatible
`endpoints/openapi/chat/completions`. Embeddings go to `publishers/google/models/{model}
:predict` in Vertex's own shape. The host is `{region}-aiplatform.googleapis.com`, the global
endpoint without a region or for `global`, and `aiplatform.{us,eu}.rep.googleapis.com` for the
two multi-region locations.

Authentication: Google Application Default Credentials as `Authorization: Bearer <access
token>` (agentgateway's default `GcpAuth`), unless the model sets `apiKey` or `auth`. The token
is fetched and refreshed off the request path (agw_fast/server/google_token.py) into an
`AccessToken`, which the exchange only reads. Sans-IO.
"""

from __future__ import annotations

import importlib.util
import re
import time
from urllib.parse import quote

from agw_fast.config.model import LLMModel
from agw_fast.errors import ConfigError
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.openai import LLMRequestError, serialize_body
from agw_fast.llm.translate import StreamTranslator, Translation, TranslationError
from agw_fast.llm.translate.anthropic import (
    MessagesToChatTranslation,
    messages_passthrough,
    messages_to_completions,
)
from agw_fast.llm.translate.anthropic_request import chat_request_to_messages
from agw_fast.llm.translate.gemini import completions_to_gemini, gemini_passthrough
from agw_fast.llm.translate.responses import responses_to_completions
from agw_fast.llm.usage import Usage

__all__ = [
    "PROVIDER_NAME",
    "VERTEX_ANTHROPIC_VERSION",
    "AccessToken",
    "VertexEmbeddings",
    "anthropic_model",
    "embeddings_request",
    "gemini_model",
    "require_google_auth",
    "vertex_call",
    "vertex_host",
]

PROVIDER_NAME = "gcp.vertex_ai"  # agentgateway's name in telemetry (`gen_ai.provider.name`)
VERTEX_ANTHROPIC_VERSION = "vertex-2023-10-16"
GLOBAL_HOST = "aiplatform.googleapis.com"
INSTALL_HINT = "pip install 'agw-fast[vertex]'"

# Model-name prefixes of Vertex's embedding models: some start `gemini-` too, but they are
# served by `:predict`, never by generateContent.
_EMBEDDING_PREFIXES = (
    "text-embedding-", "gemini-embedding-", "text-multilingual-embedding-", "textembedding-",
    "multimodalembedding",
)  # fmt: skip
# agentgateway's `is_safe_segment`: what may stand as one path segment of a model name.
_UNSAFE_SEGMENT = re.compile(r"""[/\\%?#<>"`{}|^\s\x00-\x1f\x7f]""")
_DATE_SUFFIX = re.compile(r"-(\d{8})$")
# RFC 3986 §3.3 pchar minus "%": a model put into a path is escaped to stay one segment.
_PCHAR = "-._~!$&'()*+,;=:@"


def vertex_host(region: str | None) -> str:
    """The aiplatform host for `region` (None: the global endpoint)."""
    if region is None or region == "global":
        return GLOBAL_HOST
    if region in ("us", "eu"):
        return f"aiplatform.{region}.rep.googleapis.com"
    return f"{region}-aiplatform.googleapis.com"


def anthropic_model(model: str) -> str | None:
    """Vertex's name for an Anthropic model, or None if `model` is not one: the publisher
    prefix comes off and a `-YYYYMMDD` date becomes `@YYYYMMDD`."""
    _, sep, rest = model.partition("publishers/anthropic/models/")
    if sep:
        model = rest
    elif model.startswith("anthropic/"):
        model = model[len("anthropic/") :]
    elif not model.startswith("claude-"):
        return None
    return _DATE_SUFFIX.sub(r"@\1", model)


def gemini_model(model: str) -> str | None:
    """The Gemini model id in `model` (resource-style names accepted), or None when it is not
    a Gemini generation model: embedding models, other publishers, or a name that would add
    path segments."""
    _, sep, rest = model.partition("publishers/google/models/")
    if sep:
        model = rest
    elif model.startswith("models/"):
        model = model[len("models/") :]
    elif model.startswith("google/"):
        model = model[len("google/") :]
    if not model or model in (".", "..") or _UNSAFE_SEGMENT.search(model):
        return None
    if model.startswith(_EMBEDDING_PREFIXES):
        return None
    return model if model.startswith(("gemini-", "gemini@")) else None


def _segment(text: str) -> str:
    return quote(text, safe=_PCHAR)


def _remove_unsupported(body: dict[str, object]) -> None:
    """What Vertex's Anthropic endpoint refuses: the deprecated top-level `output_format`
    and the `scope` of any `cache_control` (a beta it lacks)."""
    body.pop("output_format", None)
    for value in body.values():
        _drop_cache_scope(value)


def _drop_cache_scope(value: object) -> None:
    if type(value) is dict:
        control = value.get("cache_control")
        if type(control) is dict:
            control.pop("scope", None)
        for child in value.values():
            _drop_cache_scope(child)
    elif type(value) is list:
        for child in value:
            _drop_cache_scope(child)


def _anthropic_body(body: dict[str, object], keep_model: bool) -> dict[str, object]:
    body["anthropic_version"] = VERTEX_ANTHROPIC_VERSION
    if not keep_model:
        body.pop("model", None)  # the model is in the path
    _remove_unsupported(body)
    return body


def _include_usage(request: dict[str, object]) -> bool:
    options = request.get("stream_options")
    return type(options) is dict and options.get("include_usage") is True


def _unsupported(route_type: str) -> LLMRequestError:
    return LLMRequestError(f"unsupported conversion: from {route_type} to provider {PROVIDER_NAME}")


def vertex_call(
    model: LLMModel,
    route_type: str,
    client_path: str,
    obj: dict[str, object],
    request_model: str,
    stream: bool,
) -> tuple[str, bytes, Translation | None, bool]:
    """(upstream path, body, translation, stream) for `route_type` on a Vertex model.

    `request_model` is the model after the model's own `params.model`. Raises
    `LLMRequestError` for a call Vertex cannot take for this model, `TranslationError` for a
    request the translation cannot express."""
    vertex = model.vertex
    assert vertex is not None  # the loader requires vertexProject
    base = f"/v1/projects/{vertex.project}/locations/{vertex.region or 'global'}"
    openapi = base + "/endpoints/openapi/chat/completions"
    claude = anthropic_model(request_model)
    gemini = gemini_model(request_model) if claude is None else None
    translation: Translation | None = None
    if route_type == "embeddings":
        path = f"{base}/publishers/google/models/{_segment(request_model)}:predict"
        out = embeddings_request(obj)
        translation = VertexEmbeddings(request_model)
    elif route_type == "rerank":
        # agentgateway sends these to the Discovery Engine ranking API, another host.
        raise LLMRequestError("rerank on the vertex provider is not implemented", 501)
    elif route_type == "anthropicTokenCount":
        if claude is None:
            raise _unsupported(route_type)
        out = serialize_body(_anthropic_body(obj, keep_model=True))
        path = f"{base}/publishers/anthropic/models/count-tokens:rawPredict"
    elif claude is not None:
        if route_type == "completions":
            body = chat_request_to_messages(obj)
            translation = MessagesToChatTranslation(_include_usage(obj), time.monotonic)
            out = serialize_body(_anthropic_body(body, keep_model=False))
        elif route_type == "messages":
            out, translation = messages_passthrough(_anthropic_body(obj, keep_model=False))
        else:  # Responses, generateContent, Gemini countTokens: no translation to Messages
            raise _unsupported(route_type)
        method = "streamRawPredict" if stream else "rawPredict"
        path = f"{base}/publishers/anthropic/models/{_segment(claude)}:{method}"
    elif route_type in ("generateContent", "geminiCountTokens"):
        if gemini is None:
            raise _unsupported(route_type)
        obj.pop("model", None)  # in the path
        out = serialize_body(obj)
        if route_type == "geminiCountTokens":
            path = f"{base}/publishers/google/models/{gemini}:countTokens"
            stream = False
        else:
            stream = client_path.endswith(":streamGenerateContent")
            path = _native_path(base, gemini, stream)
            translation = gemini_passthrough()
    elif route_type == "completions" and gemini is not None:
        out, translation = completions_to_gemini(obj)
        path = _native_path(base, gemini, stream)
    elif route_type == "completions":
        if stream and obj.get("stream_options") is None:
            obj["stream_options"] = {"include_usage": True}
        out = serialize_body(obj)
        path = openapi
    elif route_type == "messages":
        out, translation = messages_to_completions(obj)
        path = openapi
    elif route_type == "responses":
        out, translation = responses_to_completions(obj)
        path = openapi
    else:
        raise _unsupported(route_type)
    if model.path_override is not None:
        path = model.path_override
    elif model.path_prefix is not None:
        path = model.path_prefix.rstrip("/") + path
    return path, out, translation, stream


def _native_path(base: str, gemini: str, stream: bool) -> str:
    # Without `alt=sse` the streaming method answers one JSON array at the end.
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return f"{base}/publishers/google/models/{gemini}:{method}"


# ---------------------------------------------------------------- embeddings


def embeddings_request(obj: dict[str, object]) -> bytes:
    """An OpenAI embeddings request as Vertex's `:predict` body: one instance per input
    (`task_type` default RETRIEVAL_QUERY, `title`), `dimensions` as outputDimensionality,
    `auto_truncate` as autoTruncate (agentgateway's from_embeddings)."""
    raw = obj.get("input")
    if type(raw) is str:
        inputs = [raw]
    elif type(raw) is list and all(type(item) is str for item in raw):
        inputs = raw
    else:
        raise TranslationError("input: expected a string or an array of strings")
    task_type = obj.get("task_type")
    title = obj.get("title")
    instances: list[dict[str, object]] = []
    for text in inputs:
        instance: dict[str, object] = {
            "content": text,
            "task_type": task_type if type(task_type) is str else "RETRIEVAL_QUERY",
        }
        if type(title) is str:
            instance["title"] = title
        instances.append(instance)
    body: dict[str, object] = {"instances": instances}
    parameters: dict[str, object] = {}
    auto_truncate = obj.get("auto_truncate")
    if type(auto_truncate) is bool:
        parameters["autoTruncate"] = auto_truncate
    dimensions = obj.get("dimensions")
    if dimensions is not None:
        if type(dimensions) is not int or not 0 <= dimensions <= 0xFFFFFFFF:
            raise TranslationError("dimensions: expected an unsigned integer")
        parameters["outputDimensionality"] = dimensions
    if parameters:
        body["parameters"] = parameters
    return serialize_body(body)


class VertexEmbeddings:
    """The way back from `:predict`: OpenAI's embeddings list, usage from the token counts."""

    __slots__ = ("_model",)

    def __init__(self, model: str) -> None:
        self._model = model

    def response_json(self, body: bytes) -> tuple[bytes, Usage | None, str | None]:
        try:
            doc = loads(body)
        except (ValueError, RecursionError) as error:
            raise TranslationError(f"vertex embeddings response is not JSON ({error})") from None
        predictions = doc.get("predictions") if type(doc) is dict else None
        if type(predictions) is not list:
            raise TranslationError("vertex embeddings response has no predictions")
        data = []
        tokens = 0
        for index, prediction in enumerate(predictions):
            embeddings = prediction.get("embeddings") if type(prediction) is dict else None
            values = embeddings.get("values") if type(embeddings) is dict else None
            if type(values) is not list:
                raise TranslationError("vertex embeddings prediction has no values")
            assert type(embeddings) is dict
            statistics = embeddings.get("statistics")
            if type(statistics) is dict:
                count = statistics.get("token_count")
                if type(count) is int:
                    tokens += count
            data.append({"index": index, "object": "embedding", "embedding": values})
        out: dict[str, object] = {
            "object": "list",
            "model": self._model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "data": data,
        }
        usage = Usage(input_tokens=tokens, total_tokens=tokens)
        return serialize_body(out), usage, self._model

    def error_json(self, status: int, body: bytes) -> bytes:
        return body  # agentgateway relays these unchanged

    def stream(self) -> StreamTranslator:
        raise TranslationError("vertex embeddings are not streamed")


# ---------------------------------------------------------------- authentication


def require_google_auth(path: str) -> None:
    """Refuse a Vertex model that needs Application Default Credentials when the `google-auth`
    library (the optional `vertex` extra) is missing."""
    if importlib.util.find_spec("google.auth") is None:
        raise ConfigError(
            path,
            "the vertex provider authenticates with Google Application Default Credentials, "
            f"which needs the google-auth library: {INSTALL_HINT} (or set params.apiKey)",
        )


class AccessToken:
    """The Google access token a worker's refresher keeps current, as the complete header
    line the exchange appends (b"" while there is none). Read on the request path, written
    only by the refresher."""

    __slots__ = ("expires_at", "line")

    def __init__(self) -> None:
        self.line = b""
        self.expires_at = 0.0  # time.monotonic() past which the token is not sent

    def set(self, token: str, expires_at: float) -> None:
        """Install a fresh token. Raises ValueError for one that is not a bearer token
        (RFC 6750 §2.1 b64token): it would not be a single header value."""
        if not _B64TOKEN.fullmatch(token):
            raise ValueError("the access token is not a valid bearer token")
        self.line = b"authorization: Bearer " + token.encode("ascii") + b"\r\n"
        self.expires_at = expires_at

    def expire(self, now: float) -> None:
        """Forget the token once it has expired (refreshes kept failing)."""
        if self.line and now >= self.expires_at:
            self.line = b""


_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
