"""YAML reading with the plain-scalar typing agentgateway's parser (serde_yaml) applies.

PyYAML implements YAML 1.1, where `on`, `off`, `yes`, `no`, `y` and `n` are booleans, `1:30`
is a sexagesimal int, `0755` is octal and `2024-01-01` a date. agentgateway parses with
serde_yaml, which follows the YAML 1.2 core schema: only `true`/`false` (three casings) are
booleans, and the rest stay strings. An `off` header value or a `no` hostname must therefore
reach validation as the string the user wrote.

Integers follow the core schema (decimal, `0o` octal, `0x` hex) with one serde_yaml refinement:
digits with a leading zero (`0755`, `-012`) are strings, not numbers. Duplicate mapping keys
are an error (serde_yaml rejects them too). `<<` merge keys are not a 1.2 feature: they stay
ordinary keys and so fail as unknown fields.

JSON is read by the same entry point: agentgateway accepts JSON files, and a JSON text means
the same under YAML 1.2. PyYAML cannot scan tab-indented JSON, so text that looks like JSON is
tried with the json module first.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Hashable
from typing import Any, NoReturn

import yaml
from yaml.constructor import ConstructorError
from yaml.nodes import MappingNode, ScalarNode

from agw_fast.errors import ConfigError

__all__ = ["Yaml12Loader", "parse_yaml"]

_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")
_NULL = re.compile(r"^(?:~|null|Null|NULL|)$")
_INT = re.compile(r"^(?:[-+]?(?:0|[1-9][0-9]*)|0o[0-7]+|0x[0-9a-fA-F]+)$")
# A float needs a dot or an exponent, so that leading-zero digit runs stay strings.
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+\.[0-9]*)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?[0-9]+[eE][-+]?[0-9]+"
    r"|[-+]?\.(?:inf|Inf|INF)"
    r"|\.(?:nan|NaN|NAN))$"
)

_TAG_NULL = "tag:yaml.org,2002:null"
_TAG_BOOL = "tag:yaml.org,2002:bool"
_TAG_INT = "tag:yaml.org,2002:int"
_TAG_FLOAT = "tag:yaml.org,2002:float"
_TAG_MAP = "tag:yaml.org,2002:map"


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 core-schema scalars and duplicate-key detection."""

    # A fresh table: none of PyYAML's 1.1 resolvers (bool, int, float, timestamp, merge,
    # value) are inherited.
    yaml_implicit_resolvers: dict[Any, Any] = {}

    def construct_mapping(self, node: MappingNode, deep: bool = False) -> dict[Hashable, Any]:
        if not isinstance(node, MappingNode):
            raise ConstructorError(
                None, None, f"expected a mapping node, but found {node.id}", node.start_mark
            )
        mapping: dict[Hashable, Any] = {}
        for key_node, value_node in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    "found an unhashable key",
                    key_node.start_mark,
                )
            if key in mapping:
                raise ConstructorError(
                    "while constructing a mapping",
                    node.start_mark,
                    f"found duplicate key {_show(key)}",
                    key_node.start_mark,
                )
            mapping[key] = self.construct_object(value_node, deep=deep)
        return mapping


def _show(key: object) -> str:
    return json.dumps(key) if isinstance(key, str) else repr(key)


def _scalar(loader: Yaml12Loader, node: ScalarNode) -> str:
    return loader.construct_scalar(node)


def _reject(node: ScalarNode, what: str) -> NoReturn:
    raise ConstructorError(None, None, f"invalid {what} {node.value!r}", node.start_mark)


def _construct_bool(loader: Yaml12Loader, node: ScalarNode) -> bool:
    # Also reached by an explicit `!!bool`: 1.1 spellings such as `yes` are refused there too.
    value = _scalar(loader, node)
    if not _BOOL.match(value):
        _reject(node, "boolean")
    return value.lower() == "true"


def _construct_int(loader: Yaml12Loader, node: ScalarNode) -> int:
    value = _scalar(loader, node)
    if value.startswith("0o"):
        digits, base = value[2:], 8
    elif value.startswith("0x"):
        digits, base = value[2:], 16
    else:
        digits, base = value, 10
    try:
        return int(digits, base)
    except ValueError:
        _reject(node, "integer")


def _construct_float(loader: Yaml12Loader, node: ScalarNode) -> float:
    value = _scalar(loader, node)
    lowered = value.lower()
    if lowered in (".inf", "+.inf"):
        return math.inf
    if lowered == "-.inf":
        return -math.inf
    if lowered == ".nan":
        return math.nan
    try:
        return float(value)
    except ValueError:
        _reject(node, "float")


def _construct_null(loader: Yaml12Loader, node: ScalarNode) -> None:
    return None


Yaml12Loader.add_implicit_resolver(_TAG_BOOL, _BOOL, list("tTfF"))
Yaml12Loader.add_implicit_resolver(_TAG_NULL, _NULL, ["~", "n", "N", ""])
Yaml12Loader.add_implicit_resolver(_TAG_INT, _INT, list("-+0123456789"))
Yaml12Loader.add_implicit_resolver(_TAG_FLOAT, _FLOAT, list("-+.0123456789"))
Yaml12Loader.add_constructor(_TAG_BOOL, _construct_bool)
Yaml12Loader.add_constructor(_TAG_INT, _construct_int)
Yaml12Loader.add_constructor(_TAG_FLOAT, _construct_float)
Yaml12Loader.add_constructor(_TAG_NULL, _construct_null)


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _json_constant(name: str) -> NoReturn:
    # NaN and Infinity are a Python extension, not JSON.
    raise json.JSONDecodeError(f"invalid literal {name}", name, 0)


def _parse_json(text: str) -> object:
    return json.loads(text, object_pairs_hook=_json_object, parse_constant=_json_constant)


def _yaml_error(exc: yaml.YAMLError) -> ConfigError:
    if isinstance(exc, yaml.MarkedYAMLError) and exc.problem_mark is not None:
        mark = exc.problem_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}"
        detail = exc.problem or "syntax error"
        if exc.context:
            detail = f"{detail} ({exc.context})"
        return ConfigError("", f"invalid YAML at {where}: {detail}")
    first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return ConfigError("", f"invalid YAML: {first_line}")


def parse_yaml(text: str) -> object:
    """Parse one YAML (or JSON) document; None for an empty document.

    Raises ConfigError with the line and column of a syntax error.
    """
    json_error: json.JSONDecodeError | None = None
    if text.lstrip("\ufeff \t\r\n").startswith(("{", "[")):
        try:
            return _parse_json(text.lstrip("\ufeff"))
        except json.JSONDecodeError as exc:
            json_error = exc  # may still be flow-style YAML such as `{a: 1}`
        except _DuplicateKey as exc:
            raise ConfigError("", f"invalid JSON: found duplicate key {_show(exc.key)}") from None
        except RecursionError:
            raise ConfigError("", "invalid JSON: nesting too deep") from None
    try:
        # Yaml12Loader derives from SafeLoader: no arbitrary Python objects.
        return yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as exc:
        if json_error is not None:
            # It looked like JSON; the JSON diagnosis is the more useful one.
            raise ConfigError(
                "",
                f"invalid JSON at line {json_error.lineno}, column {json_error.colno}: "
                f"{json_error.msg}",
            ) from None
        raise _yaml_error(exc) from None
    except RecursionError:
        raise ConfigError("", "invalid YAML: nesting too deep") from None
