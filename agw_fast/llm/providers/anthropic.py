"""Anthropic provider, request side: where requests go and the headers they carry.

As agentgateway's `ai` backend for `provider: anthropic` (crates/llm/src/anthropic.rs and
`set_required_fields` in crates/agentgateway/src/llm/mod.rs): the default host is
api.anthropic.com over TLS, paths are /v1/messages and /v1/messages/count_tokens, every
request carries `anthropic-version: 2023-06-01` (replacing the client's), and a bearer
credential moves to `x-api-key` unless it is an OAuth token (`sk-ant-oat...`), which keeps
`Authorization: Bearer`.
"""

from __future__ import annotations

__all__ = [
    "ANTHROPIC_VERSION",
    "API_KEY_HEADER",
    "COUNT_TOKENS_PATH",
    "DEFAULT_BASE_PATH",
    "DEFAULT_HOST",
    "DEFAULT_PORT",
    "MESSAGES_PATH",
    "OAUTH_TOKEN_PREFIX",
    "VERSION_HEADER",
    "auth_headers",
    "path_for_route",
]

DEFAULT_HOST = "api.anthropic.com"
DEFAULT_PORT = 443
DEFAULT_BASE_PATH = "/v1"
MESSAGES_PATH = "/v1/messages"
COUNT_TOKENS_PATH = "/v1/messages/count_tokens"

# https://docs.anthropic.com/en/api/versioning
VERSION_HEADER = b"anthropic-version"
ANTHROPIC_VERSION = b"2023-06-01"
API_KEY_HEADER = b"x-api-key"
OAUTH_TOKEN_PREFIX = "sk-ant-oat"

# The client route type agentgateway sends to count_tokens; every other goes to messages.
_COUNT_TOKENS_ROUTE = "anthropicTokenCount"


def path_for_route(route_type: str, base_path: str = DEFAULT_BASE_PATH) -> str:
    suffix = "/messages/count_tokens" if route_type == _COUNT_TOKENS_ROUTE else "/messages"
    return base_path.rstrip("/") + suffix


def auth_headers(token: str, *, explicit_authorization: bool = False) -> list[tuple[bytes, bytes]]:
    """The headers carrying `token` (the provider's key) and the API version.

    The caller removes the client's `authorization`, `x-api-key` and `anthropic-version`
    first. An OAuth token, or an Authorization location the config set explicitly (e.g.
    Databricks' Messages API wants a bearer JWT), stays `Authorization: Bearer`.
    """
    if explicit_authorization or token.startswith(OAUTH_TOKEN_PREFIX):
        credential = (b"authorization", b"Bearer " + token.encode("latin-1"))
    else:
        credential = (API_KEY_HEADER, token.encode("latin-1"))
    return [credential, (VERSION_HEADER, ANTHROPIC_VERSION)]
