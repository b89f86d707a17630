"""The `agw-policies` target's route policies and the request fields that satisfy them.

A plain route with the three edge policies most deployments put in front of an LLM API:
`jwtAuth` (strict, one issuer, the JWKS inline), `localRateLimit` (a bucket far larger than
any run can drain, so nothing is ever refused and every request pays the full check) and
`cors` (the requests carry an allowed `Origin`, so each response gets the CORS fields).

The signing key is made fresh at bench start with `cryptography` (RS256 by default, the
algorithm most identity providers sign with; `$BENCH_JWT_ALG=ES256` for P-256), and the token
is signed here with it directly, so the bench needs `cryptography` but not PyJWT. agw-fast
itself needs its `jwt` extra (PyJWT over `cryptography`) to load the route: without it the
target is skipped with the install line (see `Stack.agw`).
"""

from __future__ import annotations

import base64
import json
import os
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["ORIGIN", "PolicyRoute", "PolicyUnavailable", "policy_route"]

ORIGIN = "https://app.bench.example"
ISSUER = "https://issuer.bench.example"
AUDIENCE = "agw-bench"
KID = "bench-key-1"
TOKEN_LIFETIME_S = 365 * 24 * 3600  # long-lived: no run ever sees it expire
# A bucket no run drains: a billion requests, refilled every second.
BUCKET = 1_000_000_000
ALGORITHMS = ("RS256", "ES256")


class PolicyUnavailable(RuntimeError):
    """The policies route cannot be built here; str() says what to install."""


@dataclass(frozen=True)
class PolicyRoute:
    policies: dict[str, object]  # the route's `policies` block
    headers: dict[str, str]  # request fields every request to the route carries
    algorithm: str

    @property
    def summary(self) -> str:
        return (
            f"jwtAuth strict ({self.algorithm}, inline JWKS), localRateLimit "
            f"({BUCKET:.0e} tokens/s, never refuses), cors (allowed Origin)"
        )


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(value: int, size: int | None = None) -> bytes:
    return value.to_bytes(size or (value.bit_length() + 7) // 8, "big")


def _key_and_jwk(algorithm: str) -> tuple[Any, dict[str, str]]:
    """A fresh private key and the public JWK agw-fast verifies with."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    jwk: dict[str, str] = {"kid": KID, "use": "sig", "alg": algorithm}
    if algorithm == "ES256":
        ec_key = ec.generate_private_key(ec.SECP256R1())
        ec_numbers = ec_key.public_key().public_numbers()
        jwk |= {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(_int_bytes(ec_numbers.x, 32)),
            "y": _b64url(_int_bytes(ec_numbers.y, 32)),
        }
        return ec_key, jwk
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_numbers = rsa_key.public_key().public_numbers()
    jwk |= {
        "kty": "RSA",
        "n": _b64url(_int_bytes(rsa_numbers.n)),
        "e": _b64url(_int_bytes(rsa_numbers.e)),
    }
    return rsa_key, jwk


def _sign(key: Any, algorithm: str, signing_input: bytes) -> bytes:
    """The JWS signature (RFC 7518 §3.3 for RS256; §3.4 for ES256: r ‖ s, 32 bytes each)."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec, padding
    from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

    if algorithm == "ES256":
        r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        return _int_bytes(r, 32) + _int_bytes(s, 32)
    signature: bytes = key.sign(signing_input, padding.PKCS1v15(), hashes.SHA256())
    return signature


def policy_route(algorithm: str | None = None) -> PolicyRoute:
    """The route's policies and a valid token for them; raises PolicyUnavailable."""
    algorithm = algorithm or os.environ.get("BENCH_JWT_ALG", "RS256")
    if algorithm not in ALGORITHMS:
        raise PolicyUnavailable(f"$BENCH_JWT_ALG must be one of {', '.join(ALGORITHMS)}")
    try:
        key, jwk = _key_and_jwk(algorithm)
    except ImportError:
        raise PolicyUnavailable(
            "the bench signs its token with `cryptography`, which is not installed: "
            "pip install 'agw-fast[jwt]'"
        ) from None
    now = int(time.time())
    header = {"alg": algorithm, "typ": "JWT", "kid": KID}
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-user-0001",
        "iat": now,
        "exp": now + TOKEN_LIFETIME_S,
    }
    signing_input = ".".join(
        _b64url(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
    ).encode()
    token = signing_input.decode() + "." + _b64url(_sign(key, algorithm, signing_input))
    policies: dict[str, object] = {
        "jwtAuth": {
            "mode": "strict",
            "issuer": ISSUER,
            "audiences": [AUDIENCE],
            "jwks": json.dumps({"keys": [jwk]}),  # a string: the inline form
        },
        "localRateLimit": [
            {"maxTokens": BUCKET, "tokensPerFill": BUCKET, "fillInterval": "1s"},
        ],
        "cors": {
            "allowOrigins": [ORIGIN],
            "allowMethods": ["GET", "POST", "OPTIONS"],
            "allowHeaders": ["authorization", "content-type"],
            "exposeHeaders": ["x-ratelimit-remaining"],
            "maxAge": "10m",
        },
    }
    headers = {"Authorization": f"Bearer {token}", "Origin": ORIGIN}
    return PolicyRoute(policies, headers, algorithm)
