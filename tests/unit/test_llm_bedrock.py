"""The bedrock provider outside translation: config (both forms), the upstream plan (host, TLS,
SigV4 signer or API key), the call's path, and SigV4 signing with botocore."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from agw_fast.config.load import load_config
from agw_fast.config.model import AIBackend, BedrockParams, LLMModel, LLMRouter
from agw_fast.errors import ConfigError
from agw_fast.llm import calls
from agw_fast.llm.providers import aws_sigv4
from agw_fast.llm.providers.openai import LLMRequestError
from agw_fast.plan import _Compiler

ACCESS_KEY = "AKIDUNITTEST"
SECRET_KEY = "unit-test-secret"


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """Static credentials only; the process's resolved credentials reset around the test."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setattr(aws_sigv4, "_credentials", [])
    yield


def _config(yaml: str):  # type: ignore[no-untyped-def]
    return load_config(yaml, {}, base_dir=Path("."))


def _model(params: str, extra: str = "") -> LLMModel:
    config = _config(f"llm:\n  models:\n  - name: m\n    provider: bedrock\n    params: {params}\n"
                     + extra)  # fmt: skip
    target = config.binds[0].listeners[0].routes[0].backends[0].target
    assert isinstance(target, LLMRouter)
    return target.models[0]


def test_llm_form_reads_the_region() -> None:
    model = _model("{model: anthropic.claude-3, awsRegion: us-west-2}")
    assert model.provider == "bedrock" and model.bedrock == BedrockParams("us-west-2")
    assert calls.default_host(model) == "bedrock-runtime.us-west-2.amazonaws.com"


def test_llm_form_requires_the_region() -> None:
    with pytest.raises(ConfigError, match=r"awsRegion: bedrock requires awsRegion"):
        _model("{model: m}")


def test_aws_region_on_another_provider_is_refused() -> None:
    with pytest.raises(ConfigError, match="not supported"):
        _config("llm:\n  models:\n  - name: m\n    provider: openai\n"
                "    params: {awsRegion: us-east-1}\n")  # fmt: skip


def test_binds_form_provider() -> None:
    config = _config("""binds:
- port: 3000
  listeners:
  - routes:
    - backends:
      - ai:
          name: br
          provider:
            bedrock: {region: eu-central-1, model: amazon.nova-pro-v1:0,
                      guardrailIdentifier: g1, guardrailVersion: "3"}
""")
    target = config.binds[0].listeners[0].routes[0].backends[0].target
    assert isinstance(target, AIBackend)
    assert target.provider == "bedrock" and target.model == "amazon.nova-pro-v1:0"
    assert target.bedrock == BedrockParams("eu-central-1", "g1", "3")


def test_binds_form_requires_the_region() -> None:
    with pytest.raises(ConfigError, match="region"):
        _config("binds:\n- port: 3000\n  listeners:\n  - routes:\n    - backends:\n"
                "      - ai: {name: br, provider: {bedrock: {}}}\n")  # fmt: skip


def test_the_plan_signs_with_the_ambient_credentials(aws_env: None) -> None:
    model = _model("{awsRegion: ap-south-1}")
    backend = _Compiler(_config("binds: []")).llm_model(model, "m")
    assert (backend.host, backend.port) == ("bedrock-runtime.ap-south-1.amazonaws.com", 443)
    assert backend.ssl is not None
    assert backend.signer is not None and backend.signer.region == "ap-south-1"
    assert backend.signer in aws_sigv4.signers()
    plan = backend.request_headers
    for name in (b"authorization", b"content-type", b"x-amz-date", b"x-amz-security-token"):
        assert name in plan.drop
    assert b"authorization" not in plan.extra


def test_an_api_key_replaces_signing() -> None:
    model = _model("{awsRegion: us-east-1, apiKey: bedrock-api-key}")
    backend = _Compiler(_config("binds: []")).llm_model(model, "m")
    assert backend.signer is None
    assert b"authorization: Bearer bedrock-api-key\r\n" in backend.request_headers.extra


def test_no_credentials_is_a_config_error(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    model = _model("{awsRegion: us-east-1}")
    with pytest.raises(ConfigError, match="no AWS credentials found"):
        _Compiler(_config("binds: []")).llm_model(model, "m")


def test_without_botocore_the_config_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "botocore.auth", None)
    with pytest.raises(ConfigError, match=r"pip install 'agw-fast\[bedrock\]'"):
        aws_sigv4.require_botocore("llm.models[0].provider")


def test_signature_verifies_with_botocore(aws_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "tok")
    signer = aws_sigv4.signer_for("us-east-1", "here")
    body = b'{"messages":[]}'
    target = b"/model/arn:aws:bedrock:us-east-1:1:inference-profile%2Fx/converse"
    lines = signer.sign(b"POST", b"127.0.0.1:8080", target, body).decode().split("\r\n")
    assert lines[-1] == "" and lines[0] == "content-type: application/json"
    headers = dict(line.split(": ", 1) for line in lines[:-1])
    assert headers["x-amz-security-token"] == "tok"
    scheme, _, params = headers["authorization"].partition(" ")
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    assert scheme == "AWS4-HMAC-SHA256"
    assert fields["SignedHeaders"] == "content-type;host;x-amz-date;x-amz-security-token"
    assert fields["Credential"].endswith("/us-east-1/bedrock/aws4_request")
    request = AWSRequest(method="POST", url=f"https://127.0.0.1:8080{target.decode()}",
                         data=body, headers={"host": "127.0.0.1:8080",
                                             "content-type": "application/json",
                                             "x-amz-date": headers["x-amz-date"],
                                             "x-amz-security-token": "tok"})  # fmt: skip
    request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, "tok"), "bedrock", "us-east-1")
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)),
                              request)  # fmt: skip
    assert fields["Signature"] == expected
    assert not signer.refreshable
    signer.refresh()  # static credentials: a no-op that keeps signing


def _call(model: LLMModel, body: dict[str, object], target: bytes = b"/v1/chat/completions",
          route_type: str = "completions"):  # type: ignore[no-untyped-def]
    return calls.prepare_call(model, route_type, target, body, json.dumps(body).encode())


def test_completions_call_path_and_body() -> None:
    model = _model("{model: anthropic.claude-3:0, awsRegion: us-east-1}")
    request = _call(model, {"model": "anthropic.claude-3:0", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]})  # fmt: skip
    assert request.target == b"/model/anthropic.claude-3:0/converse-stream"
    assert request.provider == "aws.bedrock" and request.stream
    assert json.loads(request.body)["messages"] == [{"role": "user", "content": [{"text": "hi"}]}]
    prefixed = _model("{awsRegion: us-east-1, baseUrl: 'http://localhost:9/prefix'}")
    assert _call(prefixed, {"model": "x", "messages": []}).target == b"/prefix/model/x/converse"


def test_other_apis_to_bedrock_are_not_implemented() -> None:
    model = _model("{awsRegion: us-east-1}")
    with pytest.raises(LLMRequestError) as raised:
        _call(model, {"model": "x", "max_tokens": 1, "messages": []}, b"/v1/messages", "messages")
    assert raised.value.status == 501


def _expiring(calls: list[int], seconds: int) -> Credentials:
    from datetime import UTC, datetime, timedelta

    from botocore.credentials import RefreshableCredentials

    def fetch() -> dict[str, str]:
        calls.append(1)
        expiry = datetime.now(UTC) + timedelta(seconds=seconds)
        return {"access_key": f"AKID{len(calls)}", "secret_key": "s", "token": "t",
                "expiry_time": expiry.isoformat()}  # fmt: skip

    return RefreshableCredentials.create_from_metadata(fetch(), fetch, "test")


def _key_id(signer: aws_sigv4.SigV4Signer) -> str:
    lines = signer.sign(b"POST", b"h", b"/", b"").decode()
    return lines.split("Credential=", 1)[1].split("/", 1)[0]


def test_temporary_credentials_are_refreshed_only_by_refresh() -> None:
    calls: list[int] = []
    signer = aws_sigv4.SigV4Signer("us-east-1", _expiring(calls, 60))  # inside botocore's window
    assert signer.refreshable
    first = _key_id(signer)
    assert _key_id(signer) == first  # signing never refreshes (it would block the loop)
    signer.refresh()
    assert _key_id(signer) != first


def test_the_worker_refreshes_refreshable_signers(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from agw_fast.server import aws_credentials

    calls: list[int] = []
    signer = aws_sigv4.SigV4Signer("us-east-1", _expiring(calls, 60))
    static = aws_sigv4.SigV4Signer("us-east-1", Credentials("a", "b"))
    monkeypatch.setattr(aws_credentials, "signers", lambda: [signer, static])
    monkeypatch.setattr(aws_credentials, "REFRESH_INTERVAL", 0.01)

    async def run() -> None:
        refresher = aws_credentials.AwsCredentialRefresher(asyncio.get_running_loop())
        before = len(calls)
        for _ in range(500):
            await asyncio.sleep(0.01)
            if len(calls) > before:
                break
        refresher.close()
        assert len(calls) > before

    asyncio.run(run())
    monkeypatch.setattr(aws_credentials, "signers", lambda: [static])

    async def none() -> None:
        assert aws_credentials.AwsCredentialRefresher(asyncio.get_running_loop()).task is None

    asyncio.run(none())
