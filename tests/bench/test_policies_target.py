"""The `agw-policies` bench target: its config loads, its token passes all three policies, and
the wrk script / warm-up requests carry the target's own fields.

The steps run sans-IO here; the bench smoke test and `bench/run.py` run them over sockets.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agw_fast.config.load import load_config
from agw_fast.policies import compile_request_steps, run_steps
from agw_fast.policies.request import PolicyRequest, RequestStep
from bench.payloads import API_KEY, REQUEST_BODY, request_bytes
from bench.policies import ORIGIN, PolicyUnavailable, policy_route
from bench.targets import agw_config
from bench.wrk import lua_script

pytest.importorskip("jwt", reason="agw-fast's jwt extra is not installed")


def _steps(algorithm: str, tmp_path: Path) -> tuple[tuple[RequestStep, ...], dict[str, str]]:
    route = policy_route(algorithm)
    text = json.dumps(agw_config(3000, 8080, policies=route.policies))
    config = load_config(text, {}, base_dir=tmp_path)
    policies = config.binds[0].listeners[0].routes[0].policies
    return compile_request_steps(policies), route.headers


def _request(headers: dict[str, str]) -> PolicyRequest:
    fields = [(name.lower().encode(), value.encode()) for name, value in headers.items()]
    return PolicyRequest(b"POST", b"127.0.0.1", b"/v1/chat/completions", b"", fields, None)


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_token_passes_every_policy(algorithm: str, tmp_path: Path) -> None:
    steps, headers = _steps(algorithm, tmp_path)
    assert len(steps) == 3  # cors, jwtAuth, localRateLimit
    for _ in range(3):
        request = _request(headers)
        assert run_steps(steps, request) is None  # proxied, never answered locally
        assert request.jwt_claims is not None and request.jwt_claims["aud"] == "agw-bench"
        lines = b"".join(request.response_lines or [])
        assert b"access-control-allow-origin: " + ORIGIN.encode() in lines
        assert b"x-ratelimit-remaining: " in lines


def test_request_without_token_is_refused(tmp_path: Path) -> None:
    # strict mode: the bench would count a 401 as a failed response, never as a fast one
    steps, _ = _steps("RS256", tmp_path)
    answer = run_steps(steps, _request({"Origin": ORIGIN, "Authorization": f"Bearer {API_KEY}"}))
    assert answer is not None and answer.response.startswith(b"HTTP/1.1 401 ")


def test_unknown_algorithm_is_a_clear_skip() -> None:
    with pytest.raises(PolicyUnavailable, match="BENCH_JWT_ALG"):
        policy_route("HS256")


def test_target_fields_replace_the_defaults(tmp_path: Path) -> None:
    headers = {"Authorization": "Bearer a.b.c", "Origin": ORIGIN}
    script = lua_script(tmp_path / "p.lua", REQUEST_BODY, headers=headers).read_text()
    assert 'wrk.headers["Authorization"] = "Bearer a.b.c"' in script
    assert f'wrk.headers["Origin"] = "{ORIGIN}"' in script
    assert API_KEY not in script
    wire = request_bytes("h", headers=headers)
    assert b"Authorization: Bearer a.b.c\r\n" in wire and wire.count(b"Authorization") == 1
    assert f"Origin: {ORIGIN}\r\n".encode() in wire


def test_default_request_bytes_are_unchanged() -> None:
    assert request_bytes("h:1") == (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: h:1\r\nUser-Agent: agw-fast-bench/1\r\n"
        b"Accept: application/json\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {API_KEY}\r\n".encode()
        + f"Content-Length: {len(REQUEST_BODY)}\r\n\r\n".encode()
        + REQUEST_BODY
    )
