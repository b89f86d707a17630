"""CEL expressions: compiled once at load, evaluated against a per-request set of variables.

The engine is `cel-expr-python` (Google's C++ CEL runtime): compiling a typical rule costs
~60 us, evaluating it ~6 us. It is a large binary, so it is the optional extra `cel`; a
config with a CEL expression is refused at load when it is missing.

Variables follow agentgateway's names (crates/agentgateway/src/cel/types.rs `Executor`):
`request`, `source`, `jwt`, `apiKey`, `basicAuth`, each a map; access-log expressions
(`LOG_VARIABLES`) also have `response` and `llm`, a retry `condition` (`RETRY_VARIABLES`)
`response`. Any other variable (`llmRequest`, `mcp`,
...) is an undeclared reference, so an expression using it fails to compile: at load, never
at request time. The same holds for functions:
the CEL standard library, the cel-go `strings`, `math` and optional extensions
(`m[?"k"].orValue(d)`), and the agentgateway extensions listed in `FUNCTIONS` are
declared; any other call fails to compile, and the agentgateway extensions agw-fast lacks
get a message saying so (`REFUSED_FUNCTIONS`).
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from typing import Any

__all__ = [
    "CEL_EXTRA_HINT",
    "FUNCTIONS",
    "HEALTH_VARIABLES",
    "LLM_VARIABLES",
    "LOG_VARIABLES",
    "REFUSED_FUNCTIONS",
    "RETRY_VARIABLES",
    "VARIABLES",
    "CelCompileError",
    "CelProgram",
    "EvaluationError",
    "FLATTEN_MARKERS",
    "Activation",
    "activation",
    "available",
    "compile_expression",
]

CEL_EXTRA_HINT = "pip install 'agw-fast[cel]'"

# agentgateway's top-level variables agw-fast fills (all maps; see policies/cel_context.py).
VARIABLES = ("request", "source", "jwt", "apiKey", "basicAuth")
# At log time (access log `filter`/`add`) agentgateway also has the response and the LLM call.
LOG_VARIABLES = (*VARIABLES, "response", "llm")
# A retry `condition` also reads the upstream's response (httpproxy.rs `should_retry`).
RETRY_VARIABLES = (*VARIABLES, "response")
# The `llm:` form's model transformations and conditional targets read the parsed body.
LLM_VARIABLES = (*VARIABLES, "llmRequest")
# A `health.unhealthyExpression` reads the response (status and headers).
HEALTH_VARIABLES = (*VARIABLES, "response")

# The agentgateway extensions (crates/celx) declared here, beyond CEL's standard library
# and the cel-go strings/math extensions.
FUNCTIONS = (
    "random", "uuid", "json", "stripPrefix", "stripSuffix", "cidr", "containsIP", "isIP",
    "base64Encode", "base64Decode", "base64.encode", "base64.decode",
)  # fmt: skip

# agentgateway extensions agw-fast does not have. `coalesce` evaluates its arguments lazily
# (a missing key picks the next), which functions of this engine cannot do; `default(a.b, f)`
# is rewritten at compile time into the optional form that means the same
# (`a.?b.orValue(f)`, see `_rewrite_default`).
REFUSED_FUNCTIONS = frozenset(
    {
        "coalesce", "regexReplace", "fail", "jsonField", "unvalidatedJwtPayload",
        "toJson", "to_json", "with", "mapValues", "filterKeys", "merge", "variables", "ip",
        "containsCIDR", "url.encode", "url.decode", "form.encode", "form.decode",
        "sha1.encode", "sha256.encode", "md5.encode", "flatten", "flattenRecursive",
    }
)  # fmt: skip

try:
    from cel_expr_python import cel as _cel
    from cel_expr_python.ext import ext_math, ext_optional, ext_strings
except ImportError:  # the optional extra is not installed
    _cel = None


# The engine's variable bindings for one request, converted once and shared by every rule.
Activation = Any


def activation(
    variables: Mapping[str, object], declared: tuple[str, ...] = VARIABLES
) -> Activation:
    """Convert one request's variables for the engine (about 4 us for a request map), so
    several expressions evaluated against them pay for the conversion once. `declared` is
    the variable set the expressions were compiled with."""
    return _environment(declared).Activation(variables)


def available() -> bool:
    """Whether the CEL engine (the `cel` extra) is installed."""
    return _cel is not None


class CelCompileError(Exception):
    """An expression that does not compile; `str()` is one line."""


class CelProgram:
    """One compiled expression and the variables it reads (only those are built per request)."""

    __slots__ = ("text", "uses", "_program")

    def __init__(self, text: str, program: Any, uses: frozenset[str]) -> None:
        self.text = text
        self.uses = uses
        self._program = program

    def evaluate(self, bound: Activation) -> object:
        """The expression's value, or an `EvaluationError` (never raises for a bad request)."""
        value = self._program.eval(activation=bound)
        if value.type() == _cel.Type.ERROR:
            return EvaluationError(str(value.value()))
        return value.plain_value()

    def evaluate_bool(self, bound: Activation) -> bool:
        """True only when the expression yields the boolean true: an error (a missing header,
        a failed conversion) or another type is false, as agentgateway's `eval_bool`."""
        value = self._program.eval(activation=bound)
        return value.type() == _cel.Type.BOOL and value.value() is True


class EvaluationError:
    """A failed evaluation (CEL's error value), e.g. a key not in a map."""

    __slots__ = ("message",)

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return f"EvaluationError({self.message!r})"


def compile_expression(
    text: str, variables: tuple[str, ...] = VARIABLES, *, flatten: bool = False
) -> CelProgram:
    """Compile `text` with `variables` declared (`VARIABLES` or `LOG_VARIABLES`); raises
    `CelCompileError` with the engine's message (one line). `flatten`: also declare
    agentgateway's `flatten`/`flattenRecursive` (for callers that expand `FLATTEN_MARKERS`)."""
    if _cel is None:
        raise CelCompileError(f"CEL expressions need the `cel` extra: {CEL_EXTRA_HINT}")
    source = _lowercase_header_keys(text)
    if "default" in source:
        source = _rewrite_default(source)
    try:
        program = _environment(variables, flatten).compile(source)
    except RuntimeError as error:
        raise CelCompileError(_one_line(str(error))) from None
    return CelProgram(text, program, _variables_used(text, variables))


# `request.headers["X-Team"]`: agentgateway looks header names up case-insensitively (an
# http::HeaderMap); here they are map keys in lowercase, so a literal key is lowercased
# (`response.headers` alike).
_HEADER_KEY = re.compile(
    r"""(\b(?:request|response)\s*\.\s*headers\s*\[\s*)"""
    r"""("[A-Za-z0-9!#$%&'*+.^_`|~-]*"|'[A-Za-z0-9!#$%&*+.^_`|~-]*')"""
)


def _lowercase_header_keys(text: str) -> str:
    return _HEADER_KEY.sub(lambda m: m.group(1) + m.group(2).lower(), text)


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A selection path: a variable, then `.field` or `["key"]` steps.
_SELECTION = re.compile(
    r"""\s*([A-Za-z_][A-Za-z0-9_]*)((?:\s*\.\s*[A-Za-z_][A-Za-z0-9_]*"""
    r"""|\s*\[\s*(?:"[^"\\]*"|'[^'\\]*')\s*\])+)\s*$"""
)
_STEP = re.compile(r"""\.\s*([A-Za-z_][A-Za-z0-9_]*)|\[\s*("[^"\\]*"|'[^'\\]*')\s*\]""")


def _rewrite_default(text: str) -> str:
    """agentgateway's `default(expr, fallback)` (the fallback when `expr` is missing) as CEL's
    optional form: `a.b["c"]` becomes `a.?b[?"c"].orValue(fallback)`. Only a selection path
    can be missing, so only that is accepted as `expr`."""
    out: list[str] = []
    i = 0
    n = len(text)
    quote = ""
    while i < n:
        ch = text[i]
        if quote:
            out.append(ch)
            if ch == "\\" and i + 1 < n:
                out.append(text[i + 1])
                i += 2
                continue
            if ch == quote:
                quote = ""
            i += 1
            continue
        if ch in "\"'":
            quote = ch
            out.append(ch)
            i += 1
            continue
        if (
            text.startswith("default", i)
            and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_."))
        ):
            j = i + 7
            while j < n and text[j].isspace():
                j += 1
            if j < n and text[j] == "(":
                args, end = _call_arguments(text, j)
                if len(args) != 2:
                    raise CelCompileError("default() takes two arguments: default(value, fallback)")
                selection = _SELECTION.match(args[0])
                if selection is None:
                    raise CelCompileError(
                        "default(): agw-fast supports a field path as its first argument "
                        f"(such as llmRequest.metadata.tier), not {args[0].strip()!r}"
                    )
                steps = "".join(
                    f".?{field}" if field else f"[?{key}]"
                    for field, key in _STEP.findall(selection.group(2))
                )
                fallback = _rewrite_default(args[1])
                out.append(f"({selection.group(1)}{steps}.orValue({fallback.strip()}))")
                i = end
                continue
        out.append(ch)
        i += 1
    return "".join(out)


def _call_arguments(text: str, open_at: int) -> tuple[list[str], int]:
    """The top-level arguments of the call whose `(` is at `open_at`, and the index after
    its `)`."""
    depth = 0
    quote = ""
    args: list[str] = []
    start = open_at + 1
    i = open_at
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 2
                continue
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth == 0:
                args.append(text[start:i])
                return args, i + 1
        elif ch == "," and depth == 1:
            args.append(text[start:i])
            start = i + 1
        i += 1
    raise CelCompileError("default(: missing closing parenthesis")
_STRING_LITERAL = re.compile(r"""[rRbB]*("(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')""")


def _variables_used(text: str, variables: tuple[str, ...]) -> frozenset[str]:
    # A superset is harmless (a variable built for nothing); the compiler has already
    # rejected any identifier that is not a declared variable, function or field.
    names = set(_IDENTIFIER.findall(_STRING_LITERAL.sub('""', text)))
    return frozenset(name for name in variables if name in names)


_UNDECLARED = re.compile(r"undeclared reference to '([^']+)'")
_NO_OVERLOAD = re.compile(r"found no matching overload for '([^']+)'")


def _one_line(message: str) -> str:
    """The engine's first line without its status prefix, with a hint for agentgateway's
    functions and variables agw-fast lacks."""
    first = message.splitlines()[0] if message else "invalid expression"
    first = re.sub(r"^[A-Z_]+: ERROR: <input>:", "", first).strip()
    first = re.sub(r" \(in container ''\)", "", first)
    undeclared = _UNDECLARED.search(first)
    if undeclared is not None:
        name = undeclared.group(1)
        root = name.split(".")[0]
        if name in REFUSED_FUNCTIONS or root in REFUSED_FUNCTIONS:
            return f"{first} (agentgateway's {name}() is not supported by agw-fast)"
        if root in _AGENTGATEWAY_VARIABLES:
            return f"{first} (the CEL variable `{root}` is not supported by agw-fast)"
    overload = _NO_OVERLOAD.search(first)
    if overload is not None and overload.group(1) in REFUSED_FUNCTIONS:
        return f"{first} (agentgateway's {overload.group(1)}() is not supported by agw-fast)"
    return first


# agentgateway's other top-level variables (cel/types.rs `Executor`), for the error hint.
_AGENTGATEWAY_VARIABLES = frozenset(
    {
        "response", "proxy", "env", "destination", "llm", "llmRequest", "mcp", "backend",
        "extauthz", "extproc", "mcpGuardrails", "metadata",
    }
)  # fmt: skip


_ENVIRONMENTS: dict[tuple[tuple[str, ...], bool], Any] = {}


def _environment(variables: tuple[str, ...] = VARIABLES, flatten: bool = False) -> Any:
    # Built once per process and variable set on first use, so a config without CEL never
    # loads the engine.
    environment = _ENVIRONMENTS.get((variables, flatten))
    if environment is None:
        t = _cel.Type
        dyn_map = t.Map(t.STRING, t.DYN)
        functions = _function_declarations()
        if flatten:
            functions += _flatten_declarations()
        environment = _ENVIRONMENTS[(variables, flatten)] = _cel.NewEnv(
            variables=dict.fromkeys(variables, dyn_map),
            extensions=[ext_strings.ExtStrings(), ext_math.ExtMath(), ext_optional.ExtOptional()],
            functions=functions,
        )
    return environment


# agentgateway's `flatten(x)` / `flattenRecursive(x)` (crates/celx/src/flatten.rs) wrap a
# list or map in a one-entry map under one of these keys; whoever writes the value out
# (span attributes) expands it into `name.0`, `name.key`... fields.
FLATTEN_MARKERS = {
    "$_meta_flatten_list": False,
    "$_meta_flatten_map": False,
    "$_meta_flatten_list_recursive": True,
    "$_meta_flatten_map_recursive": True,
}


def _flatten_declarations() -> list[Any]:
    c = _cel
    t = c.Type

    def marker(recursive: bool) -> Callable[[object], dict[str, object]]:
        def wrap(value: object) -> dict[str, object]:
            kind = "list" if isinstance(value, list | tuple) else "map"
            if not isinstance(value, list | tuple | dict):
                raise ValueError("flatten only works on Map or List")
            return {f"$_meta_flatten_{kind}{'_recursive' if recursive else ''}": value}

        return wrap

    result = t.Map(t.STRING, t.DYN)
    return [
        c.FunctionDecl(
            name,
            [
                c.Overload(f"agw_{name}_{kind}", return_type=result, parameters=[param],
                           is_member=False, impl=marker(recursive))
                for kind, param in (("list", t.List(t.DYN)), ("map", t.Map(t.DYN, t.DYN)))
            ],
        )  # fmt: skip
        for name, recursive in (
            ("flatten", False), ("flattenRecursive", True), ("flatten_recursive", True),
        )
    ]


def _cidr(text: str) -> dict[str, str]:
    # The engine cannot carry an opaque Python value, so a CIDR is a one-entry map holding
    # its canonical text; `containsIP` is declared on exactly that map type.
    return {"cidr": str(ipaddress.ip_network(text, strict=False))}


def _contains_ip(cidr: Mapping[str, str], address: str) -> bool:
    network = ipaddress.ip_network(cidr["cidr"])
    ip = ipaddress.ip_address(address.strip("[]"))
    return ip.version == network.version and ip in network


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _json(text: str | bytes) -> object:
    return json.loads(text)


def _base64_encode(value: str | bytes) -> str:
    data = value.encode() if isinstance(value, str) else value
    return base64.b64encode(data).decode("ascii")


def _base64_decode(value: str | bytes) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as error:
        raise ValueError(f"base64 decode: {error}") from None


def _function_declarations() -> list[Any]:
    c = _cel
    t = c.Type
    cidr_type = t.Map(t.STRING, t.STRING)

    def decl(name: str, *overloads: tuple[str, Any, list[Any], bool, Callable[..., Any]]) -> Any:
        return c.FunctionDecl(
            name,
            [
                c.Overload(ident, return_type=ret, parameters=params, is_member=member, impl=impl)
                for ident, ret, params, member, impl in overloads
            ],
        )

    def b64(encode: str, decode: str) -> list[Any]:
        return [
            decl(
                encode,
                (f"agw_{encode}_string", t.STRING, [t.STRING], False, _base64_encode),
                (f"agw_{encode}_bytes", t.STRING, [t.BYTES], False, _base64_encode),
            ),
            decl(
                decode,
                (f"agw_{decode}_string", t.BYTES, [t.STRING], False, _base64_decode),
                (f"agw_{decode}_bytes", t.BYTES, [t.BYTES], False, _base64_decode),
            ),
        ]

    return [
        decl("random", ("agw_random", t.DOUBLE, [], False, random.random)),
        decl("uuid", ("agw_uuid", t.STRING, [], False, lambda: str(uuid.uuid4()))),
        decl(
            "json",
            ("agw_json_string", t.DYN, [t.STRING], False, _json),
            ("agw_json_bytes", t.DYN, [t.BYTES], False, _json),
        ),
        decl(
            "stripPrefix",
            ("agw_strip_prefix", t.STRING, [t.STRING, t.STRING], True, str.removeprefix),
        ),
        decl(
            "stripSuffix",
            ("agw_strip_suffix", t.STRING, [t.STRING, t.STRING], True, str.removesuffix),
        ),
        decl("cidr", ("agw_cidr", cidr_type, [t.STRING], False, _cidr)),
        decl(
            "containsIP",
            ("agw_cidr_contains_ip", t.BOOL, [cidr_type, t.STRING], True, _contains_ip),
        ),
        decl("isIP", ("agw_is_ip", t.BOOL, [t.STRING], False, _is_ip)),
        *b64("base64.encode", "base64.decode"),
        *b64("base64Encode", "base64Decode"),
    ]
