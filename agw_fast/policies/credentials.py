"""Reading a client credential from where `apiKey`/`basicAuth` look for it, and taking it out.

agentgateway's `AuthorizationLocation` (http/auth/mod.rs): a header (first field of that
name, an optional prefix matched ASCII case-insensitively), a query parameter (form-urlencoded,
first match), a cookie, or a CEL `expression` over the request whose value, when a string, is
the credential (any other value or an evaluation error is no credential). A credential that
authenticated is removed before the request goes on: every field of the header, every pair of
the parameter, the cookie from every `Cookie`; what an expression read is left as it is.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import parse_qsl, quote_plus

from agw_fast.config.model import CredentialLocation
from agw_fast.core.cel import CelCompileError, activation, compile_expression
from agw_fast.errors import ConfigError
from agw_fast.policies.cel_context import cel_variables
from agw_fast.policies.request import PolicyRequest

__all__ = ["Extractor", "Remover", "compile_location"]

# The credential as text, or None when the request carries none there.
Extractor = Callable[[PolicyRequest], str | None]
Remover = Callable[[PolicyRequest], None]

_NOT_VISIBLE = re.compile(rb"[^\t\x20-\x7e]")


def compile_location(location: CredentialLocation) -> tuple[Extractor, Remover]:
    """The location's extractor and remover; an `expression` is compiled here (a bad one
    raises ConfigError naming its field)."""
    if location.kind == "expression":
        return _expression(location)
    if location.kind == "header":
        return _header(location.name.encode("latin-1"), location.prefix)
    if location.kind == "queryParameter":
        return _query(location.name)
    return _cookie(location.name)


def _visible_ascii(value: bytes) -> str | None:
    """The value as text if every byte is visible ASCII or HTAB, as http's `to_str` wants;
    agentgateway reads any other value as no credential at all."""
    if _NOT_VISIBLE.search(value):
        return None
    return value.decode("ascii")


def _header(name: bytes, prefix: str | None) -> tuple[Extractor, Remover]:
    folded = None if prefix is None else prefix.lower()
    size = 0 if prefix is None else len(prefix)

    def extract(request: PolicyRequest) -> str | None:
        for field_name, value in request.headers:
            if field_name == name:
                text = _visible_ascii(value)
                if text is None or folded is None:
                    return text
                # Only ASCII folds, so an ASCII value's length is kept by lower().
                if len(text) < size or text[:size].lower() != folded:
                    return None
                return text[size:]
        return None

    def remove(request: PolicyRequest) -> None:
        request.headers = [pair for pair in request.headers if pair[0] != name]

    return extract, remove


def _form_encode(text: str) -> str:
    # The WHATWG urlencoded serializer (Rust form_urlencoded) keeps only alphanumerics and
    # `*-._`; quote_plus also keeps `~`.
    return quote_plus(text, safe="*").replace("~", "%7E")


def _query(name: str) -> tuple[Extractor, Remover]:
    def extract(request: PolicyRequest) -> str | None:
        if not request.query:
            return None
        for key, value in _parse_query(request.query):
            if key == name:
                return value
        return None

    def remove(request: PolicyRequest) -> None:
        kept = [
            f"{_form_encode(k)}={_form_encode(v)}"
            for k, v in _parse_query(request.query)
            if k != name
        ]
        # Like agentgateway, the other pairs are re-encoded; none left drops the `?`.
        request.query = b"?" + "&".join(kept).encode("ascii") if kept else b""

    return extract, remove


def _parse_query(query: bytes) -> list[tuple[str, str]]:
    """`application/x-www-form-urlencoded` pairs of a `?query` (`+` is a space), percent
    escapes read as UTF-8, lossily, as Rust's form_urlencoded does."""
    text = query[1:].decode("utf-8", "replace")
    return parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="replace")


def _request_cookies(request: PolicyRequest) -> list[tuple[str, str]]:
    """(name, value) of every cookie of every `Cookie` field, as the cookie crate splits them:
    `;`-separated, trimmed, a piece without `=` or with an empty name skipped."""
    found: list[tuple[str, str]] = []
    for field_name, value in request.headers:
        if field_name != b"cookie":
            continue
        text = _visible_ascii(value)
        if text is None:
            continue
        for piece in text.split(";"):
            key, sep, val = piece.partition("=")
            key = key.strip()
            if sep and key:
                found.append((key, val.strip()))
    return found


def _cookie(name: str) -> tuple[Extractor, Remover]:
    def extract(request: PolicyRequest) -> str | None:
        for key, value in _request_cookies(request):
            if key == name:
                return value
        return None

    def remove(request: PolicyRequest) -> None:
        kept = "; ".join(f"{k}={v}" for k, v in _request_cookies(request) if k != name)
        headers = [pair for pair in request.headers if pair[0] != b"cookie"]
        if kept:
            headers.append((b"cookie", kept.encode("ascii")))
        request.headers = headers

    return extract, remove


def _expression(location: CredentialLocation) -> tuple[Extractor, Remover]:
    try:
        program = compile_expression(location.name)
    except CelCompileError as error:
        raise ConfigError(location.path, f"invalid CEL expression: {error}") from None
    uses = program.uses

    def extract(request: PolicyRequest) -> str | None:
        value = program.evaluate(activation(cel_variables(request, uses)))
        return value if isinstance(value, str) else None

    def remove(request: PolicyRequest) -> None:
        pass  # agentgateway cannot tell what produced the value, so it takes nothing out

    return extract, remove
