"""The `agw_fast` logger, its setup, and the `key=value` formatting log lines share."""

from __future__ import annotations

import json
import logging
import re
import sys

__all__ = [
    "REQUEST_TARGET",
    "apply_log_directive",
    "configure_logging",
    "format_fields",
    "logger",
    "normalize_log_directive",
    "text_value",
]

logger = logging.getLogger("agw_fast")

_LEVELS = {
    "trace": logging.DEBUG,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "off": logging.CRITICAL + 10,
}


# The access log's target, as agentgateway names its request log: `request=off` stops it.
REQUEST_TARGET = "request"
_TARGET = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_targeted: set[str] = set()  # loggers a directive gave a level of their own


def _parse_directive(directive: str) -> dict[str, int]:
    """`level` and `target=level` clauses, comma separated (agentgateway's `/logging` form;
    a target is a logger name, `agw_fast.proxy` say, or `request`), later ones winning:
    {"": the global level, target: its level}. Raises ValueError naming a bad clause."""
    levels: dict[str, int] = {}
    for clause in directive.split(","):
        clause = clause.strip()
        if not clause:
            continue
        target, sep, level = clause.rpartition("=")
        numeric = _LEVELS.get(level.lower())
        if numeric is None or (sep and not _TARGET.fullmatch(target)):
            raise ValueError(f"level {clause} is invalid")
        if target == logger.name:
            target = ""  # the package's logger is the global level
        levels.pop(target, None)  # re-added last: the order of the latest clauses
        levels[target] = numeric
    return levels


_NAMES = {
    logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warn",
    logging.ERROR: "error", logging.CRITICAL + 10: "off",
}  # fmt: skip


def normalize_log_directive(directive: str) -> str:
    """The directive with each target once (its last level), the global level first.
    Raises ValueError for a bad clause."""
    levels = _parse_directive(directive)
    clauses = [_NAMES.get(levels.pop("", logging.INFO), "info")]
    clauses += [f"{target}={_NAMES.get(level, 'info')}" for target, level in levels.items()]
    return ",".join(clauses)


def apply_log_directive(directive: str) -> bool:
    """Set this process's log levels from `directive` (targets it no longer names go back
    to the global level); returns whether the access log (`request`) is on."""
    levels = _parse_directive(directive)
    numeric = levels.get("", logging.INFO)
    logger.setLevel(numeric)
    for name in _targeted - set(levels):
        logging.getLogger(name).setLevel(logging.NOTSET)
    _targeted.clear()
    for target, level in levels.items():
        if target and target != REQUEST_TARGET:
            logging.getLogger(target).setLevel(level)
            _targeted.add(target)
    return levels.get(REQUEST_TARGET, numeric) <= logging.INFO


def configure_logging(level: str) -> int:
    """Set the package log level from `config.logging.level`; returns the numeric level."""
    numeric = _LEVELS.get(level.split(",")[0].strip().lower(), logging.INFO)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.handlers[:] = [handler]
    logger.setLevel(numeric)
    logger.propagate = False
    return numeric


# Values with whitespace, quotes or "=" (or empty) are quoted so a line stays parseable.
_NEEDS_QUOTES = re.compile(r'[\s"=]|^$').search


def text_value(value: object) -> str:
    """A value as it appears after `key=` in a text line (quoted when it must be)."""
    text = value if type(value) is str else str(value)
    if _NEEDS_QUOTES(text):
        return json.dumps(text)
    return text


def format_fields(fields: dict[str, object]) -> str:
    """`key=value` pairs of a text line; None values are left out."""
    return " ".join(
        f"{key}={text_value(value)}" for key, value in fields.items() if value is not None
    )
