"""The Grafana dashboard (deploy/grafana/agw-fast.json) queries only what agw-fast exports: a
gateway serves chat completions (JSON and streamed), a rate-limited route and a retried route,
then its /metrics is scraped and every PromQL expression of the dashboard is checked against
the scraped metric names and their labels."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import yaml

from tests.e2e.conftest import (
    UPSTREAM_KEY,
    GatewayFactory,
    Process,
    Sample,
    ai_route,
    gateway_client,
    metric_total,
    poll,
    scrape_metrics,
)

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "agw-fast.json"

# PromQL words that are not metric names: aggregations, functions (always followed by "("),
# grouping and binary-operator keywords.
_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan",
})
# Labels that Prometheus adds to every scraped series (target labels), not agw-fast.
_TARGET_LABELS = frozenset({"instance", "job"})
_IDENTIFIER = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
_MATCHERS = re.compile(r'\{((?:[^{}"]|"(?:[^"\\]|\\.)*")*)\}')  # braces in strings too
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*\"(?:[^\"\\]|\\.)*\"")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def dashboard_expressions() -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, and the template variables'."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    found = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                found.append((panel["title"], target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            found.append((f"variable {variable['name']}", text))
    return found


def referenced(expr: str) -> tuple[set[str], set[str]]:
    """The metric names and the label names a PromQL expression uses."""
    text = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables: $route, $__rate_interval
    labels: set[str] = set()
    for matchers in _MATCHERS.findall(text):
        labels.update(_MATCHER_LABEL.findall(matchers))
    for grouping in _GROUPING.findall(text):
        labels.update(name.strip() for name in grouping.split(",") if name.strip())
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", text)  # string arguments
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range selectors
    # label_values(metric, label): the second argument is a label
    for metric_label in re.findall(r"label_values\(\s*[^,()]+,\s*(\w+)\s*\)", text):
        labels.add(metric_label)
    text = re.sub(r"(label_values\(\s*[^,()]+),\s*\w+\s*\)", r"\1)", text)
    metrics = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or name in _KEYWORDS:
            continue  # a function or aggregation, or a keyword
        metrics.add(name)
    return metrics, labels


def test_expression_parser() -> None:
    metrics, labels = referenced(
        'histogram_quantile(0.9, sum by (le, gen_ai_request_model) (rate('
        'agentgateway_gen_ai_server_time_to_first_token_bucket{route=~"$route", '
        'reason!="a{b}"}[$__rate_interval]))) / on (instance) up'
    )
    assert metrics == {"agentgateway_gen_ai_server_time_to_first_token_bucket", "up"}
    assert labels == {"le", "gen_ai_request_model", "route", "reason", "instance"}
    metrics, labels = referenced("label_values(agentgateway_requests_total, route)")
    assert (metrics, labels) == ({"agentgateway_requests_total"}, {"route"})


def _config(mock_port: int) -> str:
    chat = ai_route(mock_port, host="127.0.0.1", match_prefix="/v1/chat", name="chat")
    doc = {
        "config": {"statsAddr": "127.0.0.1:0", "adminAddr": "off", "readinessAddr": "off"},
        "binds": [{"port": 0, "listeners": [{"routes": [
            {
                "name": "limited",
                "matches": [{"path": {"pathPrefix": "/limited"}}],
                "policies": {
                    "localRateLimit": [
                        {"maxTokens": 1, "tokensPerFill": 1, "fillInterval": "3600s"},
                    ],
                    "directResponse": {"status": 200, "body": "ok"},
                },
            },
            {
                "name": "retried",
                "matches": [{"path": {"pathPrefix": "/status"}}],
                "policies": {"retry": {"attempts": 2, "codes": [503]}},
                "backends": [{"host": f"127.0.0.1:{mock_port}"}],
            },
            chat,
        ]}]}],
    }
    return str(yaml.safe_dump(doc, sort_keys=False))


def _exported(gateway: GatewayFactory, mock: Process) -> list[Sample]:
    gw = gateway(_config(mock.port), env={"UPSTREAM_KEY": UPSTREAM_KEY}, expect_stats=True)
    body = {"model": "ignored", "messages": [{"role": "user", "content": "hello there"}]}
    with gateway_client(gw.port) as client:
        assert client.post("/v1/chat/completions", json=body).status_code == 200
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            assert r.status_code == 200
            assert b"".join(_chunks(r)).rstrip().endswith(b"data: [DONE]")
        assert client.get("/limited").status_code == 200
        assert client.get("/limited").status_code == 429
        assert client.get("/status/503").status_code == 503  # retried once, then relayed
    samples: list[Sample] = poll(
        lambda: scrape_metrics(gw.extra_ports["stats"]),
        lambda s: metric_total(s, "agentgateway_requests_total") >= 5,
        what="5 requests counted",
    )
    return samples


def _chunks(response: httpx.Response) -> Iterator[bytes]:
    yield from response.iter_bytes()


def test_dashboard_queries_name_only_exported_metrics(
    gateway: GatewayFactory, plain_upstream: Process
) -> None:
    samples = _exported(gateway, plain_upstream)
    labels_of: dict[str, set[str]] = {}
    for sample in samples:
        labels_of.setdefault(sample.name, set()).update(sample.labels)
    # The gateway exported every family the dashboard is about (else the check below is empty).
    for name in (
        "agentgateway_requests_total",
        "agentgateway_request_duration_seconds_bucket",
        "agentgateway_retries_total",
        "agentgateway_gen_ai_client_token_usage_sum",
        "agentgateway_gen_ai_server_time_to_first_token_bucket",
        "agentgateway_gen_ai_server_time_per_output_token_bucket",
        "agentgateway_gen_ai_server_request_duration_count",
    ):
        assert name in labels_of, f"{name} not exported: {sorted(labels_of)}"
    assert metric_total(samples, "agentgateway_requests_total", reason="RateLimit") == 1

    expressions = dashboard_expressions()
    assert len(expressions) >= 15
    used: set[str] = set()
    for title, expr in expressions:
        metrics, labels = referenced(expr)
        assert metrics, f"{title}: no metric in {expr!r}"
        unknown = metrics - labels_of.keys()
        assert not unknown, f"{title}: {sorted(unknown)} not exported by agw-fast ({expr!r})"
        available = set().union(*(labels_of[m] for m in metrics)) | _TARGET_LABELS
        assert labels <= available, (
            f"{title}: labels {sorted(labels - available)} not on {sorted(metrics)}"
        )
        used |= metrics
    # The dashboard covers what the issue asks for.
    assert {
        "agentgateway_requests_total", "agentgateway_retries_total",
        "agentgateway_gen_ai_client_token_usage_sum",
        "agentgateway_gen_ai_server_time_to_first_token_bucket",
        "agentgateway_request_duration_seconds_bucket",
    } <= used
    assert any('reason="RateLimit"' in expr for _, expr in expressions)
