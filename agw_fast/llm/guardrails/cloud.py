"""The cloud guards: AWS Bedrock Guardrails, Google Model Armor, Azure AI Content Safety.

Each follows agentgateway's crates/agentgateway/src/llm/policy/{bedrock_guardrails,
google_model_armor,azure_content_safety}.rs:

- `bedrockGuardrails`: POST `https://bedrock-runtime.{region}.amazonaws.com/guardrail/{id}/
  version/{version}/apply` with `{"source": "INPUT"|"OUTPUT", "content": [{"text": {"text":
  ...}}, ...]}`, one block per text (the request's texts in the guard's `scope`; the response's
  texts). `action: GUARDRAIL_INTERVENED` with an assessment whose `action` is `BLOCKED`
  rejects; one that only `ANONYMIZED` masks with the answer's `outputs` (one per block sent,
  else it rejects). Signed with SigV4 (service `bedrock`, the guardrail's region) from the
  ambient AWS credentials unless `policies.backendAuth` holds a key.
- `googleModelArmor`: POST `https://modelarmor.{location}.rep.googleapis.com/v1/projects/{p}/
  locations/{l}/templates/{t}:sanitizeUserPrompt` with `{"user_prompt_data": {"text": ...}}`
  (the prompt's messages joined by newlines), or `:sanitizeModelResponse` with
  `{"model_response_data": {"text": ...}}`; any filter result (RAI, prompt injection and
  jailbreak, malicious URI, CSAM, virus scan, SDP inspect or deidentify) in `MATCH_FOUND`
  rejects. A Google access token (Application Default Credentials) unless a key.
- `azureContentSafety`: POST `https://{endpoint}/contentsafety/text:analyze?api-version=...`
  with `{"text", "blocklistNames", "haltOnBlocklistHit"}`: a blocklist match or a category at
  or above `severityThreshold` rejects; then (requests only) `text:detectJailbreak` with
  `{"text"}`: `jailbreakAnalysis.detected` rejects. (The loader refuses it today: agentgateway
  authenticates it with Entra ID only.)

A call that fails, or an answer that cannot be read, fails the request (agentgateway
propagates the error: 503 `prompt guard failed`). Where each service is can be moved for tests
or a proxy with an environment variable per kind (`*_URL_VARIABLE`: a base URL replacing the
scheme and host; a path in it prefixes the API's). Sans-IO.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from typing import Any, Literal
from urllib.parse import quote, urlsplit

from agw_fast.config.model import (
    AzureContentSafetyConfig,
    BackendTLS,
    BedrockGuardConfig,
    GuardConfig,
    GuardServicePolicies,
    ModelArmorConfig,
)
from agw_fast.errors import ConfigError
from agw_fast.llm.guardrails.content import request_messages
from agw_fast.llm.guardrails.guards import (
    ALLOW,
    GUARD_TIMEOUT,
    MASK,
    Endpoint,
    Guard,
    GuardCall,
    GuardFailed,
    Prompt,
    Reply,
    Verdict,
    dumps,
    modified_lines,
    rejection_of,
)
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.providers.aws_sigv4 import SigV4Signer
from agw_fast.llm.providers.vertex import AccessToken

__all__ = [
    "AZURE_CONTENT_SAFETY_URL_VARIABLE",
    "AzureContentSafetyGuard",
    "BEDROCK_GUARDRAILS_URL_VARIABLE",
    "BedrockGuard",
    "CloudGuard",
    "MODEL_ARMOR_URL_VARIABLE",
    "ModelArmorGuard",
    "bedrock_verdict",
    "compile_cloud_guard",
    "model_armor_blocked",
    "require_model_armor_auth",
]

BEDROCK_GUARDRAILS_URL_VARIABLE = "AGW_FAST_BEDROCK_GUARDRAILS_URL"
MODEL_ARMOR_URL_VARIABLE = "AGW_FAST_MODEL_ARMOR_URL"
AZURE_CONTENT_SAFETY_URL_VARIABLE = "AGW_FAST_AZURE_CONTENT_SAFETY_URL"


def require_model_armor_auth(where: str) -> None:
    """Refuse a Model Armor guard that needs Application Default Credentials when the
    `google-auth` library (the optional `vertex` extra) is missing."""
    if importlib.util.find_spec("google.auth") is None:
        raise ConfigError(
            where,
            "googleModelArmor authenticates with Google Application Default Credentials, which "
            "needs the google-auth library: pip install 'agw-fast[vertex]' (or set "
            "policies.backendAuth.key)",
        )


def service_endpoint(default_host: str, variable: str, environ: Mapping[str, str],
                     policies: GuardServicePolicies, where: str) -> Endpoint:
    """The service's host (HTTPS on 443), or the base URL in `environ[variable]`; `path` is
    the prefix the API's path goes under (b"" by default)."""
    url = environ.get(variable)
    if not url:
        tls = policies.backend_tls or BackendTLS()
        return Endpoint(default_host, 443, default_host.encode(), b"", tls, where)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query:
        raise ConfigError(variable, f"invalid URL {url!r}")
    https = parts.scheme == "https"
    override_tls = policies.backend_tls or BackendTLS() if https else policies.backend_tls
    return Endpoint(parts.hostname, parts.port or (443 if https else 80), parts.netloc.encode(),
                    parts.path.rstrip("/").encode(), override_tls, where)


class CloudGuard(Guard):
    """What the three share: the endpoint, the key or cloud credential, header changes."""

    remote = True
    # The cloud credential the plan must provide when no key replaces it.
    needs: Literal["aws", "google"] | None = None
    region = ""  # the AWS region a SigV4 signature is for
    signer: SigV4Signer | None = None  # set by the plan (`needs == "aws"`)
    credential: AccessToken | None = None  # set by the plan (`needs == "google"`)

    def __init__(self, config: GuardConfig, endpoint: Endpoint,
                 policies: GuardServicePolicies) -> None:
        self.rejection = rejection_of(config.rejection)
        self.scope = config.scope
        self.endpoint = endpoint
        self.authority = endpoint.authority
        lines: list[bytes] = []
        if policies.auth is not None:
            auth = policies.auth
            lines.append(f"{auth.header_name}: {auth.prefix}{auth.key}".encode("latin-1"))
        self.keyed = policies.auth is not None
        self.lines = modified_lines(lines, policies.request_headers)

    def _post(self, path: bytes, body: bytes, extra: Sequence[bytes] = ()) -> GuardCall:
        head = [b"POST " + path + b" HTTP/1.1", b"host: " + self.authority, *extra]
        signer = self.signer
        if signer is not None and not self.keyed:
            # SigV4 covers host, content-type, x-amz-date and the body (aws_sigv4.py).
            signed = signer.sign(b"POST", self.authority, path, body)
            head += signed.rstrip(b"\r\n").split(b"\r\n")
        else:
            head.append(b"content-type: application/json")
        head += self.lines
        head.append(b"content-length: %d" % len(body))
        request = b"\r\n".join(head) + b"\r\n\r\n" + body
        credential = None if self.keyed else self.credential
        return GuardCall(self.target, request, GUARD_TIMEOUT, credential)


def _answer(status: int, body: bytes, service: str) -> dict[str, Any]:
    if not 200 <= status < 300:
        raise GuardFailed(f"{service} answered {status}: {body[:200]!r}")
    try:
        doc = loads(body)
    except ValueError as error:
        raise GuardFailed(f"{service} answer is not JSON: {error}") from None
    if type(doc) is not dict:
        raise GuardFailed(f"{service} answer is not a JSON object")
    return doc


def _prompt_text(prompt: Prompt) -> str:
    """agentgateway's `get_messages` contents, joined by newlines."""
    return "\n".join(m["content"] for m in request_messages(prompt.route_type, prompt.obj))


# -- Bedrock Guardrails ----------------------------------------------------------------------


def bedrock_verdict(doc: dict[str, Any], sent: int) -> Literal["none", "block"] | list[str]:
    """An ApplyGuardrail answer: "none" (no intervention), "block", or the masked texts (one
    per block sent: an intervention that only anonymized)."""
    action = doc.get("action")
    if action == "NONE":
        return "none"
    if action != "GUARDRAIL_INTERVENED":
        raise GuardFailed(f"bedrock guardrail answer has action {action!r}")
    assessments = doc.get("assessments") or []
    if _has_action(assessments, "BLOCKED") or not _has_action(assessments, "ANONYMIZED"):
        return "block"
    outputs = doc.get("outputs") or []
    texts = [o.get("text") for o in outputs if type(o) is dict]
    if len(texts) != sent or not all(type(t) is str for t in texts):
        return "block"  # agentgateway: a mask that does not line up rejects
    return [t for t in texts if type(t) is str]


def _has_action(value: object, action: str) -> bool:
    """Whether `"action": action` appears anywhere in the assessments' JSON."""
    if type(value) is dict:
        if value.get("action") == action:
            return True
        return any(_has_action(v, action) for v in value.values())
    if type(value) is list:
        return any(_has_action(v, action) for v in value)
    return False


class BedrockGuard(CloudGuard):
    kind = "bedrockGuardrails"

    def __init__(self, config: GuardConfig, environ: Mapping[str, str]) -> None:
        bedrock: BedrockGuardConfig | None = config.bedrock
        assert bedrock is not None
        self.config = bedrock
        endpoint = service_endpoint(
            f"bedrock-runtime.{bedrock.region}.amazonaws.com", BEDROCK_GUARDRAILS_URL_VARIABLE,
            environ, bedrock.policies, bedrock.path,
        )  # fmt: skip
        super().__init__(config, endpoint, bedrock.policies)
        self.needs = None if self.keyed else "aws"
        self.region = bedrock.region
        self.path = endpoint.path + (
            f"/guardrail/{quote(bedrock.identifier, safe='')}"
            f"/version/{quote(bedrock.version, safe='')}/apply"
        ).encode()

    def _call(self, source: str, texts: list[str]) -> GuardCall:
        content = [{"text": {"text": t}} for t in texts]
        body = dumps({"source": source, "content": content}).encode()
        return self._post(self.path, body, (b"accept: application/json",))

    def on_request(self, prompt: Prompt) -> Verdict | GuardCall:
        texts = [s.text for s in prompt.slots() if s.scope in self.scope]
        if not texts:
            return ALLOW
        return self._call("INPUT", texts)

    def request_answer(self, prompt: Prompt, status: int, body: bytes) -> Verdict:
        slots = [s for s in prompt.slots() if s.scope in self.scope]
        verdict = bedrock_verdict(_answer(status, body, "bedrock guardrail"), len(slots))
        if verdict == "none":
            return ALLOW
        if verdict == "block":
            return Verdict("Reject", self.rejection)
        for slot, text in zip(slots, verdict, strict=True):
            slot.set(text)
        return MASK

    def on_response(self, reply: Reply) -> Verdict | GuardCall:
        if not reply.texts:
            return ALLOW
        return self._call("OUTPUT", [t.text for t in reply.texts])

    def response_answer(self, reply: Reply, status: int, body: bytes) -> Verdict:
        verdict = bedrock_verdict(_answer(status, body, "bedrock guardrail"), len(reply.texts))
        if verdict == "none":
            return ALLOW
        if verdict == "block":
            return Verdict("Reject", self.rejection)
        for item, text in zip(reply.texts, verdict, strict=True):
            item.set(text)
        return MASK


# -- Google Model Armor ----------------------------------------------------------------------

_FILTERS = ("raiFilterResult", "piAndJailbreakFilterResult", "maliciousUriFilterResult",
            "csamFilterResult", "virusScanFilterResult")  # fmt: skip


def model_armor_blocked(doc: dict[str, Any]) -> bool:
    """Whether a sanitize answer has a filter in MATCH_FOUND (`filterResults` is a map of
    entries, or a list of them)."""
    result = doc.get("sanitizationResult")
    if type(result) is not dict:
        return False
    entries = result.get("filterResults")
    if type(entries) is dict:
        values: list[Any] = list(entries.values())
    elif type(entries) is list:
        values = entries
    else:
        return False
    for entry in values:
        if type(entry) is not dict:
            continue
        for name in _FILTERS:
            if _match_found(entry.get(name)):
                return True
        sdp = entry.get("sdpFilterResult")
        if type(sdp) is dict and (
            _match_found(sdp.get("inspectResult")) or _match_found(sdp.get("deidentifyResult"))
        ):
            return True
    return False


def _match_found(result: object) -> bool:
    return type(result) is dict and result.get("matchState") == "MATCH_FOUND"


class ModelArmorGuard(CloudGuard):
    kind = "googleModelArmor"

    def __init__(self, config: GuardConfig, environ: Mapping[str, str]) -> None:
        armor: ModelArmorConfig | None = config.model_armor
        assert armor is not None
        self.config = armor
        endpoint = service_endpoint(
            f"modelarmor.{armor.location}.rep.googleapis.com", MODEL_ARMOR_URL_VARIABLE,
            environ, armor.policies, armor.path,
        )  # fmt: skip
        super().__init__(config, endpoint, armor.policies)
        self.needs = None if self.keyed else "google"
        base = (
            f"/v1/projects/{quote(armor.project_id, safe='')}/locations/{armor.location}"
            f"/templates/{quote(armor.template_id, safe='')}"
        ).encode()
        self.prompt_path = endpoint.path + base + b":sanitizeUserPrompt"
        self.response_path = endpoint.path + base + b":sanitizeModelResponse"

    def on_request(self, prompt: Prompt) -> GuardCall:
        body = dumps({"user_prompt_data": {"text": _prompt_text(prompt)}}).encode()
        return self._post(self.prompt_path, body)

    def request_answer(self, prompt: Prompt, status: int, body: bytes) -> Verdict:
        if model_armor_blocked(_answer(status, body, "model armor")):
            return Verdict("Reject", self.rejection)
        return ALLOW

    def on_response(self, reply: Reply) -> Verdict | GuardCall:
        if not reply.texts:
            return ALLOW
        text = "\n".join(t.text for t in reply.texts)
        body = dumps({"model_response_data": {"text": text}}).encode()
        return self._post(self.response_path, body)

    def response_answer(self, reply: Reply, status: int, body: bytes) -> Verdict:
        if model_armor_blocked(_answer(status, body, "model armor")):
            return Verdict("Reject", self.rejection)
        return ALLOW


# -- Azure AI Content Safety -----------------------------------------------------------------


def azure_analyze_blocked(doc: dict[str, Any], threshold: int) -> bool:
    """A text:analyze answer: a blocklist hit, or a category at or above `threshold`."""
    if doc.get("blocklistsMatch"):
        return True
    categories = doc.get("categoriesAnalysis") or []
    return any(
        type(c) is dict and type(c.get("severity")) is int and c["severity"] >= threshold
        for c in categories
    )


class AzureContentSafetyGuard(CloudGuard):
    """Two calls for a request (text:analyze, then text:detectJailbreak), each when
    configured; the prompt's `stage` says which one answered."""

    kind = "azureContentSafety"

    def __init__(self, config: GuardConfig, environ: Mapping[str, str]) -> None:
        azure: AzureContentSafetyConfig | None = config.azure
        assert azure is not None
        self.config = azure
        policies = GuardServicePolicies()  # agentgateway's Entra credential comes first
        endpoint = service_endpoint(azure.endpoint, AZURE_CONTENT_SAFETY_URL_VARIABLE, environ,
                                    policies, azure.path)
        super().__init__(config, endpoint, policies)
        base = endpoint.path + b"/contentsafety/"
        self.analyze_path = base + b"text:analyze?api-version=" + azure.analyze_api_version.encode()
        self.jailbreak_path = (
            base + b"text:detectJailbreak?api-version=" + azure.jailbreak_api_version.encode()
        )

    def _analyze(self, text: str) -> GuardCall:
        azure = self.config
        doc: dict[str, object] = {"text": text}
        if azure.blocklist_names:
            doc["blocklistNames"] = list(azure.blocklist_names)
        if azure.halt_on_blocklist_hit is not None:
            doc["haltOnBlocklistHit"] = azure.halt_on_blocklist_hit
        return self._post(self.analyze_path, dumps(doc).encode())

    def on_request(self, prompt: Prompt) -> Verdict | GuardCall:
        if self.config.analyze_text:
            prompt.stage = 0
            return self._analyze(_prompt_text(prompt))
        if self.config.detect_jailbreak:
            prompt.stage = 1
            return self._post(self.jailbreak_path,
                              dumps({"text": _prompt_text(prompt)}).encode())
        return ALLOW

    def request_answer(self, prompt: Prompt, status: int, body: bytes
                       ) -> Verdict | GuardCall:
        doc = _answer(status, body, "azure content safety")
        if prompt.stage == 0:
            if azure_analyze_blocked(doc, self.config.severity_threshold):
                return Verdict("Reject", self.rejection)
            if not self.config.detect_jailbreak:
                return ALLOW
            prompt.stage = 1
            return self._post(self.jailbreak_path,
                              dumps({"text": _prompt_text(prompt)}).encode())
        analysis = doc.get("jailbreakAnalysis")
        if type(analysis) is dict and analysis.get("detected") is True:
            return Verdict("Reject", self.rejection)
        return ALLOW

    def on_response(self, reply: Reply) -> Verdict | GuardCall:
        # detectJailbreak is for prompts only.
        if not reply.texts or not self.config.analyze_text:
            return ALLOW
        return self._analyze("\n".join(t.text for t in reply.texts))

    def response_answer(self, reply: Reply, status: int, body: bytes) -> Verdict:
        doc = _answer(status, body, "azure content safety")
        if azure_analyze_blocked(doc, self.config.severity_threshold):
            return Verdict("Reject", self.rejection)
        return ALLOW


def compile_cloud_guard(config: GuardConfig, environ: Mapping[str, str]) -> Guard:
    if config.kind == "bedrockGuardrails":
        return BedrockGuard(config, environ)
    if config.kind == "googleModelArmor":
        return ModelArmorGuard(config, environ)
    return AzureContentSafetyGuard(config, environ)
