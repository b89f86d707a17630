"""The shared-limits file (`agw-fast --limits FILE`): limits and budgets counted in Redis.

This is agw-fast's own extension, not part of agentgateway's schema: it lives in a file of its
own so that a gateway config stays exactly what agentgateway reads. Without `--limits` every
limit is local, as in agentgateway. The file (YAML or JSON, `$VAR` expanded as in the config):

    redis:
      url: redis://redis:6379/0        # rediss:// for TLS; required
      username: ""                     # ACL user (or in the URL)
      password: $REDIS_PASSWORD        # or in the URL
      caCert: /etc/redis-ca.pem        # rediss://: trust this CA instead of the system's
      insecureSkipVerify: false        # rediss://: do not check the server's certificate
      keyPrefix: "agw-fast:"           # every key agw-fast writes starts with it
      timeout: 250ms                   # one batch of updates, reply included
      connectTimeout: 1s
    failureMode: failClosed            # or failOpen; as remoteRateLimit's (see below)
    shareLocalRateLimits: true         # the routes' localRateLimit buckets count fleet-wide
    lease: {size: 64, credit: 4, idle: 2s, retry: 1s}
    budgets:
    - name: per-key                    # part of the Redis key: keep it stable
      key: apiKey.key                  # CEL; a request it gives no value for is not counted
      type: tokens                     # or requests (the default)
      maxTokens: 100000
      tokensPerFill: 100000
      fillInterval: 1h
      routes: [openai]                 # route names; default: every route

`failureMode` follows agentgateway's `remoteRateLimit`: when the store cannot be reached,
`failClosed` answers 500 `rate limit failed`, `failOpen` lets the request through.
The accuracy the leases give is documented in `agw_fast.policies.shared_limits`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from agw_fast.config.envsubst import expand_env
from agw_fast.config.validate import (
    as_bool,
    as_duration,
    as_int,
    as_list,
    as_map,
    as_str,
    choice,
    join,
)
from agw_fast.config.yaml12 import parse_yaml
from agw_fast.errors import ConfigError

__all__ = [
    "INSTALL_HINT",
    "Budget",
    "LeaseSettings",
    "RedisSettings",
    "SharedLimitsConfig",
    "load_limits",
    "load_limits_file",
]

INSTALL_HINT = "pip install 'agw-fast[redis]'"
_U64 = 2**64 - 1


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str
    username: str | None = None
    password: str | None = None
    ca_cert: str | None = None
    insecure_skip_verify: bool = False
    key_prefix: str = "agw-fast:"
    timeout: float = 0.25
    connect_timeout: float = 1.0


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """How far each worker runs ahead of Redis (see policies/shared_limits.py)."""

    size: int = 64  # requests a worker takes from a bucket at once, at most
    credit: int = 4  # requests / LLM calls a worker lets through before Redis confirms them
    idle: float = 2.0  # an unused lease goes back to its bucket after this long
    retry: float = 1.0  # seconds between attempts while Redis cannot be reached


@dataclass(frozen=True, slots=True)
class Budget:
    """One bucket per value of `key` (a CEL expression), shared by the fleet."""

    name: str
    key: str | None  # None: one bucket for everyone
    kind: str  # "requests" or "tokens"
    max_tokens: int
    tokens_per_fill: int
    fill_interval_ns: int
    routes: tuple[str, ...] | None  # route names; None: every route
    path: str = ""


@dataclass(frozen=True, slots=True)
class SharedLimitsConfig:
    redis: RedisSettings
    failure_mode: str = "failClosed"
    share_local_rate_limits: bool = False
    lease: LeaseSettings = LeaseSettings()
    budgets: tuple[Budget, ...] = ()
    source: str = ""  # the file, for messages


def _keys(raw: dict[str, object], path: str, allowed: tuple[str, ...]) -> None:
    for key in raw:
        if key not in allowed:
            listed = ", ".join(allowed)
            raise ConfigError(join(path, key), f"unknown field (expected one of: {listed})")


def _redis(raw: object, path: str, base_dir: Path) -> RedisSettings:
    o = as_map(raw, path)
    _keys(o, path, ("url", "username", "password", "caCert", "insecureSkipVerify",
                    "keyPrefix", "timeout", "connectTimeout"))  # fmt: skip
    if "url" not in o:
        raise ConfigError(join(path, "url"), "required (redis://host:port/db or rediss://...)")
    url = as_str(o["url"], join(path, "url"))
    scheme = urlsplit(url).scheme
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(join(path, "url"), f"expected a redis://, rediss:// or unix:// URL, "
                          f"got {url!r}")
    ca = None
    if "caCert" in o:
        ca_path = join(path, "caCert")
        ca_file = (base_dir / as_str(o["caCert"], ca_path)).resolve()
        if not ca_file.is_file():
            raise ConfigError(ca_path, f"file not found: {ca_file}")
        ca = str(ca_file)
    settings = RedisSettings(
        url=url,
        username=as_str(o["username"], join(path, "username")) if "username" in o else None,
        password=as_str(o["password"], join(path, "password")) if "password" in o else None,
        ca_cert=ca,
        insecure_skip_verify=as_bool(
            o.get("insecureSkipVerify", False), join(path, "insecureSkipVerify")
        ),
        key_prefix=as_str(o.get("keyPrefix", "agw-fast:"), join(path, "keyPrefix")),
        timeout=as_duration(o.get("timeout", "250ms"), join(path, "timeout")),
        connect_timeout=as_duration(o.get("connectTimeout", "1s"), join(path, "connectTimeout")),
    )
    for field, value in (("timeout", settings.timeout),
                         ("connectTimeout", settings.connect_timeout)):  # fmt: skip
        if value <= 0:
            raise ConfigError(join(path, field), "must be greater than 0")
    if (ca is not None or settings.insecure_skip_verify) and scheme != "rediss":
        raise ConfigError(join(path, "url"), "caCert and insecureSkipVerify need rediss://")
    return settings


def _lease(raw: object, path: str) -> LeaseSettings:
    o = as_map(raw, path)
    _keys(o, path, ("size", "credit", "idle", "retry"))
    lease = LeaseSettings(
        size=as_int(o.get("size", 64), join(path, "size"), 1, 1_000_000),
        credit=as_int(o.get("credit", 4), join(path, "credit"), 0, 1_000_000),
        idle=as_duration(o.get("idle", "2s"), join(path, "idle")),
        retry=as_duration(o.get("retry", "1s"), join(path, "retry")),
    )
    if lease.idle <= 0 or lease.retry <= 0:
        raise ConfigError(path, "idle and retry must be greater than 0")
    return lease


def _budget(raw: object, path: str, names: set[str]) -> Budget:
    o = as_map(raw, path)
    _keys(o, path, ("name", "key", "type", "maxTokens", "tokensPerFill", "fillInterval",
                    "routes"))  # fmt: skip
    for required in ("name", "maxTokens", "fillInterval"):
        if required not in o:
            raise ConfigError(join(path, required), "required")
    name = as_str(o["name"], join(path, "name"))
    if not name or any(c.isspace() or c == ":" for c in name):
        raise ConfigError(join(path, "name"), "expected a non-empty name without spaces or ':'")
    if name in names:
        raise ConfigError(join(path, "name"), f"duplicate budget name {name!r}")
    names.add(name)
    key = as_str(o["key"], join(path, "key")) if "key" in o else None
    max_tokens = as_int(o["maxTokens"], join(path, "maxTokens"), 0, _U64)
    per_fill = as_int(o.get("tokensPerFill", max_tokens), join(path, "tokensPerFill"), 0, _U64)
    if max_tokens < per_fill:
        raise ConfigError(path, "maxTokens cannot be less than tokensPerFill")
    interval = as_duration(o["fillInterval"], join(path, "fillInterval"))
    fill_ns = round(interval * 1e9)
    if fill_ns < 1_000_000:
        raise ConfigError(join(path, "fillInterval"), "must be at least 1ms")
    routes = None
    if "routes" in o:
        routes_path = join(path, "routes")
        routes = tuple(
            as_str(item, f"{routes_path}[{i}]")
            for i, item in enumerate(as_list(o["routes"], routes_path))
        )
    return Budget(
        name=name,
        key=key,
        kind=choice(o.get("type", "requests"), join(path, "type"), ("requests", "tokens")),
        max_tokens=max_tokens,
        tokens_per_fill=per_fill,
        fill_interval_ns=fill_ns,
        routes=routes,
        path=path,
    )


def load_limits(
    text: str, env: Mapping[str, str], base_dir: Path, source: str = "limits"
) -> SharedLimitsConfig:
    """Parse the limits file's text; ConfigError (path prefixed by `source`) when invalid or
    when the `redis` package is missing."""
    raw = parse_yaml(expand_env(text, env))
    o = as_map(raw, source)
    _keys(o, source, ("redis", "failureMode", "shareLocalRateLimits", "lease", "budgets"))
    if "redis" not in o:
        raise ConfigError(join(source, "redis"), "required (at least `url`)")
    names: set[str] = set()
    budgets_path = join(source, "budgets")
    config = SharedLimitsConfig(
        redis=_redis(o["redis"], join(source, "redis"), base_dir),
        failure_mode=choice(
            o.get("failureMode", "failClosed"), join(source, "failureMode"),
            ("failClosed", "failOpen"),
        ),
        share_local_rate_limits=as_bool(
            o.get("shareLocalRateLimits", False), join(source, "shareLocalRateLimits")
        ),
        lease=_lease(o.get("lease", {}), join(source, "lease")),
        budgets=tuple(
            _budget(item, f"{budgets_path}[{i}]", names)
            for i, item in enumerate(as_list(o.get("budgets", []), budgets_path))
        ),
        source=source,
    )
    if not config.budgets and not config.share_local_rate_limits:
        raise ConfigError(source, "nothing to share: set shareLocalRateLimits or budgets")
    if importlib.util.find_spec("redis") is None:
        raise ConfigError(
            join(source, "redis"), f"shared limits need the redis package: {INSTALL_HINT}"
        )
    return config


def load_limits_file(path: Path, env: Mapping[str, str]) -> SharedLimitsConfig:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError("", f"cannot read {path}: {error.strerror}") from None
    return load_limits(text, env, path.parent, str(path))
