"""`apiKey`: authenticate a request by a key from a fixed list (agentgateway http/apikey.rs).

Keys are held as SHA-256 digests only (a `key` is hashed at load, a `keyHash` is one) and a
presented key is found by its digest, as agentgateway's map by hash does: what a lookup's
timing could tell about a digest says nothing usable about a key (SHA-256 is preimage
resistant), so no comparison of secret bytes happens here at all.

Modes: `strict` refuses a request without a key; `optional` (the default) lets one through
but refuses a wrong key; `permissive` lets both through, and only a right key authenticates.
A key that authenticated is taken out of the request before it goes upstream.
"""

from __future__ import annotations

import hashlib

from agw_fast.config.model import GatewayPolicies, RoutePolicies
from agw_fast.core.reason import Reason
from agw_fast.core.rewrite import local_response
from agw_fast.policies.credentials import compile_location
from agw_fast.policies.request import ApiKeyClaims, PolicyAnswer, PolicyRequest, RequestStep

__all__ = ["build"]

_PREFIX = b"api key authentication failure: "


def _failure(message: bytes) -> PolicyAnswer:
    return PolicyAnswer(local_response(401, _PREFIX + message), Reason.API_KEY_AUTH)


MISSING = _failure(b"no API Key found")
INVALID = _failure(b"invalid credentials")


def build(policies: RoutePolicies | GatewayPolicies) -> RequestStep | None:
    config = policies.api_key
    if config is None:
        return None
    metadata = {entry.sha256: entry.metadata for entry in config.keys}
    # CEL's `apiKey` (agentgateway's apikey::Claims): the key, redacted, beside the entry's
    # metadata flattened into it; built once per key.
    cel_claims = {
        digest: {"key": "<redacted>", **(value if isinstance(value, dict) else {})}
        for digest, value in metadata.items()
    }
    extract, remove = compile_location(config.location)
    strict = config.mode == "strict"
    permissive = config.mode == "permissive"
    sha256 = hashlib.sha256

    def authenticate(request: PolicyRequest) -> PolicyAnswer | None:
        key = extract(request)
        if key is None:
            return MISSING if strict else None
        digest = sha256(key.encode()).digest()
        if digest not in metadata:
            return None if permissive else INVALID
        remove(request)
        request.api_key = ApiKeyClaims(key, metadata[digest])
        request.set_claims("apiKey", cel_claims[digest])
        return None

    return authenticate
