"""Checking helpers for the config loader: one mapping at a time, each value with its path.

`Obj` wraps one config mapping. On entry it refuses unknown keys and keys agentgateway knows
but agw-fast does not implement (see schema_keys.py); while the loader reads, it records which
keys were consumed, and `close()` fails if an implemented key was left unread, so a key can
never be accepted and then silently dropped. Explicit `null` means "not set", as it does for
agentgateway's optional fields.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable

from agw_fast.config.durations import parse_duration
from agw_fast.config.model import HostBackend
from agw_fast.config.rust_regex import RustRegexError, UnsupportedRegex, translate
from agw_fast.config.schema_keys import SPECS
from agw_fast.errors import ConfigError

__all__ = [
    "Obj",
    "as_bool",
    "as_duration",
    "as_int",
    "as_list",
    "as_map",
    "as_str",
    "as_str_map",
    "check_authority",
    "check_header_name",
    "check_header_value",
    "check_hostname_pattern",
    "check_regex",
    "check_socket_addr",
    "check_url_path",
    "choice",
    "join",
    "kind",
    "not_supported",
    "parse_host_port",
    "join_host_port",
    "split_host_port",
]


def join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def not_supported(path: str, detail: str | None = None) -> ConfigError:
    suffix = f" ({detail})" if detail else ""
    return ConfigError(path, f"not supported: {path}{suffix}")


def kind(value: object) -> str:
    """The YAML-facing name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "list"
    if isinstance(value, dict):
        return "map"
    return type(value).__name__


def _wrong(path: str, expected: str, value: object) -> ConfigError:
    return ConfigError(path, f"expected {expected}, got {kind(value)}")


def as_str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _wrong(path, "a string", value)
    return value


def as_bool(value: object, path: str) -> bool:
    if not isinstance(value, bool):
        raise _wrong(path, "a boolean (true or false)", value)
    return value


def as_int(value: object, path: str, lo: int | None = None, hi: int | None = None) -> int:
    # bool is an int subclass in Python; `port: true` must not read as port 1.
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong(path, "an integer", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
        raise ConfigError(path, f"must be in {bounds}, got {value}")
    return value


def as_list(value: object, path: str) -> list[object]:
    if not isinstance(value, list):
        raise _wrong(path, "a list", value)
    return value


def as_map(value: object, path: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise _wrong(path, "a map", value)
    for key in value:
        if not isinstance(key, str):
            raise ConfigError(path, f"expected string keys, got {kind(key)} key {key!r}")
    return value


def as_str_map(value: object, path: str) -> list[tuple[str, str]]:
    """A map of string to string, in file order."""
    return [(k, as_str(v, join(path, k))) for k, v in as_map(value, path).items()]


def as_duration(value: object, path: str) -> float:
    if not isinstance(value, str):
        raise _wrong(path, 'a duration string such as "10s"', value)
    return parse_duration(value, path)


def choice(value: object, path: str, allowed: Iterable[str]) -> str:
    text = as_str(value, path)
    options = list(allowed)
    if text not in options:
        listed = ", ".join(f'"{o}"' for o in options)
        raise ConfigError(path, f'expected one of {listed}, got "{text}"')
    return text


class Obj:
    """One mapping of the config, checked against its schema object's key lists."""

    __slots__ = ("_data", "_taken", "path")

    def __init__(self, raw: object, path: str, spec: str) -> None:
        data = as_map(raw, path)
        keys = SPECS[spec]
        for key, value in data.items():
            if key in keys.implemented:
                continue
            child = join(path, key)
            if key in keys.unsupported:
                if value is None:
                    continue  # explicitly unset: nothing to refuse
                raise not_supported(child)
            expected = ", ".join(sorted(keys.implemented))
            raise ConfigError(child, f'unknown field "{key}" (expected one of: {expected})')
        self.path = path
        self._data = {k: v for k, v in data.items() if k in keys.implemented and v is not None}
        self._taken: set[str] = set()

    def child(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self._data

    def keys(self) -> list[str]:
        return list(self._data)

    def get(self, key: str) -> object | None:
        self._taken.add(key)
        return self._data.get(key)

    def require(self, key: str) -> object:
        self._taken.add(key)
        if key not in self._data:
            raise ConfigError(self.child(key), f'missing required field "{key}"')
        return self._data[key]

    def opt_str(self, key: str) -> str | None:
        value = self.get(key)
        return None if value is None else as_str(value, self.child(key))

    def req_str(self, key: str) -> str:
        return as_str(self.require(key), self.child(key))

    def opt_bool(self, key: str) -> bool | None:
        value = self.get(key)
        return None if value is None else as_bool(value, self.child(key))

    def opt_int(self, key: str, lo: int | None = None, hi: int | None = None) -> int | None:
        value = self.get(key)
        return None if value is None else as_int(value, self.child(key), lo, hi)

    def opt_duration(self, key: str) -> float | None:
        value = self.get(key)
        return None if value is None else as_duration(value, self.child(key))

    def items(self, key: str) -> list[tuple[str, object]]:
        """(path, item) for each element of a list field; empty when absent."""
        value = self.get(key)
        if value is None:
            return []
        path = self.child(key)
        return [(f"{path}[{i}]", item) for i, item in enumerate(as_list(value, path))]

    def close(self) -> None:
        left = [k for k in self._data if k not in self._taken]
        if left:
            # A loader bug, not a user error, but failing beats ignoring the setting.
            raise ConfigError(self.child(left[0]), "internal error: field was not processed")


# RFC 9110 §5.6.2: a field name is a token.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
# RFC 9110 §5.5: no CTLs in a field value except HTAB (CR/LF would split the header).
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# DNS labels; `_` is allowed because container and service names often use it.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOSTNAME = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def check_header_name(value: object, path: str, *, allow_pseudo: bool = False) -> str:
    name = as_str(value, path)
    bare = name[1:] if allow_pseudo and name.startswith(":") else name
    if not _TOKEN.match(bare):
        raise ConfigError(path, f"invalid header name {name!r}")
    return name


def check_header_value(value: object, path: str, *, secret: bool = False) -> str:
    text = as_str(value, path)
    if _BAD_VALUE_CHAR.search(text):
        shown = "value" if secret else repr(text)
        raise ConfigError(path, f"invalid header {shown}: control characters (CR, LF, ...)")
    return text


def _is_hostname(host: str) -> bool:
    return len(host) <= 253 and _HOSTNAME.match(host) is not None


def check_hostname_pattern(value: object, path: str) -> str:
    """An exact hostname or `*.suffix`, lowercased (DNS names are case-insensitive)."""
    text = as_str(value, path)
    bare = text[2:] if text.startswith("*.") else text
    if not _is_hostname(bare):
        raise ConfigError(path, f'invalid hostname {text!r} (expected "name" or "*.suffix")')
    return text.lower()


def check_regex(value: object, path: str) -> str:
    """A pattern in Rust's `regex` syntax, as agentgateway compiles it (see rust_regex.py)."""
    text = as_str(value, path)
    try:
        translate(text)
    except RustRegexError as exc:
        raise ConfigError(path, f"invalid regex {text!r}: {exc}") from None
    except UnsupportedRegex as exc:
        raise not_supported(path, f"regex {text!r}: {exc}") from None
    return text


def check_url_path(value: object, path: str) -> str:
    text = as_str(value, path)
    if not text.startswith("/"):
        raise ConfigError(path, f'invalid path {text!r}: must start with "/"')
    if re.search(r"[\x00-\x20\x7f]", text):
        raise ConfigError(path, f"invalid path {text!r}: spaces and control characters")
    return text


def join_host_port(host: str, port: int) -> str:
    """`host:port`, an IPv6 literal in brackets (the inverse of `split_host_port`)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def split_host_port(
    text: str, path: str, *, port_required: bool, min_port: int = 1
) -> tuple[str, int | None]:
    """`host[:port]` with `[v6]` brackets; the host is returned without brackets."""
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ConfigError(path, f"invalid address {text!r}: missing ']'")
        host, rest = text[1:end], text[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ConfigError(path, f"invalid IPv6 address {host!r}") from None
        if rest and not rest.startswith(":"):
            raise ConfigError(path, f"invalid address {text!r}")
        port_text = rest[1:] if rest else None
    else:
        if text.count(":") > 1:
            raise ConfigError(path, f"invalid address {text!r}: put IPv6 in brackets, [::1]:80")
        host, sep, port_part = text.partition(":")
        port_text = port_part if sep else None
        if not _is_hostname(host):
            raise ConfigError(path, f"invalid host {host!r} in {text!r}")
    if port_text is None:
        if port_required:
            raise ConfigError(path, f"port is required (expected host:port, got {text!r})")
        return host, None
    if not port_text.isascii() or not port_text.isdigit() or not (
        min_port <= int(port_text) <= 65535
    ):
        raise ConfigError(path, f"invalid port {port_text!r} in {text!r}")
    return host, int(port_text)


def parse_host_port(value: object, path: str) -> HostBackend:
    """A backend target `host:port` (port required)."""
    text = as_str(value, path)
    if text.startswith("unix:"):
        raise not_supported(path, "unix socket targets")
    host, port = split_host_port(text, path, port_required=True)
    assert port is not None
    return HostBackend(host, port)


def check_authority(value: object, path: str) -> str:
    """`host[:port]` as written, for authority rewrites and redirects."""
    text = as_str(value, path)
    split_host_port(text, path, port_required=False)
    return text


def check_socket_addr(value: object, path: str) -> str | None:
    """A listening address: "ip:port", "[v6]:port", "localhost:port"; "off" gives None."""
    text = as_str(value, path)
    if text == "off":
        return None
    if text.startswith("unix:"):
        raise not_supported(path, "unix socket addresses")
    host, _port = split_host_port(text, path, port_required=True, min_port=0)
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise ConfigError(
                path, f'invalid address {text!r}: expected "ip:port", "localhost:port" or "off"'
            ) from None
    return text
