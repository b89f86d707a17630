"""Names in Rust regex classes: `[[:alpha:]]` and `\\p{..}`, resolved as the `regex` crate does.

General categories (every alias, UAX #44 loose matching, `gc=`/`gc!=` forms), White_Space,
Any, ASCII and Assigned resolve to code point sets; scripts and the other binary properties are
valid in Rust but need Unicode data Python does not ship, so they are reported as unsupported.
"""

from __future__ import annotations

from agw_fast.config import unicode_sets as us
from agw_fast.config.unicode_sets import CodeSet

__all__ = ["ASCII_CLASSES", "PropertyNotFound", "PropertyUnsupported", "lookup_property"]


class PropertyNotFound(ValueError):
    """Rust refuses this property (the message is the crate's)."""


class PropertyUnsupported(ValueError):
    """Valid in Rust, but agw-fast has no data for it."""


_GC_ALIASES = {
    # PropertyValueAliases.txt, gc: short name, long name, other aliases.
    "C": ("Other",),
    "Cc": ("Control", "cntrl"),
    "Cf": ("Format",),
    "Cn": ("Unassigned",),
    "Co": ("Private_Use",),
    "Cs": ("Surrogate",),
    "L": ("Letter",),
    "LC": ("Cased_Letter",),
    "Ll": ("Lowercase_Letter",),
    "Lm": ("Modifier_Letter",),
    "Lo": ("Other_Letter",),
    "Lt": ("Titlecase_Letter",),
    "Lu": ("Uppercase_Letter",),
    "M": ("Mark", "Combining_Mark"),
    "Mc": ("Spacing_Mark",),
    "Me": ("Enclosing_Mark",),
    "Mn": ("Nonspacing_Mark",),
    "N": ("Number",),
    "Nd": ("Decimal_Number", "digit"),
    "Nl": ("Letter_Number",),
    "No": ("Other_Number",),
    "P": ("Punctuation", "punct"),
    "Pc": ("Connector_Punctuation",),
    "Pd": ("Dash_Punctuation",),
    "Pe": ("Close_Punctuation",),
    "Pf": ("Final_Punctuation",),
    "Pi": ("Initial_Punctuation",),
    "Po": ("Other_Punctuation",),
    "Ps": ("Open_Punctuation",),
    "S": ("Symbol",),
    "Sc": ("Currency_Symbol",),
    "Sk": ("Modifier_Symbol",),
    "Sm": ("Math_Symbol",),
    "So": ("Other_Symbol",),
    "Z": ("Separator",),
    "Zl": ("Line_Separator",),
    "Zp": ("Paragraph_Separator",),
    "Zs": ("Space_Separator",),
}
_GROUPS = {"C": "Other", "L": "Letter", "LC": "Cased_Letter", "M": "Mark", "N": "Number",
           "P": "Punctuation", "S": "Symbol", "Z": "Separator"}
ASCII_CLASSES: dict[str, CodeSet] = {
    "alnum": ((0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A)),
    "alpha": ((0x41, 0x5A), (0x61, 0x7A)),
    "ascii": ((0x00, 0x7F),),
    "blank": ((0x09, 0x09), (0x20, 0x20)),
    "cntrl": ((0x00, 0x1F), (0x7F, 0x7F)),
    "digit": ((0x30, 0x39),),
    "graph": ((0x21, 0x7E),),
    "lower": ((0x61, 0x7A),),
    "print": ((0x20, 0x7E),),
    "punct": ((0x21, 0x2F), (0x3A, 0x40), (0x5B, 0x60), (0x7B, 0x7E)),
    "space": ((0x09, 0x0D), (0x20, 0x20)),
    "upper": ((0x41, 0x5A),),
    "word": ((0x30, 0x39), (0x41, 0x5A), (0x5F, 0x5F), (0x61, 0x7A)),
    "xdigit": ((0x30, 0x39), (0x41, 0x46), (0x61, 0x66)),
}


def _normalize(name: str) -> str:
    """UAX #44 loose matching as the crate does it: no case, spaces, `_`, `-`, `is` prefix."""
    if name[:2].lower() == "is":
        rest = _normalize_chars(name[2:])
        return "isc" if rest == "c" else rest
    return _normalize_chars(name)


def _normalize_chars(name: str) -> str:
    return "".join(c.lower() for c in name if c.isascii() and c not in " _-")


_GC_BY_NAME = {
    _normalize_chars(alias): short
    for short, aliases in _GC_ALIASES.items()
    for alias in (short, *aliases)
}
_WHITE_SPACE_NAMES = {"whitespace", "wspace", "space"}
_GC_PROPERTY_NAMES = {"gc", "generalcategory"}



def lookup_property(text: str) -> tuple[CodeSet, bool]:
    """The set named by `\\p{text}` (or `\\pX`), and whether its form negates it (`!=`)."""
    where = f"\\p{{{text}}}" if len(text) != 1 else f"\\p{text}"
    for op in ("!=", ":", "="):
        if op in text:
            name, value = text.split(op, 1)
            if _normalize(name) not in _GC_PROPERTY_NAMES:
                raise PropertyUnsupported(_unsupported(where))
            short = _GC_BY_NAME.get(_normalize(value))
            if short is None:
                raise PropertyUnsupported(_unsupported(where))
            return _category(short), op == "!="
    norm = _normalize(text)
    if norm in _WHITE_SPACE_NAMES:
        return us.WHITE_SPACE, False
    if norm == "any":
        return us.ALL, False
    if norm == "ascii":
        return ((0, 0x7F),), False
    if norm == "assigned":
        return us.complement(us.general_category(("Cn",))), False
    short = _GC_BY_NAME.get(norm)
    if short is None:
        raise PropertyUnsupported(_unsupported(where))
    return _category(short), False


def _category(short: str) -> CodeSet:
    if short == "Cs":
        raise PropertyNotFound("Unicode property value not found")  # no surrogates in text
    group = _GROUPS.get(short)
    names = us.GENERAL_CATEGORIES[group] if group else (short,)
    return us.general_category(names)


def _unsupported(where: str) -> str:
    return (
        f"Unicode property {where}: agw-fast knows general categories, White_Space, Any, "
        "ASCII and Assigned (scripts and other properties need tables Python lacks)"
    )
