"""Why a response is what it is: the vocabulary of the `reason` label and log field."""

from __future__ import annotations

__all__ = ["Reason"]


class Reason:
    """Why a response is what it is: agentgateway's `ProxyResponseReason` (proxy/mod.rs),
    the `reason` label and access-log field. Plain strings: they are metric-key parts that
    are hashed, marshalled into shared memory and compared with decoded copies."""

    UPSTREAM = "Upstream"  # relayed from the backend, whatever its status
    DIRECT_RESPONSE = "DirectResponse"  # a directResponse or requestRedirect policy
    BASIC_AUTH = "BasicAuth"  # a basicAuth policy refused the credentials
    API_KEY_AUTH = "APIKeyAuth"  # an apiKey policy refused the key
    NOT_FOUND = "NotFound"  # no listener or no route matched
    NO_HEALTHY_BACKEND = "NoHealthyBackend"  # the route has no backend to use
    JWT_AUTH = "JwtAuth"  # jwtAuth refused the request (401)
    INTERNAL = "Internal"  # a rewrite or redirect that could not be applied, ...
    INVALID_REQUEST = "InvalidRequest"  # a request we refuse to forward (LLM body, framing)
    RATE_LIMIT = "RateLimit"  # a localRateLimit bucket was empty
    TIMEOUT = "Timeout"  # request or backend request timeout
    AUTHORIZATION = "Authorization"  # an authorization policy denied the request
    UPSTREAM_FAILURE = "UpstreamFailure"  # connect, TLS or the upstream connection failed
    GUARDRAIL = "Guardrail"  # a prompt guard rejected the request or its response
