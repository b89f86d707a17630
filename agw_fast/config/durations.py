"""Go-style duration strings (`"100ms"`, `"1.5s"`, `"1m30s"`), as agentgateway parses them.

agentgateway uses a port of Go's `time.ParseDuration` and then refuses negative values. The
arithmetic here is in integer nanoseconds like Go's, so `"1.1s"` is exactly 1_100_000_000 ns
before the conversion to float seconds, and the same overflow limit (int64 nanoseconds,
about 292 years) applies.
"""

from __future__ import annotations

import re

from agw_fast.errors import ConfigError

__all__ = ["parse_duration"]

_NS_PER_UNIT = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # MICRO SIGN, as Go accepts
    "\u03bcs": 1_000,  # GREEK SMALL LETTER MU, as Go accepts
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_MAX_NS = 2**63 - 1
# One component: digits with an optional fraction (at least one digit on either side of the
# dot), then a unit made of letters (the unit is checked against the table afterwards).
_COMPONENT = re.compile(r"([0-9]*)(?:\.([0-9]*))?([^0-9.]*)")


def _invalid(text: str, path: str, why: str) -> ConfigError:
    return ConfigError(path, f"invalid duration {text!r}: {why}")


def parse_duration(text: str, path: str) -> float:
    """Seconds for a Go duration string; ConfigError(path, "invalid duration ...") otherwise."""
    negative = text.startswith("-")
    s = text[1:] if text[:1] in ("-", "+") else text
    if s == "0":
        return 0.0
    if not s:
        raise _invalid(text, path, 'expected a number and a unit, such as "10s"')
    total = 0
    pos = 0
    while pos < len(s):
        m = _COMPONENT.match(s, pos)
        assert m is not None  # the pattern can match the empty string
        whole, frac, unit = m.group(1), m.group(2), m.group(3)
        if not whole and not frac:
            raise _invalid(text, path, "expected a number")
        if not unit:
            raise _invalid(text, path, "missing unit (one of ns, us, ms, s, m, h)")
        scale = _NS_PER_UNIT.get(unit)
        if scale is None:
            raise _invalid(text, path, f"unknown unit {unit!r} (one of ns, us, ms, s, m, h)")
        ns = int(whole or "0") * scale
        if frac:
            # Go truncates the fraction below one nanosecond.
            ns += int(frac) * scale // 10 ** len(frac)
        total += ns
        if total > _MAX_NS:
            raise _invalid(text, path, "too large")
        pos = m.end()
    if negative and total:
        raise _invalid(text, path, "negative durations are not allowed")
    return total / 1e9
