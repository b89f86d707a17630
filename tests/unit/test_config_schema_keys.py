"""Cross-check the hard-coded key lists against agentgateway's JSON schema.

Every key the schema allows on an object must be either implemented or refused as "not
supported"; anything else would be rejected as an unknown field, which is wrong for a valid
agentgateway config, or (worse) pass unnoticed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agw_fast.config import load as load_module
from agw_fast.config.load_policies import ROUTE_TYPES
from agw_fast.config.schema_keys import SPECS

# A copy of agentgateway's published config schema (schema/config.json upstream), kept in the
# repo so these checks run in every clone; refresh it when following a newer agentgateway.
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "data" / "agentgateway-config.schema.json"


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return data


def _deref(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref is None:
        return node
    target: dict[str, Any] = schema["$defs"][ref.rsplit("/", 1)[-1]]
    return target


def _variants(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The node and every object reachable through $ref and oneOf/anyOf/allOf."""
    node = _deref(schema, node)
    found = [node]
    for combinator in ("oneOf", "anyOf", "allOf"):
        for sub in node.get(combinator, []):
            found += _variants(schema, sub)
    return found


def _keys(schema: dict[str, Any], node: dict[str, Any]) -> set[str]:
    return {key for v in _variants(schema, node) for key in v.get("properties", {})}


def _node(schema: dict[str, Any], name: str) -> dict[str, Any]:
    if name == "Root":
        return schema
    if "/" in name:
        base, prop = name.split("/")
        holders = [
            v for v in _variants(schema, schema["$defs"][base]) if prop in v.get("properties", {})
        ]
        return {"anyOf": [h["properties"][prop] for h in holders]}
    node: dict[str, Any] = schema["$defs"][name]
    return node


@pytest.mark.parametrize("name", sorted(SPECS))
def test_key_lists_cover_the_schema_exactly(schema: dict[str, Any], name: str) -> None:
    spec = SPECS[name]
    assert not spec.implemented & spec.unsupported
    assert spec.implemented | spec.unsupported == _keys(schema, _node(schema, name))


def _enum(schema: dict[str, Any], name: str) -> list[str]:
    node = schema["$defs"][name]
    if "enum" in node:
        return list(node["enum"])
    return [v["const"] for v in node["oneOf"]]


def test_route_types_match_the_schema(schema: dict[str, Any]) -> None:
    assert list(ROUTE_TYPES) == _enum(schema, "RouteType")


def test_protocol_enums_match_the_schema(schema: dict[str, Any]) -> None:
    assert list(load_module._TUNNEL_PROTOCOLS) == _enum(schema, "TunnelProtocol")
    assert list(load_module._LISTENER_PROTOCOLS) == _enum(schema, "LocalListenerProtocol")
    assert _enum(schema, "BindMode") == ["standard", "internal"]
    assert _enum(schema, "LoggingFormat") == ["text", "json"]


def test_every_key_list_is_used_by_the_loader() -> None:
    # A stale entry would mean some object is no longer checked the way the table says.
    package = Path(load_module.__file__).parent
    source = "".join(f.read_text() for f in sorted(package.glob("load*.py")))
    unused = [name for name in SPECS if f'"{name}"' not in source]
    assert not unused
