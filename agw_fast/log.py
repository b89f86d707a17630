"""The `agw_fast` logger, its setup, and the `key=value` formatting log lines share."""

from __future__ import annotations

import json
import logging
import re
import sys

__all__ = ["configure_logging", "format_fields", "logger", "text_value"]

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
