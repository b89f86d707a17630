from __future__ import annotations

import pytest

from agw_fast.config.durations import parse_duration
from agw_fast.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("0s", 0.0),
        ("-0s", 0.0),
        ("+5s", 5.0),
        ("100ms", 0.1),
        ("1.5s", 1.5),
        ("1.1s", 1.1),
        (".5s", 0.5),
        ("1.s", 1.0),
        ("1m30s", 90.0),
        ("3m0s", 180.0),
        ("1m30.5s", 90.5),
        ("2h", 7200.0),
        ("1h2m3s4ms", 3723.004),
        ("10us", 10e-6),
        ("10\u00b5s", 10e-6),
        ("10\u03bcs", 10e-6),
        ("5ns", 5e-9),
        ("1.0000000001s", 1.0),  # Go truncates below a nanosecond
        ("2562047h", 2562047 * 3600.0),
    ],
)
def test_valid(text: str, seconds: float) -> None:
    assert parse_duration(text, "x.timeout") == pytest.approx(seconds, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "expected a number and a unit"),
        ("-1s", "negative"),
        ("-1.5h", "negative"),
        ("10", "missing unit"),
        ("1m30", "missing unit"),
        ("s", "expected a number"),
        (".s", "expected a number"),
        ("1d", "unknown unit 'd'"),
        ("1S", "unknown unit 'S'"),
        ("1 s", "unknown unit ' s'"),
        (" 1s", "expected a number"),
        ("1.5.5s", "missing unit"),
        ("1e3s", "unknown unit 'e'"),
        ("3000000h", "too large"),
        ("-", "expected a number and a unit"),
    ],
)
def test_invalid(text: str, why: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration(text, "x.timeout")
    assert info.value.path == "x.timeout"
    assert info.value.message.startswith(f"invalid duration {text!r}")
    assert why in info.value.message
