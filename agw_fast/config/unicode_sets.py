"""Sets of code points as sorted, merged ranges, and the Unicode sets Rust's `regex` crate uses.

The regex translator (rust_regex.py) computes every character class of a pattern as such a
set, applies Rust's set operations and simple case folding to it, and writes it out as an
explicit Python class: Python's own `\\w`, `\\s` and `(?i)` differ from Rust's in corners.

Tables come from the Python runtime's `unicodedata` (Unicode 14.0 on Python 3.11; the regex
crate ships 16.0), built on first use: a pattern without Unicode classes or `(?i)` never pays
for them.
"""

from __future__ import annotations

import unicodedata
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from functools import cache

__all__ = [
    "ALL",
    "GENERAL_CATEGORIES",
    "WHITE_SPACE",
    "CodeSet",
    "case_fold",
    "complement",
    "contains",
    "difference",
    "general_category",
    "intersect",
    "is_white_space",
    "symmetric_difference",
    "union",
    "unicode_digit",
    "unicode_word",
]

CodeSet = tuple[tuple[int, int], ...]  # sorted, non-overlapping, non-adjacent (lo, hi) ranges

MAX_CODE_POINT = 0x10FFFF
# Unicode scalar values: surrogates never occur in text, and Rust's classes exclude them.
ALL: CodeSet = ((0, 0xD7FF), (0xE000, MAX_CODE_POINT))

# White_Space (PropList.txt): Rust's `\s` and whitespace in `(?x)` mode. Python's
# str.isspace() adds U+001C..U+001F, which Rust does not count.
WHITE_SPACE: CodeSet = (
    (0x09, 0x0D),
    (0x20, 0x20),
    (0x85, 0x85),
    (0xA0, 0xA0),
    (0x1680, 0x1680),
    (0x2000, 0x200A),
    (0x2028, 0x2029),
    (0x202F, 0x202F),
    (0x205F, 0x205F),
    (0x3000, 0x3000),
)

# General category values by their long name; short names and aliases map onto these in
# rust_regex.py. "LC" and the one-letter groups are unions of two-letter categories.
GENERAL_CATEGORIES: dict[str, tuple[str, ...]] = {
    "Other": ("Cc", "Cf", "Cn", "Co", "Cs"),
    "Letter": ("Lu", "Ll", "Lt", "Lm", "Lo"),
    "Cased_Letter": ("Lu", "Ll", "Lt"),
    "Mark": ("Mn", "Mc", "Me"),
    "Number": ("Nd", "Nl", "No"),
    "Punctuation": ("Pc", "Pd", "Ps", "Pe", "Pi", "Pf", "Po"),
    "Symbol": ("Sm", "Sc", "Sk", "So"),
    "Separator": ("Zs", "Zl", "Zp"),
}

# Other_Alphabetic code points outside the categories below (circled and squared Latin
# letters, category So): Rust's `\w` is Alphabetic + Mark + Nd + Pc + Join_Control, and
# Alphabetic is Letter + Nl + Other_Alphabetic, which unicodedata does not expose.
_OTHER_ALPHABETIC_SYMBOLS: CodeSet = (
    (0x24B6, 0x24E9),
    (0x1F130, 0x1F149),
    (0x1F150, 0x1F169),
    (0x1F170, 0x1F189),
)
_WORD_CATEGORIES = ("Lu", "Ll", "Lt", "Lm", "Lo", "Nl", "Mn", "Mc", "Me", "Nd", "Pc")
_JOIN_CONTROL: CodeSet = ((0x200C, 0x200D),)
# CaseFolding.txt "S" mappings that neither str.casefold() (full folding) nor str.lower()
# gives as one character.
_SIMPLE_FOLD_EXCEPTIONS = {0x1FD3: 0x390, 0x1FE3: 0x3B0, 0xFB05: 0xFB06}


def union(*sets: Iterable[tuple[int, int]]) -> CodeSet:
    ranges = sorted(r for s in sets for r in s)
    merged: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return tuple(merged)


def complement(s: CodeSet) -> CodeSet:
    """Every scalar value not in `s` (never a surrogate)."""
    result: list[tuple[int, int]] = []
    start = 0
    for lo, hi in s:
        if lo > start:
            result.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_CODE_POINT:
        result.append((start, MAX_CODE_POINT))
    return intersect(tuple(result), ALL)


def intersect(a: CodeSet, b: CodeSet) -> CodeSet:
    result: list[tuple[int, int]] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo = max(a[i][0], b[j][0])
        hi = min(a[i][1], b[j][1])
        if lo <= hi:
            result.append((lo, hi))
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(result)


def difference(a: CodeSet, b: CodeSet) -> CodeSet:
    return intersect(a, complement(b))


def symmetric_difference(a: CodeSet, b: CodeSet) -> CodeSet:
    return union(difference(a, b), difference(b, a))


def contains(s: CodeSet, cp: int) -> bool:
    i = bisect_right(s, (cp, MAX_CODE_POINT + 1)) - 1
    return i >= 0 and s[i][0] <= cp <= s[i][1]


def is_white_space(c: str) -> bool:
    return contains(WHITE_SPACE, ord(c))


@cache
def _category_table() -> dict[str, CodeSet]:
    """Two-letter general category -> its code points, from one pass over all of them."""
    found: dict[str, list[tuple[int, int]]] = {}
    category = unicodedata.category
    previous = ""
    start = 0
    for cp in range(MAX_CODE_POINT + 1):
        current = category(chr(cp))
        if current != previous:
            if previous:
                found.setdefault(previous, []).append((start, cp - 1))
            previous, start = current, cp
    found.setdefault(previous, []).append((start, MAX_CODE_POINT))
    return {name: tuple(ranges) for name, ranges in found.items()}


def general_category(names: Sequence[str]) -> CodeSet:
    """The union of two-letter categories (surrogates excluded, as in Rust)."""
    table = _category_table()
    return intersect(union(*(table.get(name, ()) for name in names)), ALL)


@cache
def unicode_digit() -> CodeSet:
    return general_category(("Nd",))


@cache
def unicode_word() -> CodeSet:
    return union(general_category(_WORD_CATEGORIES), _JOIN_CONTROL, _OTHER_ALPHABETIC_SYMBOLS)


def _simple_fold(cp: int) -> int:
    exception = _SIMPLE_FOLD_EXCEPTIONS.get(cp)
    if exception is not None:
        return exception
    c = chr(cp)
    folded = c.casefold()
    if len(folded) == 1:
        return ord(folded)
    lower = c.lower()
    return ord(lower) if len(lower) == 1 else cp


@cache
def _fold_orbits() -> dict[int, tuple[int, ...]]:
    """Code point -> the others that simple case folding equates with it (cased ones only)."""
    by_fold: dict[int, set[int]] = {}
    for cp in range(MAX_CODE_POINT + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        folded = _simple_fold(cp)
        if folded != cp:
            by_fold.setdefault(folded, {folded}).add(cp)
    orbits: dict[int, tuple[int, ...]] = {}
    for members in by_fold.values():
        for cp in members:
            orbits[cp] = tuple(sorted(members - {cp}))
    return orbits


def case_fold(s: CodeSet) -> CodeSet:
    """`s` closed under simple case folding (Rust's `(?i)` on a class or literal)."""
    extra = [
        (other, other)
        for cp, others in _fold_orbits().items()
        if contains(s, cp)
        for other in others
    ]
    return union(s, extra) if extra else s
