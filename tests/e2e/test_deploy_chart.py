"""The Helm chart's pod, run here as Kubernetes would run it: the rendered ConfigMap's config with
the Deployment's environment; the kubelet's probes, Prometheus' scrape (from the pod's
annotations) and the Service's traffic reach what the manifests point them at, and SIGTERM
drains within the pod's grace period."""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import yaml

from tests.e2e.conftest import (
    DEADLINE,
    GatewayFactory,
    Process,
    parse_metrics,
    poll,
    unused_port,
)
from tests.unit.test_deploy import container, container_port, plain_env, render, renderer


def _values(mock_port: int) -> tuple[dict[str, Any], int]:
    """The chart's default config, on free loopback ports, its model pointed at the mock."""
    config = yaml.safe_load((renderer.CHART / "files" / "config.yaml").read_text())
    llm_port, stats_port, ready_port = unused_port(), unused_port(), unused_port()
    config["config"].update(
        statsAddr=f"127.0.0.1:{stats_port}", readinessAddr=f"127.0.0.1:{ready_port}",
        adminAddr="off",
    )
    config["llm"]["port"] = llm_port
    config["llm"]["models"][0]["params"]["baseUrl"] = f"http://127.0.0.1:{mock_port}/v1"
    values = {
        "config": config,
        "service": {"ports": [{"name": "http", "port": 80, "targetPort": llm_port}]},
    }
    return values, llm_port


def test_the_chart_pod_serves_probes_metrics_and_traffic_then_drains(
    gateway: GatewayFactory, plain_upstream: Process
) -> None:
    values, llm_port = _values(plain_upstream.port)
    objects = render(values)
    main = container(objects)
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    # AGW_FAST_WORKERS comes from the CPU limit through the downward API: here, by hand.
    workers = int(main["resources"]["limits"]["cpu"])
    env = {**plain_env(main), "OPENAI_API_KEY": "sk-test"}
    gw = gateway(objects["ConfigMap"]["data"]["config.yaml"], workers=workers, env=env)

    def get(port: int, path: str) -> httpx.Response:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=DEADLINE)

    def fetch(port: int, path: str) -> httpx.Response | None:
        try:
            return get(port, path)
        except httpx.TransportError:
            return None

    # The kubelet's probes: 200 once every worker serves.
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        http_get = main[probe]["httpGet"]
        port = container_port(main, http_get["port"])
        response = poll(lambda port=port, path=http_get["path"]: fetch(port, path),
                        lambda r: r is not None and r.status_code == 200, what=probe)
        assert response.text == "ready\n"

    # The Service's port reaches the gateway.
    (service_port,) = objects["Service"]["spec"]["ports"]
    target = container_port(main, service_port["targetPort"])
    assert target == llm_port
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    reply = httpx.post(f"http://127.0.0.1:{target}/v1/chat/completions", json=body,
                       timeout=DEADLINE)
    assert reply.status_code == 200, reply.text
    assert reply.json()["choices"][0]["message"]["content"]

    # Prometheus, following the pod's annotations, finds the request.
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    scrape_port = int(annotations["prometheus.io/port"])
    samples = poll(
        lambda: parse_metrics(get(scrape_port, annotations["prometheus.io/path"]).text),
        lambda s: any(x.name == "agentgateway_requests_total" and x.labels["status"] == "200"
                      for x in s),
        what="the request counted",
    )
    assert {x.labels["route"] for x in samples if x.name == "agentgateway_requests_total"} == {
        "internal/llm:request"
    }

    # Kubernetes' SIGTERM: the minimum drain, then exit 0 well before the grace period ends.
    grace = pod["terminationGracePeriodSeconds"]
    started = time.monotonic()
    gw.proc.send_signal(signal.SIGTERM)
    assert gw.proc.wait(grace) == 0
    elapsed = time.monotonic() - started
    min_drain = float(env["CONNECTION_MIN_TERMINATION_DEADLINE"].removesuffix("s"))
    assert min_drain <= elapsed < grace
    assert f"new connections accepted for {min_drain:g}s" in gw.output()
