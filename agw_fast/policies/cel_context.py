"""The CEL variables of a request, as agentgateway names and shapes them
(crates/agentgateway/src/cel/types.rs: `Executor`, `RequestRef`, `SourceContext`).

Built per request only by a step whose expressions read them, and only the variables
those expressions name (`CelProgram.uses`).
"""

from __future__ import annotations

from collections.abc import Iterable

from agw_fast.policies.request import PolicyRequest

__all__ = [
    "cel_variables", "header_map", "request_variable", "response_variable", "source_variable",
]

_VERSIONS = {b"1.1": "HTTP/1.1", b"1.0": "HTTP/1.0"}
_EMPTY: dict[str, object] = {}


def cel_variables(request: PolicyRequest, uses: frozenset[str]) -> dict[str, object]:
    """The variables `uses` names, for this request. `jwt`, `apiKey` and `basicAuth` are what
    their authentication step recorded, or an empty map when none ran (every field of it is
    then a missing key, so a rule on it is false, as in agentgateway)."""
    variables: dict[str, object] = {}
    claims = request.claims or _EMPTY
    for name in uses:
        if name == "request":
            variables[name] = request_variable(request)
        elif name == "source":
            variables[name] = source_variable(request.source)
        else:
            variables[name] = claims.get(name, _EMPTY)
    return variables


def request_variable(request: PolicyRequest) -> dict[str, object]:
    """`request`: method, uri, path, pathAndQuery, host, scheme, version, headers (as
    `header_map` makes them)."""
    headers = header_map(request.headers)
    host = request.host.decode("latin-1")
    path = request.path.decode("latin-1")
    path_and_query = path + request.query.decode("latin-1")
    # agw-fast serves plain HTTP listeners only (listener `tls` is refused at load).
    return {
        "method": request.method.decode("ascii"),
        "uri": f"http://{host}{path_and_query}",
        "path": path,
        "pathAndQuery": path_and_query,
        "host": host,
        "scheme": "http",
        "version": _VERSIONS.get(request.version, "HTTP/1.1"),
        "headers": headers,
    }


def source_variable(peer: str) -> dict[str, object]:
    """`source` from the client's "addr:port": address and port, with an IPv4-mapped IPv6
    address written as IPv4 (agentgateway canonicalises peers, transport/stream.rs)."""
    address, _, port = peer.rpartition(":")
    address = address.strip("[]")
    if address.startswith("::ffff:") and "." in address:
        address = address[7:]
    return {"address": address, "port": int(port) if port.isdigit() else 0}


def header_map(fields: Iterable[tuple[bytes, bytes]]) -> dict[str, object]:
    """`headers` of `request` or `response`: keyed by lowercase name; a field sent once is
    its value, one sent more than once the list of its values (agentgateway's default
    `HeadersMode::First`), and a field whose values are not all UTF-8 is absent, as there."""
    headers: dict[str, object] = {}
    invalid: set[str] = set()
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1")  # lowercase already (h11, core/http1.py)
        try:
            value = raw_value.decode("utf-8")
        except UnicodeDecodeError:
            invalid.add(name)
            continue
        seen = headers.get(name)
        if seen is None:
            headers[name] = value
        elif isinstance(seen, list):
            seen.append(value)
        else:
            headers[name] = [seen, value]
    for name in invalid:
        headers.pop(name, None)
    return headers


def response_variable(status: int, lines: list[bytes] | None) -> dict[str, object]:
    """`response` at its head: `code`, and `headers` from its field lines (`name:value`,
    name in lowercase; see core/http1.py) when `lines` is given."""
    if lines is None:
        return {"code": status}
    return {"code": status, "headers": header_map(_fields(lines))}


def _fields(lines: list[bytes]) -> Iterable[tuple[bytes, bytes]]:
    for line in lines:
        name, _, value = line.partition(b":")
        yield name, value.strip(b" \t")
