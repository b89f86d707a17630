from __future__ import annotations

import pytest

from agw_fast.config.envsubst import expand_env
from agw_fast.errors import ConfigError

ENV = {"A": "alpha", "EMPTY": "", "A_B1": "ab", "é": "accent", "DOLLAR": "$B", "HOME": "/home/u"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x: $A", "x: alpha"),
        ("x: ${A}", "x: alpha"),
        ("x: ${A}b", "x: alphab"),
        ("x: $A_B1.c", "x: ab.c"),
        ("x: $A-b", "x: alpha-b"),
        ("x: $é", "x: accent"),
        ("x: ${MISSING:-fallback}", "x: fallback"),
        ("x: ${MISSING:-}", "x: "),
        ("x: ${MISSING:-b:-c}", "x: b:-c"),
        ("x: ${A:-fallback}", "x: alpha"),
        # set-but-empty is still set: the default is not used
        ("x: ${EMPTY:-fallback}", "x: "),
        ("x: [$EMPTY]", "x: []"),
        ("x: $$", "x: $"),
        ("x: $$A", "x: $A"),
        ("x: $${A}", "x: ${A}"),
        ("x: a$$$A", "x: a$alpha"),
        ("x: $", "x: $"),
        ("x: $ y", "x: $ y"),
        ("x: (.+)$", "x: (.+)$"),
        ("x: $-", "x: $-"),
        ("x: $.", "x: $."),
        ("x: a ${b", "x: a ${b"),
        ("x: ${", "x: ${"),
        # a variable's value is inserted verbatim, never expanded again
        ("x: $DOLLAR", "x: $B"),
        ("no dollars at all", "no dollars at all"),
        ("", ""),
    ],
)
def test_expand(text: str, expected: str) -> None:
    assert expand_env(text, ENV) == expected


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("x: $MISSING", "MISSING"),
        ("x: ${MISSING}", "MISSING"),
        ("# a comment mentioning $MISSING\nx: 1", "MISSING"),
        ("x: $1", "1"),
        ("x: ${1}", "1"),
        # `${` runs to the first `}`, whatever lies between, and there is no bash `-` form
        ("x: ${A-b}", "A-b"),
        # an empty name before `:-` is not a default: the whole inside is the name
        ("x: ${:-x}", ":-x"),
        ("x: ${}", ""),
    ],
)
def test_unset_variable_is_an_error(text: str, name: str) -> None:
    with pytest.raises(ConfigError) as info:
        expand_env(text, ENV)
    assert info.value.path == ""
    assert info.value.message == f"environment variable not found: {name}"


def test_brace_runs_across_lines_to_the_first_closing_brace() -> None:
    with pytest.raises(ConfigError, match="environment variable not found: A\ny: "):
        expand_env("x: ${A\ny: }", ENV)


def test_error_names_the_variable_but_never_a_value() -> None:
    with pytest.raises(ConfigError) as info:
        expand_env("a: $A\nb: $SECRET_KEY", ENV)
    assert "SECRET_KEY" in str(info.value)
    assert "alpha" not in str(info.value)


def test_schema_hint_is_left_alone() -> None:
    text = "# yaml-language-server: $schema=https://example.com/schema.json\nbinds: []\n"
    assert expand_env(text, {}) == text


def test_schema_elsewhere_is_a_variable() -> None:
    with pytest.raises(ConfigError, match="not found: schema"):
        expand_env("x: $schema", {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("~/keys/a", "/home/u/keys/a"),
        ("~", "/home/u"),
        ("~user/x", "~user/x"),
        ("x: ~/a", "x: ~/a"),
        ("~/$A", "/home/u/alpha"),
    ],
)
def test_tilde_only_at_the_very_start(text: str, expected: str) -> None:
    assert expand_env(text, ENV) == expected


def test_tilde_without_home_is_kept() -> None:
    assert expand_env("~/a", {}) == "~/a"


def test_tilde_from_a_variable_is_kept() -> None:
    assert expand_env("$T/a", {"T": "~", "HOME": "/h"}) == "~/a"
