"""`config.tracing` and `frontendPolicies.tracing`: where spans go and which requests make one.

Both load into one `TracingPolicy`, as agentgateway migrates the first into the second
(types/local.rs `merge_deprecated_frontend_policies`); using both at once is refused, as
there. `config.tracing` follows agentgateway's config.rs: the endpoint (a URL whose path, if
any, replaces `path`; without a scheme it is https), the standard OTLP environment
variables taking precedence (`OTLP_ENDPOINT`, `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`,
`OTEL_EXPORTER_OTLP_ENDPOINT`, and the same for `_HEADERS` and `_PROTOCOL`), `fields.add`
as span attributes and `fields.remove`. Exporting needs the OpenTelemetry SDK, the optional
extra `tracing`: a config that traces without it is refused here, at load.
"""

from __future__ import annotations

import importlib.util
import json
import math
from collections.abc import Mapping
from typing import Literal, cast
from urllib.parse import urlsplit

from agw_fast.config.model import TracingPolicy
from agw_fast.config.validate import (
    Obj,
    as_str,
    as_str_map,
    check_header_name,
    check_header_value,
    choice,
    join,
    join_host_port,
    split_host_port,
)
from agw_fast.errors import ConfigError

__all__ = ["TRACING_EXTRA_HINT", "parse_config_tracing", "parse_frontend_tracing"]

TRACING_EXTRA_HINT = "pip install 'agw-fast[tracing]'"
_PROTOCOLS = ("grpc", "http")
_SCHEMES = {"http": 80, "https": 443, "grpc": 4317}
DEFAULT_OTLP_PATH = "/v1/traces"


def parse_config_tracing(raw: object, path: str, env: Mapping[str, str]) -> TracingPolicy:
    """`config.tracing` (agentgateway's RawTracing)."""
    o = Obj(raw, path, "RawTracing")
    endpoint_var = _first_env(
        env, "OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    endpoint_text = env[endpoint_var] if endpoint_var else o.opt_str("otlpEndpoint")
    endpoint_path = f"${endpoint_var}" if endpoint_var else o.child("otlpEndpoint")
    if endpoint_var:
        o.get("otlpEndpoint")
    configured_path = o.opt_str("path")
    if not endpoint_text:
        raise ConfigError(
            path,
            "config.tracing requires otlpEndpoint or one of OTLP_ENDPOINT, "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, OTEL_EXPORTER_OTLP_ENDPOINT",
        )
    endpoint, url_path = _endpoint_url(endpoint_text, endpoint_path)
    headers = dict(as_str_map(o.get("headers") or {}, o.child("headers")))
    headers_var = _first_env(
        env, "OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"
    )
    if headers_var:
        headers.update(_env_headers(env[headers_var], f"${headers_var}"))
    protocol_var = _first_env(
        env, "OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol_raw = o.get("otlpProtocol")
    protocol = (
        _env_protocol(env[protocol_var], f"${protocol_var}")
        if protocol_var
        else "grpc"
        if protocol_raw is None
        else choice(protocol_raw, o.child("otlpProtocol"), _PROTOCOLS)
    )
    add: tuple[tuple[str, str], ...] = ()
    remove: frozenset[str] = frozenset()
    fields_raw = o.get("fields")
    if fields_raw is not None:
        f = Obj(fields_raw, o.child("fields"), "RawLoggingFields")
        add_raw = f.get("add")
        add = () if add_raw is None else tuple(as_str_map(add_raw, f.child("add")))
        remove = frozenset(as_str(v, p) for p, v in f.items("remove"))
        f.close()
    policy = TracingPolicy(
        path=path,
        endpoint=endpoint,
        protocol=cast(Literal["grpc", "http"], protocol),
        otlp_path=url_path or configured_path or DEFAULT_OTLP_PATH,
        headers=_checked_headers(headers, o.child("headers")),
        attributes=add,
        remove=remove,
        random_sampling=_sampling(o.get("randomSampling"), o.child("randomSampling")),
        client_sampling=_sampling(o.get("clientSampling"), o.child("clientSampling")),
    )
    o.close()
    require_sdk(path)
    return policy


def parse_frontend_tracing(raw: object, path: str) -> TracingPolicy:
    """`frontendPolicies.tracing` (agentgateway's TracingConfig): a `host:port` collector."""
    o = Obj(raw, path, "TracingConfig")
    host_text = o.req_str("host")
    host, port = split_host_port(host_text, o.child("host"), port_required=True)
    assert port is not None  # port_required
    authority = join_host_port(host, port)
    protocol_raw = o.get("protocol")
    protocol = "grpc" if protocol_raw is None else choice(
        protocol_raw, o.child("protocol"), _PROTOCOLS
    )
    attributes = o.get("attributes")
    resources = o.get("resources")
    policy = TracingPolicy(
        path=path,
        endpoint=f"http://{authority}",
        protocol=cast(Literal["grpc", "http"], protocol),
        otlp_path=o.opt_str("path") or DEFAULT_OTLP_PATH,
        attributes=() if attributes is None else tuple(
            as_str_map(attributes, o.child("attributes"))
        ),
        resources=() if resources is None else tuple(as_str_map(resources, o.child("resources"))),
        remove=frozenset(as_str(v, p) for p, v in o.items("remove")),
        random_sampling=_sampling(o.get("randomSampling"), o.child("randomSampling")),
        client_sampling=_sampling(o.get("clientSampling"), o.child("clientSampling")),
        filter=o.opt_str("filter"),
    )
    o.close()
    require_sdk(path)
    return policy


def require_sdk(path: str) -> None:
    """Refuse tracing when the OpenTelemetry SDK and OTLP exporters are not installed."""
    for module in (
        "opentelemetry.sdk",
        "opentelemetry.exporter.otlp.proto.grpc",
        "opentelemetry.exporter.otlp.proto.http",
    ):
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            raise ConfigError(
                path, f"tracing needs the OpenTelemetry SDK: {TRACING_EXTRA_HINT}"
            )


def _first_env(env: Mapping[str, str], *names: str) -> str | None:
    """The first of `names` set to something other than empty."""
    return next((name for name in names if env.get(name, "").strip()), None)


def _endpoint_url(text: str, path: str) -> tuple[str, str | None]:
    """("scheme://host:port", the URL's path or None): agentgateway's
    `normalize_tracing_endpoint` and `parse_deprecated_tracing_endpoint`."""
    if "://" not in text:
        text = "https://" + text  # agentgateway's `validate_uri`
    try:
        url = urlsplit(text)
        port = url.port
    except ValueError as error:
        raise ConfigError(path, f"invalid tracing endpoint {text!r}: {error}") from None
    scheme = url.scheme.lower()
    if scheme not in _SCHEMES:
        raise ConfigError(path, f"unsupported tracing endpoint scheme: {scheme}")
    host = url.hostname
    if not host:
        raise ConfigError(path, f"tracing endpoint {text} must include a host")
    if port is None:
        port = _SCHEMES[scheme]
    host_part = f"[{host}]" if ":" in host else host
    url_path = url.path + (f"?{url.query}" if url.query else "")
    # A gRPC endpoint is plaintext here as in agentgateway (only https adds TLS).
    base = f"{'https' if scheme == 'https' else 'http'}://{host_part}:{port}"
    return base, url_path if url_path not in ("", "/") else None


def _env_headers(text: str, path: str) -> dict[str, str]:
    """`k=v,k2=v2` or a JSON object, as agentgateway's `parse_otlp_headers`."""
    text = text.strip()
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError as error:
            raise ConfigError(path, f"invalid JSON: {error}") from None
        return dict(as_str_map(value, path))
    headers = {}
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ConfigError(path, "expected key=value format")
        headers[key.strip()] = value.strip()
    return headers


def _env_protocol(text: str, path: str) -> str:
    value = text.strip().strip('"').lower()
    if value == "grpc":
        return "grpc"
    if value in ("http", "http/protobuf"):
        return "http"
    if value == "http/json":
        raise ConfigError(path, "http/json is not supported; use grpc or http/protobuf")
    raise ConfigError(path, f"expected grpc or http/protobuf, got {text!r}")


def _checked_headers(headers: Mapping[str, str], path: str) -> tuple[tuple[str, str], ...]:
    return tuple(
        (
            check_header_name(name, join(path, name)).lower(),
            check_header_value(value, join(path, name), secret=True),
        )
        for name, value in headers.items()
    )


def _sampling(raw: object | None, path: str) -> str | None:
    """agentgateway's StringBoolFloat: a boolean, a number or a CEL expression, kept as CEL
    text (compiled, or read as a constant, by telemetry/tracing.py)."""
    if raw is None:
        return None
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        if not math.isfinite(raw):
            raise ConfigError(path, f"expected a number between 0 and 1, got {raw}")
        return repr(float(raw))
    return as_str(raw, path)
