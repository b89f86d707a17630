"""Every shipped example config loads (with the environment variables it documents)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agw_fast.config import load_config_file
from agw_fast.plan import compile_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"
UPSTREAM_EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "agentgateway-examples"
ENV = {"COHERE_API_KEY": "test-key", "OPENAI_API_KEY": "test-key", "HOME": "/root"}


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.yaml")), ids=lambda p: p.name)
def test_example_config_loads_and_compiles(path: Path) -> None:
    config = load_config_file(path, ENV)
    assert config.binds
    runtime = compile_config(config)
    assert all(bind.listeners for bind in runtime)


def test_seed_config_targets_cohere_over_tls() -> None:
    config = load_config_file(CONFIG_DIR / "cohere.yaml", ENV)
    (bind,) = compile_config(config)
    assert bind.port == 3000 and bind.single is not None
    (route,) = bind.single.routes()
    (backend,) = route.backends
    assert (backend.host, backend.port) == ("api.cohere.ai", 443)
    assert backend.ssl is not None and backend.server_hostname == "api.cohere.ai"
    assert b"authorization: Bearer test-key\r\n" in backend.request_headers.extra
    assert backend.ai is not None and backend.ai.model_override == "command"
    assert backend.ai.has_host_override and backend.ai.path_prefix is None
    assert route.url_rewrite is not None and route.url_rewrite.path is not None
    assert route.url_rewrite.path.value == "/compatibility/v1/chat/completions"


def test_demo_config_needs_no_secrets() -> None:
    config = load_config_file(CONFIG_DIR / "demo.yaml", {})
    binds = compile_config(config)
    assert [bind.port for bind in binds] == [3000, 4000]  # the binds form, then `llm:`


def test_agentgateway_traffic_http_example() -> None:
    # agentgateway's examples/traffic-http/config.yaml, unchanged: cors, localRateLimit,
    # requestMirror, retry, authorization and the rest load and compile.
    path = UPSTREAM_EXAMPLES / "traffic-http.yaml"
    binds = compile_config(load_config_file(path, {}))
    assert [bind.port for bind in binds] == [3000]


def test_agentgateway_traffic_ratelimiting_local_example() -> None:
    # agentgateway's examples/traffic-ratelimiting-local/config.yaml, unchanged: its
    # `config.tracing` and the rate limit load.
    path = UPSTREAM_EXAMPLES / "traffic-ratelimiting-local.yaml"
    config = load_config_file(path, {})
    (bind,) = compile_config(config)
    assert bind.port == 3000
    tracing = config.static.tracing
    assert tracing is not None
    assert (tracing.endpoint, tracing.protocol, tracing.random_sampling) == (
        "http://localhost:4317", "grpc", "true",
    )


@pytest.mark.parametrize("name", ["otel", "langfuse", "openllmetry", "phoenix"])
def test_agentgateway_llm_telemetry_tracing_examples(name: str) -> None:
    # agentgateway's examples/llm-telemetry/tracing/*.yaml, unchanged: `config.tracing` with
    # GenAI span fields (CEL, flattenRecursive) in front of the gemini provider.
    path = UPSTREAM_EXAMPLES / f"llm-telemetry-tracing-{name}.yaml"
    config = load_config_file(path, {"GEMINI_API_KEY": "test-key"})
    (bind,) = compile_config(config)
    assert bind.port == 3000
    tracing = config.static.tracing
    assert tracing is not None
    if name == "langfuse":
        assert (tracing.endpoint, tracing.protocol, tracing.otlp_path) == (
            "https://us.cloud.langfuse.com:443", "http", "/api/public/otel",
        )
        assert tracing.headers == (("authorization", "Basic xx"),)
    else:
        assert (tracing.endpoint, tracing.protocol) == ("http://localhost:4317", "grpc")
