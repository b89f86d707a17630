"""LLM metrics on `statsAddr` `/metrics`, summed over the gateway's worker processes."""

from __future__ import annotations

import json

from tests.e2e.conftest import (
    UPSTREAM_KEY,
    Certs,
    GatewayFactory,
    Process,
    RawClient,
    ai_route,
    child_pids,
    http_request,
    llm_config,
    metric_total,
    poll,
    scrape_metrics,
    serving_worker,
)

MIN_REQUESTS = 8
MAX_REQUESTS = 200  # connections opened at most while waiting for both workers to serve one
TOKENS = "agentgateway_gen_ai_client_token_usage"
TTFT = "agentgateway_gen_ai_server_time_to_first_token"
TPOT = "agentgateway_gen_ai_server_time_per_output_token"
REQUESTS = "agentgateway_requests_total"


def prompt_tokens(content: str) -> int:
    return len(content.encode()) // 4 + 1  # the mock's stand-in tokenizer


def test_llm_metrics_summed_over_workers(
    gateway: GatewayFactory, tls_upstream: Process, certs: Certs
) -> None:
    gw = gateway(
        llm_config(
            ai_route(tls_upstream.port, rewrite_path="/compatibility/v1/chat/completions",
                     ca_path=certs.ca_path),
            stats=True,
        ),
        workers=2,
        env={"UPSTREAM_KEY": UPSTREAM_KEY},
        expect_stats=True,
    )
    stats = gw.extra_ports["stats"]
    workers = child_pids(gw.proc.pid)
    served_by: dict[int, int] = {}
    streaming = input_tokens = sent = 0
    # Fresh connections until both workers served (the kernel spreads them by 4-tuple hash).
    while sent < MIN_REQUESTS or len(served_by) < 2:
        assert sent < MAX_REQUESTS, f"one worker served everything: {served_by}"
        stream = sent % 2 == 1
        content = "count my tokens " * (sent + 1)
        body = {"model": "ignored", "messages": [{"role": "user", "content": content}]}
        if stream:
            body["stream"] = True
        request = http_request(
            "POST", "/v1/chat/completions", headers=[("content-type", "application/json")],
            body=json.dumps(body).encode(),
        )
        with RawClient(gw.port) as client:
            response = client.request(request)
            assert response.status == 200, response.raw[:500]
            if stream:
                assert response.body.endswith(b"data: [DONE]\n\n")
            owner = serving_worker(gw.port, client.sock.getsockname()[1], workers)
        assert owner is not None, "could not tell which worker served the connection"
        served_by[owner] = served_by.get(owner, 0) + 1
        sent += 1
        streaming += stream
        input_tokens += prompt_tokens(content)

    input_count = {"gen_ai_token_type": "input"}
    samples = poll(
        lambda: scrape_metrics(stats),
        lambda s: metric_total(s, f"{TOKENS}_count", **input_count) >= sent,
        what=f"{sent} input token observations",
    )
    assert metric_total(samples, f"{TOKENS}_count", **input_count) == sent
    assert metric_total(samples, f"{TOKENS}_sum", **input_count) == input_tokens
    assert metric_total(samples, f"{TOKENS}_count", gen_ai_token_type="output") == sent
    assert metric_total(samples, f"{TOKENS}_sum", gen_ai_token_type="output") == 5 * sent
    assert metric_total(samples, REQUESTS) >= sent
    assert metric_total(samples, REQUESTS, status="200") >= sent
    assert metric_total(samples, f"{TTFT}_count") == streaming

    token_series = [s for s in samples if s.name.startswith(TOKENS + "_")]
    assert token_series
    for sample in token_series:
        assert sample.labels["gen_ai_request_model"] == "command"
        assert sample.labels["gen_ai_response_model"] == "command"
        assert sample.labels["gen_ai_system"] == "openai"
        assert sample.labels["gen_ai_operation_name"] == "chat"
        assert sample.labels["gen_ai_token_type"] in ("input", "output")
        # agentgateway's RouteIdentifier labels, as its binds form names things.
        assert sample.labels["bind"] == "bind/0"
        assert sample.labels["gateway"] == "default/default"
        assert sample.labels["listener"] == "listener0"
        assert sample.labels["route"] == "default/route0"
        assert sample.labels["route_rule"] == "unknown"
    ok = [s for s in samples if s.name == REQUESTS and s.labels["status"] == "200"]
    assert {s.labels["protocol"] for s in ok} == {"llm"}
    assert {s.labels["reason"] for s in ok} == {"Upstream"}
    assert {s.labels["backend"] for s in ok} == {
        "/default/default/bind/0/listener0/default/route0/backend0"
    }
    # Streams only: agentgateway times tokens from the first one it saw.
    assert metric_total(samples, f"{TPOT}_count") == streaming
    # Histograms are cumulative: the +Inf bucket equals the count, buckets never decrease.
    for name in (TOKENS, TTFT):
        for token_type in (("input", "output") if name == TOKENS else (None,)):
            labels = {"gen_ai_token_type": token_type} if token_type else {}
            buckets = sorted(
                (float(s.labels["le"]), s.value) for s in samples
                if s.name == f"{name}_bucket"
                and all(s.labels.get(k) == v for k, v in labels.items())
            )
            assert buckets, f"no buckets for {name} {labels}"
            counts = [count for _, count in buckets]
            assert counts == sorted(counts), f"{name} buckets not cumulative: {buckets}"
            assert buckets[-1][0] == float("inf")
            assert buckets[-1][1] == metric_total(samples, f"{name}_count", **labels)
