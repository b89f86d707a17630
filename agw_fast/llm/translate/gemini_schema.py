"""JSON Schema -> the subset Gemini accepts in `responseSchema` and function `parameters`.

Gemini's Schema object is an OpenAPI 3.0 subset: no `$ref`, `allOf`, `const`, type arrays or
`additionalProperties`. agentgateway (after litellm's `_build_vertex_schema`) rewrites a client's
schema into that subset rather than letting Google answer 400; this module applies the same
rules so a request translated here reaches Gemini in the same shape:

1. `$defs`/`definitions` are inlined at each `$ref` (keys beside the `$ref` win); a reference
   already being expanded is left in place, since Gemini cannot express recursion.
2. Per node, until nothing changes: `allOf` members merge into the node (properties and
   required are unioned, other keys first-wins); `const` becomes a one-value `enum` typed by
   the value; a `type` list becomes `nullable` plus one type or an `anyOf`; an `anyOf` with a
   null member or a single member collapses into the node.
3. Arrays get `items` (an object) if missing; `enum` stays on strings only (a typeless enum
   becomes a string); a node with no type, union or enum is an object; `format` other than
   `enum`/`date-time` is dropped; then every key outside the allowed set is dropped.

The input is never modified (it is the client's parsed request).
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["normalize_schema"]

_ALLOWED_FIELDS = frozenset(
    (
        "type",
        "format",
        "description",
        "title",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "anyOf",
        "default",
        "minLength",
        "maxLength",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "propertyOrdering",
    )
)
_KEPT_FORMATS = ("enum", "date-time")
# A safety net only: each structural pass removes a keyword, so real schemas settle in a few.
_MAX_STRUCTURAL_PASSES = 64


def normalize_schema(schema: object) -> object:
    """A normalized copy of `schema` (any JSON value; non-objects pass through copied)."""
    out = _copy(schema)
    defs: dict[str, object] = {}
    if type(out) is dict:
        for key in ("$defs", "definitions"):
            found = out.pop(key, None)
            if type(found) is dict:
                defs.update(found)
    out = _inline_refs(out, defs, [])
    _clean(out)
    return out


def _copy(value: object) -> object:
    # JSON values only (dict/list/scalars): cheaper than copy.deepcopy's memo bookkeeping.
    if type(value) is dict:
        return {k: _copy(v) for k, v in value.items()}
    if type(value) is list:
        return [_copy(v) for v in value]
    return value


def _children(node: dict[str, object], visit: Callable[[object], object]) -> None:
    """Replace each direct child schema (`items`, property values, `anyOf`/`allOf` members)
    with `visit(child)`."""
    if "items" in node:
        node["items"] = visit(node["items"])
    props = node.get("properties")
    if type(props) is dict:
        for name, value in props.items():
            props[name] = visit(value)
    for key in ("anyOf", "allOf"):
        members = node.get(key)
        if type(members) is list:
            members[:] = [visit(m) for m in members]


def _inline_refs(node: object, defs: dict[str, object], chain: list[str]) -> object:
    if type(node) is dict:
        ref = node.get("$ref")
        if type(ref) is str:
            name = ref.rsplit("/", 1)[-1]
            if name in chain or name not in defs:
                return node  # recursion or an unknown target: leave the $ref as it is
            resolved = _copy(defs[name])
            if type(resolved) is dict:
                for key, value in node.items():
                    if key != "$ref":
                        resolved[key] = value
            chain.append(name)
            resolved = _inline_refs(resolved, defs, chain)
            chain.pop()
            return resolved
        node.pop("$defs", None)
        node.pop("definitions", None)
        _children(node, lambda child: _inline_refs(child, defs, chain))
        return node
    if type(node) is list:
        return [_inline_refs(v, defs, chain) for v in node]
    return node


def _const_type(value: object) -> str:
    if type(value) is str:
        return "string"
    if type(value) is bool:
        return "boolean"
    if type(value) is float:
        return "number"
    if type(value) is int:
        return "integer"
    if type(value) is list:
        return "array"
    return "object"


def _is_null_member(member: object) -> bool:
    return type(member) is dict and member.get("type") == "null"


def _rewrite_structural(node: dict[str, object]) -> bool:
    changed = False
    if "allOf" in node:
        members = node.pop("allOf")
        if type(members) is list:
            changed = True
            for member in members:
                if type(member) is not dict:
                    continue
                for key, value in member.items():
                    if key == "properties" and type(value) is dict:
                        dst = node.setdefault("properties", {})
                        if type(dst) is dict:
                            for name, prop in value.items():
                                dst.setdefault(name, prop)
                    elif key == "required" and type(value) is list:
                        req = node.setdefault("required", [])
                        if type(req) is list:
                            for item in value:
                                if item not in req:
                                    req.append(item)
                    else:
                        node.setdefault(key, value)
    if "const" in node:
        changed = True
        const = node.pop("const")
        node["enum"] = [const]
        node.setdefault("type", _const_type(const))
    types = node.get("type")
    if type(types) is list:
        changed = True
        names = [t for t in types if type(t) is str]
        non_null = [t for t in names if t != "null"]
        del node["type"]
        if len(non_null) != len(names):
            node["nullable"] = True
        if len(non_null) == 1:
            node["type"] = non_null[0]
        elif non_null:
            node["anyOf"] = [{"type": t} for t in non_null]
    members = node.get("anyOf")
    if type(members) is list and (len(members) == 1 or any(map(_is_null_member, members))):
        changed = True
        del node["anyOf"]
        kept = [m for m in members if not _is_null_member(m)]
        if len(kept) != len(members):
            node["nullable"] = True
        if len(kept) == 1:
            only = kept[0]
            if type(only) is dict:
                for key, value in only.items():
                    node.setdefault(key, value)
        elif kept:
            node["anyOf"] = kept
    return changed


def _clean(node: object) -> object:
    if type(node) is list:
        for item in node:
            _clean(item)
        return node
    if type(node) is not dict:
        return node
    passes = 0
    while _rewrite_structural(node) and passes < _MAX_STRUCTURAL_PASSES:
        passes += 1
    kind = node.get("type")
    if kind == "array" and "items" not in node:
        node["items"] = {"type": "object"}
    if "enum" in node:
        if type(kind) is str:
            if kind != "string":
                del node["enum"]
        else:
            node["type"] = "string"
    node.pop("additionalProperties", None)
    if "type" not in node and "anyOf" not in node and "enum" not in node:
        node["type"] = "object"
    fmt = node.get("format")
    if type(fmt) is str and fmt not in _KEPT_FORMATS:
        del node["format"]
    _children(node, _clean)
    for key in [k for k in node if k not in _ALLOWED_FIELDS]:
        del node[key]
    return node
