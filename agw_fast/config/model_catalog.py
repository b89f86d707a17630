"""`config.modelCatalog`: the price table of LLM calls (agentgateway's model cost catalog,
crates/agentgateway/src/llm/catalog/), read and checked at load.

The setting is a list of sources merged in order, a later one taking precedence: `{file:
path}` (JSON, relative to the working directory), `{inline: "<JSON text>"}` or `{inline:
{providers: ...}}`. A catalog maps a provider name (agentgateway's telemetry name:
`openai`, `anthropic`, `gcp.gemini`, `aws.bedrock`, ...) to models, each with `rates` (USD
per million tokens, as decimal strings with at most 6 fractional digits: `input`, `output`,
`cacheRead`, `cacheWrite`, `reasoning`, `inputAudio`, `outputAudio`), optional context
`tiers` (`contextOver` tokens, strictly increasing, whose `rates` overlay the base ones) and
free-form `tags`. Unknown fields are errors, as in agentgateway (`deny_unknown_fields`).

Merging is per model: a later source's rates overlay the earlier ones field by field, its
tiers (when it has any) replace them, tags add up. A `file` that does not exist is skipped
(agentgateway loads the others and picks it up once it appears); when no source can be read
the config is refused. agentgateway only warns about an invalid catalog and runs unpriced;
here an invalid one fails the load with the field it is in, like any other bad setting.

The result is one immutable `ModelCatalog`: a reload (when it exists) builds a new one and
the workers' recorders swap it in (`Recorder.catalog`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from agw_fast.errors import ConfigError

__all__ = ["CatalogModel", "ModelCatalog", "Rates", "Tier", "parse_model_catalog"]

_MONEY = re.compile(r"[0-9]+(?:\.[0-9]*)?|\.[0-9]+")
_MAX_FRACTION_DIGITS = 6
_RATE_KEYS = (
    ("input", "input"), ("output", "output"), ("cacheRead", "cache_read"),
    ("cacheWrite", "cache_write"), ("reasoning", "reasoning"),
    ("inputAudio", "input_audio"), ("outputAudio", "output_audio"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens of each kind; None where the catalog gives no rate."""

    input: Decimal | None = None
    output: Decimal | None = None
    cache_read: Decimal | None = None
    cache_write: Decimal | None = None
    reasoning: Decimal | None = None
    input_audio: Decimal | None = None
    output_audio: Decimal | None = None

    def is_empty(self) -> bool:
        return self == _NO_RATES

    def overlay(self, delta: Rates) -> Rates:
        """These rates with `delta`'s where it has one."""
        return Rates(*(d if d is not None else b for b, d in zip(_values(self), _values(delta),
                                                                  strict=True)))


_NO_RATES = Rates()


def _values(rates: Rates) -> tuple[Decimal | None, ...]:
    return (
        rates.input, rates.output, rates.cache_read, rates.cache_write, rates.reasoning,
        rates.input_audio, rates.output_audio,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Tier:
    context_over: int
    rates: Rates


@dataclass(frozen=True, slots=True)
class CatalogModel:
    rates: Rates = _NO_RATES
    tiers: tuple[Tier, ...] = ()
    tags: frozenset[str] = frozenset()

    def effective_rates(self, context_tokens: int) -> Rates:
        """The base rates overlaid with the highest tier whose threshold the request's
        context exceeds (a tier reprices the whole request)."""
        best: Tier | None = None
        for tier in self.tiers:
            if context_tokens > tier.context_over and (
                best is None or tier.context_over > best.context_over
            ):
                best = tier
        return self.rates if best is None else self.rates.overlay(best.rates)


@dataclass(frozen=True, slots=True)
class ModelCatalog:
    """The merged catalog: provider -> model id -> prices. `missing`: configured files that
    did not exist at load."""

    # Plain dicts (the admin's /config_dump deep-copies the config), never changed after load.
    providers: Mapping[str, Mapping[str, CatalogModel]] = field(default_factory=dict)
    missing: tuple[str, ...] = ()

    def resolve(self, provider: str, model: str) -> CatalogModel | None:
        models = self.providers.get(provider)
        return None if models is None else models.get(model)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(value: object) -> str:
    """A JSON value's type name, for error messages (config.model imports this module, so it
    cannot use config.validate's, which imports config.model)."""
    if value is None:
        return "null"
    for python_type, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string"),
                              (list, "list"), (dict, "map")):
        if isinstance(value, python_type):
            return name
    return type(value).__name__


def parse_model_catalog(raw: object, path: str, base_dir: Path) -> ModelCatalog | None:
    """`config.modelCatalog` (a list of sources), merged; None when the list is empty."""
    merged: dict[str, dict[str, CatalogModel]] = {}
    missing: list[str] = []
    read = 0
    if not isinstance(raw, list):
        raise ConfigError(path, f"expected a list, got {_kind(raw)}")
    for i, source in enumerate(raw):
        where = f"{path}[{i}]"
        catalog = _source(source, where, base_dir)
        if catalog is None:
            missing.append(str(source["file"]) if isinstance(source, dict) else "")
            continue
        read += 1
        _merge_into(merged, catalog)
    if read == 0:
        if not missing:
            return None
        raise ConfigError(
            path,
            "no configured model catalog sources are currently readable; missing files: "
            + ", ".join(missing),
        )
    return ModelCatalog(merged, tuple(missing))


def _source(
    raw: object, path: str, base_dir: Path
) -> dict[str, dict[str, CatalogModel]] | None:
    """One source's catalog; None for a file that does not exist."""
    if not isinstance(raw, dict) or len(raw) != 1 or next(iter(raw)) not in ("file", "inline"):
        raise ConfigError(path, "expected one of {file: path}, {inline: JSON text} or "
                                "{inline: {providers: ...}}")
    if "file" in raw:
        name = raw["file"]
        if not isinstance(name, str):
            raise ConfigError(_join(path, "file"), f"expected a string, got {_kind(name)}")
        file = base_dir / name
        try:
            text = file.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError) as error:
            detail = error.strerror if isinstance(error, OSError) else "not valid UTF-8"
            raise ConfigError(_join(path, "file"), f"cannot read {file}: {detail}") from None
        return _from_json(text, _join(path, "file"), f"invalid model catalog at {file}")
    inline = raw["inline"]
    if isinstance(inline, str):
        return _from_json(inline, _join(path, "inline"), "invalid inline model catalog")
    try:
        return _catalog(inline, "")
    except _Invalid as error:
        raise ConfigError(_join(_join(path, "inline"), error.where), error.message) from None


class _Invalid(Exception):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(message)
        self.where = where
        self.message = message


def _from_json(text: str, path: str, what: str) -> dict[str, dict[str, CatalogModel]]:
    try:
        doc = json.loads(text)
    except ValueError as error:
        raise ConfigError(path, f"{what}: {error}") from None
    try:
        return _catalog(doc, "")
    except _Invalid as error:
        where = f" at {error.where}" if error.where else ""
        raise ConfigError(path, f"{what}{where}: {error.message}") from None


def _fields(raw: object, where: str, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise _Invalid(where, f"expected a map, got {_kind(raw)}")
    for key in raw:
        if key not in allowed:
            raise _Invalid(_join(where, str(key)),
                           f'unknown field "{key}" (expected one of: {", ".join(allowed)})')
    return raw


def _catalog(raw: object, where: str) -> dict[str, dict[str, CatalogModel]]:
    doc = _fields(raw, where, ("providers",))
    providers = doc.get("providers")
    if providers is None:
        providers = {}
    if not isinstance(providers, dict):
        raise _Invalid(_join(where, "providers"), f"expected a map, got {_kind(providers)}")
    out: dict[str, dict[str, CatalogModel]] = {}
    for name, provider in providers.items():
        at = _join(_join(where, "providers"), name)
        models_raw = _fields(provider, at, ("models",)).get("models") or {}
        if not isinstance(models_raw, dict):
            raise _Invalid(_join(at, "models"), f"expected a map, got {_kind(models_raw)}")
        out[name] = {
            model_id: _model(model, _join(_join(at, "models"), model_id))
            for model_id, model in models_raw.items()
        }
    return out


def _model(raw: object, where: str) -> CatalogModel:
    doc = _fields(raw, where, ("rates", "tiers", "tags"))
    rates = _rates(doc.get("rates"), _join(where, "rates"))
    tiers: list[Tier] = []
    tiers_raw = doc.get("tiers") or []
    if not isinstance(tiers_raw, list):
        raise _Invalid(_join(where, "tiers"), f"expected a list, got {_kind(tiers_raw)}")
    for i, tier_raw in enumerate(tiers_raw):
        at = f"{_join(where, 'tiers')}[{i}]"
        tier = _fields(tier_raw, at, ("contextOver", "rates"))
        over = tier.get("contextOver")
        if type(over) is not int or over < 0:
            raise _Invalid(_join(at, "contextOver"), "expected a non-negative integer")
        if "rates" not in tier:
            raise _Invalid(_join(at, "rates"), 'missing required field "rates"')
        if tiers and over <= tiers[-1].context_over:
            raise _Invalid(at, f"tier {i} threshold {over} not strictly greater than previous")
        tiers.append(Tier(over, _rates(tier["rates"], _join(at, "rates"))))
    tags_raw = doc.get("tags") or []
    if not isinstance(tags_raw, list) or not all(isinstance(t, str) for t in tags_raw):
        raise _Invalid(_join(where, "tags"), "expected a list of strings")
    return CatalogModel(rates, tuple(tiers), frozenset(tags_raw))


def _rates(raw: object, where: str) -> Rates:
    if raw is None:
        return _NO_RATES
    doc = _fields(raw, where, tuple(key for key, _ in _RATE_KEYS))
    values = {attr: _money(doc.get(key), _join(where, key)) for key, attr in _RATE_KEYS}
    return Rates(**values)


def _money(raw: object, where: str) -> Decimal | None:
    """agentgateway's `Money`: a decimal string (a JSON number is refused), not negative, at
    most 6 fractional digits."""
    if raw is None:
        return None
    if not isinstance(raw, str):
        raise _Invalid(where, f"expected a decimal string such as \"2.5\", got {_kind(raw)}")
    text = raw[1:] if raw.startswith("+") else raw
    if text.startswith("-") and _MONEY.fullmatch(text[1:]):
        raise _Invalid(where, f"negative rate not allowed: {raw!r}")
    if not _MONEY.fullmatch(text):
        raise _Invalid(where, f"invalid decimal {raw!r}")
    value = Decimal(text)
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)
    if -exponent > _MAX_FRACTION_DIGITS:
        raise _Invalid(where, f"more than {_MAX_FRACTION_DIGITS} fractional digits: {raw!r}")
    return value


def _merge_into(base: dict[str, dict[str, CatalogModel]],
                overlay: dict[str, dict[str, CatalogModel]]) -> None:
    """agentgateway's `override_with`: per model, rates overlaid, tiers replaced when the
    overlay has some, tags added."""
    for provider, models in overlay.items():
        into = base.setdefault(provider, {})
        for model_id, model in models.items():
            old = into.get(model_id)
            if old is None:
                into[model_id] = model
            else:
                into[model_id] = CatalogModel(
                    old.rates.overlay(model.rates),
                    model.tiers or old.tiers,
                    old.tags | model.tags,
                )
