"""The `bedrock` provider in the `llm:` form (and `ai.provider.bedrock`), end to end: the gateway
from the CLI with static AWS credentials in its environment, the OpenAI SDK as the client, the
mock LLM speaking Converse (JSON and the AWS event stream), and a recording upstream that
recomputes each request's SigV4 signature with botocore."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from agw_fast.mockllm.apis import Completion
from agw_fast.mockllm.bedrock import converse_frames
from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    UpstreamConnection,
    http_response,
    refused_config,
    start_mock,
)

ACCESS_KEY = "AKIDEXAMPLEBEDROCK"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SESSION_TOKEN = "session-token-for-tests"
REGION = "eu-west-3"
MODEL_ID = "anthropic.claude-3-haiku-20240307-v1:0"
MESSAGES: list[Any] = [
    {"role": "system", "content": "Be terse."},
    {"role": "user", "content": "Say hello."},
]
# What the recording upstream answers (agentgateway's response fixture, with cache counts).
CONVERSE_REPLY = {
    "output": {"message": {"role": "assistant", "content": [{"text": "Hello world"}]}},
    "stopReason": "end_turn",
    "usage": {"inputTokens": 18, "outputTokens": 46, "totalTokens": 64,
              "cacheReadInputTokens": 5, "cacheWriteInputTokens": 7},
    "metrics": {"latencyMs": 2083},
}


def _verify_sigv4(request: RawMessage) -> str | None:
    """Why `request`'s SigV4 signature is wrong, or None: recomputed with botocore from the
    fields it claims to sign, the date it carries and the test's secret."""
    authorization = request.header("authorization") or ""
    scheme, _, params = authorization.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return f"not SigV4: {authorization!r}"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    credential = fields["Credential"].split("/")
    if credential[0] != ACCESS_KEY or credential[2:] != [REGION, "bedrock", "aws4_request"]:
        return f"wrong credential scope {fields['Credential']}"
    signed = fields["SignedHeaders"].split(";")
    for required in ("host", "x-amz-date", "x-amz-security-token"):
        if required not in signed:
            return f"{required} is not signed"
    headers = {name: request.header(name) or "" for name in signed}
    aws_request = AWSRequest(
        method=request.method, url=f"https://{headers['host']}{request.target}",
        data=request.body, headers=headers,
    )
    aws_request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    expected = auth.signature(
        auth.string_to_sign(aws_request, auth.canonical_request(aws_request)), aws_request
    )
    if expected != fields["Signature"]:
        return "signature mismatch"
    return None


def _recording_converse(conn: UpstreamConnection) -> None:
    """Bedrock as far as the test needs: 403 for a bad signature, a fixed JSON reply, the mock's
    event stream for converse-stream, a Bedrock error for a model named `broken`."""
    while (request := conn.read_request()) is not None:
        problem = _verify_sigv4(request)
        if problem is not None:
            body = json.dumps({"message": f"signature check failed: {problem}"}).encode()
            conn.send(http_response(403, body, [("content-type", "application/json")]))
        elif "/model/broken/" in request.target:
            body = json.dumps({"message": "The provided model identifier is invalid."}).encode()
            conn.send(http_response(400, body, [("content-type", "application/json"),
                                                ("x-amzn-errortype", "ValidationException")]))
        elif request.target.endswith("/converse-stream"):
            frames = converse_frames(json.loads(request.body), Completion(("Hel", "lo", "!")))
            payload = b"".join(b"%x\r\n%s\r\n" % (len(f), f) for f in frames) + b"0\r\n\r\n"
            conn.send(http_response(
                200, payload,
                [("content-type", "application/vnd.amazon.eventstream"),
                 ("transfer-encoding", "chunked")],
                content_length=False,
            ))
        else:
            body = json.dumps(CONVERSE_REPLY).encode()
            conn.send(http_response(200, body, [("content-type", "application/json")]))


@pytest.fixture(scope="module")
def mock(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    process = start_mock(tmp_path_factory.mktemp("llm-bedrock-mock"), name="bedrock-mock")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def recorder() -> Iterator[Upstream]:
    with Upstream(_recording_converse) as upstream:
        yield upstream


def _env(tmp: Path) -> dict[str, str]:
    # Static credentials, and nothing else of the chain reachable (no files, no IMDS).
    return {
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_SESSION_TOKEN": SESSION_TOKEN,
        "AWS_CONFIG_FILE": str(tmp / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp / "no-aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


@pytest.fixture(scope="module")
def gw(
    module_gateway: GatewayFactory, mock: Process, recorder: Upstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Process:
    config = f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
llm:
  port: 0
  models:
  - name: claude
    provider: bedrock
    params: {{model: {MODEL_ID}, awsRegion: {REGION}, baseUrl: "http://127.0.0.1:{mock.port}"}}
  - name: signed
    provider: bedrock
    params: {{model: {MODEL_ID}, awsRegion: {REGION},
              baseUrl: "http://127.0.0.1:{recorder.port}"}}
  - name: broken
    provider: bedrock
    params: {{awsRegion: {REGION}, baseUrl: "http://127.0.0.1:{recorder.port}"}}
"""
    env = _env(tmp_path_factory.mktemp("aws"))
    return module_gateway(config, env=env)


@pytest.fixture(scope="module")
def client(gw: Process) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="client-key", max_retries=0,
        timeout=DEADLINE * 2,
    ) as oai:
        yield oai


def test_chat_completion_through_bedrock_converse(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == MODEL_ID
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content  # the mock's completion
    assert reply.choices[0].finish_reason == "stop"
    usage = reply.usage
    assert usage is not None and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_through_bedrock_event_stream(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="claude", messages=MESSAGES, stream=True)
    text, usage, finish, roles = "", None, None, []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk" and chunk.model == MODEL_ID
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
            if choice.delta.role:
                roles.append(choice.delta.role)
        usage = chunk.usage or usage
    reference = client.chat.completions.create(model="claude", messages=MESSAGES)
    assert text == reference.choices[0].message.content
    assert roles == ["assistant"] and finish == "stop"
    assert reference.usage is not None and usage is not None
    assert usage.prompt_tokens == reference.usage.prompt_tokens
    assert usage.completion_tokens == reference.usage.completion_tokens


def test_the_request_is_sigv4_signed_and_usage_is_exact(
    client: openai.OpenAI, recorder: Upstream
) -> None:
    before = len(recorder.requests)
    reply = client.chat.completions.create(model="signed", messages=MESSAGES, max_tokens=99)
    assert reply.choices[0].message.content == "Hello world"
    usage = reply.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (18, 46, 64)
    assert usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.cached_tokens == 5
    request = recorder.requests[before]
    assert request.method == "POST"
    assert request.target == f"/model/{MODEL_ID}/converse"
    assert request.header("x-amz-security-token") == SESSION_TOKEN
    assert request.header("content-type") == "application/json"
    assert "client-key" not in request.raw.decode("latin-1")
    body = json.loads(request.body)
    assert body["system"] == [{"text": "Be terse."}]
    assert body["messages"] == [{"role": "user", "content": [{"text": "Say hello."}]}]
    assert body["inferenceConfig"] == {"maxTokens": 99}
    assert _verify_sigv4(request) is None
    # The check is real: the same head over another body does not verify.
    tampered = RawMessage(request.start_line, request.headers, request.body + b" ", request.raw)
    assert _verify_sigv4(tampered) == "signature mismatch"


def test_a_signed_stream_is_translated(client: openai.OpenAI, recorder: Upstream) -> None:
    before = len(recorder.requests)
    stream = client.chat.completions.create(model="signed", messages=MESSAGES, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Hello!"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    request = recorder.requests[before]
    assert request.target == f"/model/{MODEL_ID}/converse-stream"
    assert _verify_sigv4(request) is None


def test_a_bedrock_error_becomes_an_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        client.chat.completions.create(model="broken", messages=MESSAGES)
    assert raised.value.status_code == 400
    body = raised.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error"
    assert body["message"] == "The provided model identifier is invalid."


def test_messages_to_bedrock_is_not_implemented(gw: Process) -> None:
    import httpx

    response = httpx.post(
        f"http://127.0.0.1:{gw.port}/v1/messages", timeout=DEADLINE,
        json={"model": "claude", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]},
    )
    assert response.status_code == 501
    assert "bedrock" in response.text


def test_bedrock_without_a_region_is_refused(tmp_path: Path) -> None:
    line = refused_config(tmp_path / "c.yaml", """llm:
  models:
  - name: claude
    provider: bedrock
    params: {model: m}
""")
    assert "awsRegion" in line and "bedrock requires awsRegion" in line


def test_binds_form_ai_provider_bedrock(
    module_gateway: GatewayFactory, recorder: Upstream, tmp_path_factory: pytest.TempPathFactory
) -> None:
    config = f"""config:
  statsAddr: "off"
  adminAddr: "off"
  readinessAddr: "off"
binds:
- port: 0
  listeners:
  - routes:
    - backends:
      - ai:
          name: br
          hostOverride: "127.0.0.1:{recorder.port}"
          provider:
            bedrock: {{region: {REGION}, model: {MODEL_ID},
                       guardrailIdentifier: gr-1, guardrailVersion: "2"}}
"""
    gw = module_gateway(config, env=_env(tmp_path_factory.mktemp("aws-binds")))
    before = len(recorder.requests)
    with openai.OpenAI(base_url=f"http://127.0.0.1:{gw.port}/v1", api_key="k", max_retries=0,
                       timeout=DEADLINE * 2) as oai:  # fmt: skip
        reply = oai.chat.completions.create(model="anything", messages=MESSAGES)
    assert reply.choices[0].message.content == "Hello world"
    request = recorder.requests[before]
    assert request.target == f"/model/{MODEL_ID}/converse"
    assert json.loads(request.body)["guardrailConfig"] == {
        "guardrailIdentifier": "gr-1", "guardrailVersion": "2", "trace": "enabled"}
    assert _verify_sigv4(request) is None
