from __future__ import annotations

import math

import pytest

from agw_fast.config.yaml12 import parse_yaml
from agw_fast.errors import ConfigError


def scalar(text: str) -> object:
    doc = parse_yaml(f"v: {text}\n")
    assert isinstance(doc, dict)
    return doc["v"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("True", True), ("TRUE", True), ("false", False), ("False", False)],
)
def test_core_booleans(text: str, expected: bool) -> None:
    assert scalar(text) is expected


@pytest.mark.parametrize(
    "text", ["yes", "no", "on", "off", "y", "n", "Yes", "NO", "On", "OFF", "tRUE"]
)
def test_yaml11_booleans_stay_strings(text: str) -> None:
    assert scalar(text) == text


@pytest.mark.parametrize("text", ["null", "Null", "NULL", "~", ""])
def test_nulls(text: str) -> None:
    assert scalar(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("42", 42),
        ("-5", -5),
        ("+12", 12),
        ("0o17", 15),
        ("0x1F", 31),
        ("0xff", 255),
        ("1.5", 1.5),
        (".5", 0.5),
        ("5.", 5.0),
        ("1e3", 1000.0),
        ("-1.5E-2", -0.015),
        ("012.5", 12.5),
    ],
)
def test_numbers(text: str, expected: object) -> None:
    value = scalar(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "text",
    [
        "0755",  # leading zero: a string (serde_yaml), not YAML 1.1 octal
        "-012",
        "1_000",  # no underscores in 1.2 numbers
        "1:30",  # no sexagesimal
        "0b101",
        "2024-01-01",  # no timestamps
        "2024-01-01T10:00:00Z",
        "<<",  # no merge key
        "=",
        "0o8",
        "0xZ",
        "1e",
        ".",
    ],
)
def test_yaml11_forms_stay_strings(text: str) -> None:
    assert scalar(text) == text


def test_special_floats() -> None:
    assert scalar(".inf") == math.inf
    assert scalar("+.Inf") == math.inf
    assert scalar("-.INF") == -math.inf
    nan = scalar(".NaN")
    assert isinstance(nan, float) and math.isnan(nan)


def test_quoted_scalars_are_strings() -> None:
    assert parse_yaml("a: \"true\"\nb: '42'") == {"a": "true", "b": "42"}


def test_empty_document() -> None:
    assert parse_yaml("") is None
    assert parse_yaml("# only a comment\n") is None


def test_duplicate_key_is_an_error_with_position() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\n")
    message = str(info.value)
    assert 'duplicate key "c"' in message
    assert "line 4, column 3" in message


def test_merge_key_is_an_ordinary_key() -> None:
    assert parse_yaml("base: &b {x: 1}\nother:\n  <<: *b\n") == {
        "base": {"x": 1},
        "other": {"<<": {"x": 1}},
    }


def test_syntax_error_has_line_and_column_and_no_traceback() -> None:
    with pytest.raises(ConfigError) as info:
        parse_yaml("binds:\n  - port: 1\n   bad: [\n")
    message = str(info.value)
    assert message.startswith("invalid YAML at line ")
    assert "column" in message
    assert "Traceback" not in message and "File " not in message
    assert "\n" not in message


def test_explicit_bool_tag_is_still_yaml12() -> None:
    with pytest.raises(ConfigError, match="invalid boolean"):
        parse_yaml("a: !!bool yes")


def test_python_tags_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("a: !!python/object/apply:os.system ['true']")


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("a: 1\n---\nb: 2\n")


def test_control_characters_are_refused() -> None:
    with pytest.raises(ConfigError, match="invalid YAML"):
        parse_yaml("a: \x01")


def test_json_with_tabs() -> None:
    text = '{\n\t"binds": [\n\t\t{"port": 3000, "on": "off", "n": null, "f": 1.0}\n\t]\n}\n'
    assert parse_yaml(text) == {"binds": [{"port": 3000, "on": "off", "n": None, "f": 1.0}]}


def test_json_duplicate_key() -> None:
    with pytest.raises(ConfigError, match='invalid JSON: found duplicate key "a"'):
        parse_yaml('{"a": 1, "a": 2}')


def test_json_syntax_error_reports_json_position() -> None:
    with pytest.raises(ConfigError, match=r"invalid JSON at line 2, column \d+"):
        parse_yaml('{\n\t"a": 1,,\n}')


def test_flow_yaml_that_is_not_json() -> None:
    assert parse_yaml("{a: yes, b: [1, off]}") == {"a": "yes", "b": [1, "off"]}


@pytest.mark.parametrize("prefix", ["", "x: "])
def test_deep_nesting_is_an_error_not_a_crash(prefix: str) -> None:
    with pytest.raises(ConfigError, match="nesting too deep"):
        parse_yaml(prefix + "[" * 20_000)
