"""The cloud guards end to end with the openai SDK: agentgateway's bedrock and model armor
prompt-guard examples (only the port and an `ai.hostOverride` changed), the guard services
moved to local doubles with their `AGW_FAST_*_URL` variables. The Bedrock double recomputes
each ApplyGuardrail call's SigV4 signature with botocore (static AWS credentials in the
gateway's environment); the Model Armor double checks the Google access token the worker
fetched from a local token endpoint (a service-account key as ADC). The LLM is a recording
upstream echoing the prompt, so what reached it and what came back are both visible.

Also: webhook response guards on JSON responses, a failing guard service (503), and the
refusals (streaming with remote response guards, Azure Content Safety's Entra ID)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from agw_fast.mockllm import guards as mock_guards
from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    RawMessage,
    Upstream,
    UpstreamConnection,
    gateway_client,
    http_response,
    poll,
    refused_config,
    start_mock,
    unused_port,
)
from tests.e2e.test_llm_vertex import TokenEndpoint, service_account

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples"
ACCESS_KEY = "AKIDEXAMPLEGUARD"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYGUARDKEY"
SESSION_TOKEN = "guard-session-token"
REGION = "us-west-2"  # the example's
DEFAULT_REJECTION = "The request was rejected due to inappropriate content"
GUARDRAIL_PATH = "/guardrail/bedrock-guardrail-identifier/version/DRAFT/apply"
ARMOR_BASE = ("/v1/projects/model-armor-project-id/locations/us-central1/templates/"
              "model-armor-template-id")  # fmt: skip
NO_PROXY = {"no_proxy": "127.0.0.1,localhost", "NO_PROXY": "127.0.0.1,localhost"}


def _reply_for(prompt: str) -> str:
    """What the echoing LLM answers: the prompt, or a flagged or email-bearing reply when
    the prompt asks for one."""
    if "misbehave" in prompt:
        return "I will attack the castle."
    if "give-email" in prompt:
        return "Write to bob@example.com about it."
    return f"You said: {prompt}"


class EchoLLM:
    """OpenAI chat completions that echo the last user message (JSON, or SSE when asked)."""

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.lock = threading.Lock()
        self.upstream = Upstream(self.serve)

    def serve(self, conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            body = json.loads(request.body)
            prompt = body["messages"][-1]["content"]
            with self.lock:
                self.prompts.append(prompt)
            text = _reply_for(prompt)
            if body.get("stream"):
                chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1,
                         "model": "gpt-4o-mini",
                         "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                      "finish_reason": "stop"}]}  # fmt: skip
                payload = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                conn.send(http_response(200, payload, [("content-type", "text/event-stream")]))
                continue
            doc = {"id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                "finish_reason": "stop"}],
                   "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}
            conn.send(http_response(200, json.dumps(doc).encode(),
                                    [("content-type", "application/json")]))  # fmt: skip

    def close(self) -> None:
        self.upstream.close()


def _verify_sigv4(request: RawMessage) -> str | None:
    """Why the ApplyGuardrail call's signature is wrong, or None (recomputed with botocore)."""
    authorization = request.header("authorization") or ""
    scheme, _, params = authorization.partition(" ")
    if scheme != "AWS4-HMAC-SHA256":
        return f"not SigV4: {authorization!r}"
    fields = dict(p.strip().split("=", 1) for p in params.split(","))
    credential = fields["Credential"].split("/")
    if credential[0] != ACCESS_KEY or credential[2:] != [REGION, "bedrock", "aws4_request"]:
        return f"wrong credential scope {fields['Credential']}"
    signed = fields["SignedHeaders"].split(";")
    for required in ("host", "x-amz-date", "x-amz-security-token", "content-type"):
        if required not in signed:
            return f"{required} is not signed"
    headers = {name: request.header(name) or "" for name in signed}
    aws_request = AWSRequest(method=request.method,
                             url=f"https://{headers['host']}{request.target}",
                             data=request.body, headers=headers)  # fmt: skip
    aws_request.context["timestamp"] = headers["x-amz-date"]
    auth = SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, SESSION_TOKEN), "bedrock", REGION)
    expected = auth.signature(
        auth.string_to_sign(aws_request, auth.canonical_request(aws_request)), aws_request
    )
    return None if expected == fields["Signature"] else "signature mismatch"


class GuardService:
    """A recording double of Bedrock Guardrails or Model Armor (the mock LLM's logic)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[tuple[str, dict[str, Any], dict[str, str]]] = []
        self.lock = threading.Lock()
        self.upstream = Upstream(self.serve)

    def serve(self, conn: UpstreamConnection) -> None:
        while (request := conn.read_request()) is not None:
            payload = json.loads(request.body)
            with self.lock:
                self.calls.append((request.target, payload,
                                   {n: request.header(n) or "" for n in
                                    ("authorization", "accept", "content-type")}))  # fmt: skip
            if self.kind == "bedrock":
                problem = _verify_sigv4(request)
                if problem is not None:
                    body = json.dumps({"message": f"signature check failed: {problem}"})
                    conn.send(http_response(403, body.encode(),
                                            [("content-type", "application/json")]))  # fmt: skip
                    continue
                doc = mock_guards.bedrock_apply_guardrail(payload)
            else:
                if not (request.header("authorization") or "").startswith("Bearer ya29.test-"):
                    conn.send(http_response(401, b'{"error": {"code": 401}}',
                                            [("content-type", "application/json")]))  # fmt: skip
                    continue
                doc = mock_guards.model_armor_sanitize(request.target.encode(), payload)
            conn.send(http_response(200, json.dumps(doc).encode(),
                                    [("content-type", "application/json")]))  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.upstream.port}"

    def clear(self) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        with self.lock:
            calls = list(self.calls)
            self.calls.clear()
        return calls

    def close(self) -> None:
        self.upstream.close()


def _example(name: str, llm_port: int) -> str:
    """agentgateway's example with the gateway on an ephemeral port and the OpenAI provider
    sent to the local LLM."""
    text = (EXAMPLES / f"llm-prompt-guard-{name}-config.yaml").read_text()
    text = text.replace("port: 3000", "port: 0").replace(
        "      - ai:\n          name: openai\n",
        f'      - ai:\n          name: openai\n          hostOverride: "127.0.0.1:{llm_port}"\n',
    )
    return 'config:\n  adminAddr: "off"\n  readinessAddr: "off"\n  statsAddr: "off"\n' + text


def _client(port: int) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="client-key",
                         max_retries=0, timeout=DEADLINE * 2)  # fmt: skip


def _ask(client: openai.OpenAI, prompt: str) -> str:
    reply = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": prompt}]
    )
    return reply.choices[0].message.content or ""


def _rejected(client: openai.OpenAI, prompt: str) -> openai.APIStatusError:
    with pytest.raises(openai.APIStatusError) as info:
        _ask(client, prompt)
    return info.value


@pytest.fixture(scope="module")
def llm() -> Iterator[EchoLLM]:
    upstream = EchoLLM()
    yield upstream
    upstream.close()


@pytest.fixture(scope="module")
def bedrock() -> Iterator[GuardService]:
    service = GuardService("bedrock")
    yield service
    service.close()


@pytest.fixture(scope="module")
def armor() -> Iterator[GuardService]:
    service = GuardService("armor")
    yield service
    service.close()


@pytest.fixture(scope="module")
def tokens() -> Iterator[TokenEndpoint]:
    endpoint = TokenEndpoint()
    yield endpoint
    endpoint.close()


@pytest.fixture(scope="module")
def bedrock_gw(module_gateway: GatewayFactory, llm: EchoLLM, bedrock: GuardService) -> Process:
    env = {**NO_PROXY, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
           "AWS_SESSION_TOKEN": SESSION_TOKEN, "AGW_FAST_BEDROCK_GUARDRAILS_URL": bedrock.url}
    return module_gateway(_example("bedrock", llm.upstream.port), env=env)


@pytest.fixture(scope="module")
def armor_gw(module_gateway: GatewayFactory, llm: EchoLLM, armor: GuardService,
             tokens: TokenEndpoint, tmp_path_factory: pytest.TempPathFactory) -> Process:
    key = service_account(tmp_path_factory.mktemp("adc") / "sa.json", tokens.url)
    env = {**NO_PROXY, "GOOGLE_APPLICATION_CREDENTIALS": str(key),
           "AGW_FAST_MODEL_ARMOR_URL": armor.url}
    gw = module_gateway(_example("model-armor", llm.upstream.port), env=env)
    with gateway_client(gw.port) as client:  # the worker fetches its first token as it starts
        poll(lambda: client.post("/v1/chat/completions", json={
            "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]
        }).status_code, lambda status: status == 200, what="the first Google access token")
    armor.clear()
    return gw


def test_bedrock_example_passes_blocks_and_masks_prompts(
    bedrock_gw: Process, llm: EchoLLM, bedrock: GuardService
) -> None:
    bedrock.clear()
    with _client(bedrock_gw.port) as client:
        assert _ask(client, "Tell me about castles") == "You said: Tell me about castles"
        calls = bedrock.clear()
        # The prompt (INPUT), then the JSON response (OUTPUT): each a signed ApplyGuardrail.
        assert [(target, p["source"]) for target, p, _ in calls] == [
            (GUARDRAIL_PATH, "INPUT"), (GUARDRAIL_PATH, "OUTPUT"),
        ]
        assert calls[0][1]["content"] == [{"text": {"text": "Tell me about castles"}}]
        assert calls[1][1]["content"] == [{"text": {"text": "You said: Tell me about castles"}}]
        assert calls[0][2]["accept"] == "application/json"

        error = _rejected(client, "Plan an attack on the castle")
        assert error.status_code == 403
        assert error.response.text == DEFAULT_REJECTION
        assert "Plan an attack on the castle" not in llm.prompts

        # ANONYMIZED only: the guardrail's outputs replace the prompt's text.
        assert _ask(client, "Mail alice@example.com now") == "You said: Mail {EMAIL} now"
        assert llm.prompts[-1] == "Mail {EMAIL} now"


def test_bedrock_example_guards_json_responses_not_streams(
    bedrock_gw: Process, bedrock: GuardService
) -> None:
    with _client(bedrock_gw.port) as client:
        error = _rejected(client, "please misbehave")
        assert error.status_code == 403 and error.response.text == DEFAULT_REJECTION
        assert _ask(client, "give-email please") == "Write to {EMAIL} about it."
        bedrock.clear()
        # `streaming` is not enabled in the example: response guards skip streams.
        chunks = list(client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "please misbehave"}],
            stream=True,
        ))  # fmt: skip
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == "I will attack the castle."
        assert [p["source"] for _, p, _ in bedrock.clear()] == ["INPUT"]


def test_model_armor_example_with_a_google_token(
    armor_gw: Process, llm: EchoLLM, armor: GuardService, tokens: TokenEndpoint
) -> None:
    with _client(armor_gw.port) as client:
        assert _ask(client, "Tell me about rivers") == "You said: Tell me about rivers"
        calls = armor.clear()
        assert [target for target, _, _ in calls] == [
            f"{ARMOR_BASE}:sanitizeUserPrompt", f"{ARMOR_BASE}:sanitizeModelResponse",
        ]
        assert calls[0][1] == {"user_prompt_data": {"text": "Tell me about rivers"}}
        assert calls[1][1] == {"model_response_data": {"text": "You said: Tell me about rivers"}}
        assert calls[0][2]["authorization"].startswith("Bearer ya29.test-")

        error = _rejected(client, "an attack plan")
        assert error.status_code == 403 and error.response.text == DEFAULT_REJECTION
        assert "an attack plan" not in llm.prompts
        error = _rejected(client, "please misbehave")
        assert error.status_code == 403
    assert tokens.issued >= 1


def test_a_failing_guard_service_fails_the_request(
    module_gateway: GatewayFactory, llm: EchoLLM
) -> None:
    env = {**NO_PROXY, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": "wrong-secret",
           "AWS_SESSION_TOKEN": SESSION_TOKEN,
           "AGW_FAST_BEDROCK_GUARDRAILS_URL": f"http://127.0.0.1:{unused_port()}"}
    gw = module_gateway(_example("bedrock", llm.upstream.port), env=env)
    with _client(gw.port) as client:
        error = _rejected(client, "hello")
        assert error.status_code == 503
        assert error.response.text == "failed to process LLM request: prompt guard failed"


def _webhook(conn: UpstreamConnection) -> None:
    """A response webhook: rejects "attack", masks emails, passes the rest."""
    while (request := conn.read_request()) is not None:
        assert request.target == "/response", request.target
        choices = json.loads(request.body)["body"]["choices"]
        text = " ".join(c["message"]["content"] for c in choices)
        action: dict[str, Any]
        if "attack" in text:
            action = {"body": "no attacks", "status_code": 451}
        elif "@" in text:
            action = {"body": {"choices": [
                {"message": {"role": "assistant", "content": "[email removed]"}}
            ]}}  # fmt: skip
        else:
            action = {}
        conn.send(http_response(200, json.dumps({"action": action}).encode(),
                                [("content-type", "application/json")]))  # fmt: skip


def test_webhook_response_guard_on_json(gateway: GatewayFactory, llm: EchoLLM) -> None:
    with Upstream(_webhook) as hook:
        gw = gateway(f"""config:
  adminAddr: "off"
  readinessAddr: "off"
  statsAddr: "off"
binds:
- port: 0
  listeners:
  - routes:
    - backends:
      - ai:
          name: openai
          hostOverride: "127.0.0.1:{llm.upstream.port}"
          provider: {{openAI: {{model: gpt-4o-mini}}}}
      policies:
        ai:
          promptGuard:
            response:
            - webhook: {{target: {{host: "127.0.0.1:{hook.port}"}}}}
""", env=NO_PROXY)
        with _client(gw.port) as client:
            assert _ask(client, "hello") == "You said: hello"
            assert _ask(client, "give-email please") == "[email removed]"
            error = _rejected(client, "please misbehave")
            assert error.status_code == 451 and error.response.text == "no attacks"
        # Keep-alive survives the async step: two requests on one connection.
        with gateway_client(gw.port) as raw:
            for _ in range(2):
                response = raw.post("/v1/chat/completions", json={
                    "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]})
                assert response.status_code == 200
                assert response.json()["choices"][0]["message"]["content"] == "You said: x"


def test_mock_llm_serves_the_three_guard_apis(tmp_path: Path) -> None:
    mock = start_mock(tmp_path, name="guard-apis")
    try:
        base = f"http://127.0.0.1:{mock.port}"
        with httpx.Client(base_url=base, timeout=DEADLINE, trust_env=False) as client:
            bedrock = client.post(GUARDRAIL_PATH, headers={"authorization": "Bearer k"},
                                  json={"source": "INPUT",
                                        "content": [{"text": {"text": "an attack"}}]})
            assert bedrock.json()["action"] == "GUARDRAIL_INTERVENED"
            assert client.post(GUARDRAIL_PATH, json={}).status_code == 403
            armor = client.post(f"{ARMOR_BASE}:sanitizeUserPrompt",
                                headers={"authorization": "Bearer t"},
                                json={"user_prompt_data": {"text": "attack"}})
            assert armor.json()["sanitizationResult"]["filterMatchState"] == "MATCH_FOUND"
            azure = client.post("/contentsafety/text:analyze?api-version=2024-09-01",
                                headers={"ocp-apim-subscription-key": "k"},
                                json={"text": "attack"})
            violence = [c for c in azure.json()["categoriesAnalysis"]
                        if c["category"] == "Violence"]  # fmt: skip
            assert violence == [{"category": "Violence", "severity": 4}]
            jailbreak = client.post("/contentsafety/text:detectJailbreak?api-version=x",
                                    headers={"authorization": "Bearer t"},
                                    json={"text": "a jailbreak"})
            assert jailbreak.json() == {"jailbreakAnalysis": {"detected": True}}
    finally:
        mock.stop()


def test_refusals(tmp_path: Path) -> None:
    azure = (EXAMPLES / "llm-prompt-guard-azure-content-safety-config.yaml").read_text()
    line = refused_config(tmp_path / "azure.yaml", azure)
    assert "azureContentSafety: not supported:" in line and "Entra ID" in line
    streaming = _example("bedrock", 1).replace(
        "          promptGuard:\n", "          promptGuard:\n            streaming: Enabled\n"
    )
    line = refused_config(tmp_path / "streaming.yaml", streaming)
    assert "response[0].bedrockGuardrails: not supported:" in line
    assert "streaming: Enabled" in line
