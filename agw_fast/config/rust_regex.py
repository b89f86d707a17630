"""Rust `regex` crate syntax, translated to a Python `re` pattern with the same meaning.

agentgateway compiles route regexes (path, header and query values) with Rust's `regex`
crate. This module accepts exactly that dialect and refuses what the crate refuses
(look-around, backreferences, `\\Z`, possessive forms...) with the crate's own wording, so a
config means here what it means there. The output never relies on Python's defaults where they
differ from Rust's:

- every class (`\\w`, `\\d`, `\\s`, `\\pL`, `[[:alpha:]]`, `[a-z&&[^aeiou]]`, `.`) is written
  out as an explicit set of code points, case-folded by Rust's simple folding under `(?i)`;
- `^`/`$` become `\\A`/`\\Z` (Python's `$` also matches before a final newline), and their
  multi-line and CRLF forms explicit look-arounds; word boundaries use Rust's `\\w`;
- groups become non-capturing (names are checked, never used) and repetitions are wrapped,
  so `a**` and `a++` keep Rust's meaning (Python reads `a++` as possessive).

Refused because the Python runtime has no data for them: Unicode scripts and most binary
properties in `\\p{..}` (general categories, White_Space, Any, ASCII and Assigned work).

Matching differs in one way that no syntax shows: Rust's engine runs in linear time, Python's
`re` backtracks, so a pattern with nested unbounded repetition (`(a+)+$`) can be slow on
hostile input. Route patterns are the operator's, applied to bounded request heads.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, replace
from functools import lru_cache

from agw_fast.config import unicode_sets as us
from agw_fast.config.rust_regex_props import (
    ASCII_CLASSES,
    PropertyNotFound,
    PropertyUnsupported,
    lookup_property,
)
from agw_fast.config.unicode_sets import CodeSet

__all__ = ["RustRegexError", "UnsupportedRegex", "compile_rust_regex", "translate"]

NEST_LIMIT = 250  # regex-syntax's default nesting limit
_META = set("\\.+*?()|[]{}^$#&-~")
_ASCII_WORD = ASCII_CLASSES["word"]
_ASCII_DIGIT = ASCII_CLASSES["digit"]
_ASCII_SPACE = ASCII_CLASSES["space"]
class RustRegexError(ValueError):
    """The pattern is not valid in Rust's regex syntax (the crate would refuse it too)."""


class UnsupportedRegex(ValueError):
    """Valid Rust regex syntax that agw-fast cannot give the same meaning."""


@dataclass(frozen=True, slots=True)
class _Flags:
    i: bool = False  # case-insensitive
    m: bool = False  # multi-line ^ $
    s: bool = False  # . matches \n
    swap_greed: bool = False  # U
    unicode: bool = True  # u
    crlf: bool = False  # R


# Printable ASCII that means itself both inside and outside a Python class (the rest is
# escaped; `-&~|[` also because Python warns that they may become set operators).
_PLAIN = frozenset(chr(cp) for cp in range(0x21, 0x7F)) - set("\\.^$*+?{}[]|()-#&~")


def _esc(cp: int) -> str:
    c = chr(cp)
    if c in _PLAIN:
        return c
    if cp < 0x100:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def _set_text(s: CodeSet) -> str:
    if not s:
        return "(?!)"  # the empty class: matches nothing, not even the empty string
    if len(s) == 1 and s[0][0] == s[0][1]:
        return _esc(s[0][0])
    parts = [_esc(lo) if lo == hi else f"{_esc(lo)}-{_esc(hi)}" for lo, hi in s]
    return "[" + "".join(parts) + "]"


@lru_cache(maxsize=4)
def _word_text(unicode: bool) -> str:
    return _set_text(us.unicode_word() if unicode else _ASCII_WORD)


def _boundary(kind: str, unicode: bool) -> str:
    w = _word_text(unicode)
    before, not_before, after, not_after = f"(?<={w})", f"(?<!{w})", f"(?={w})", f"(?!{w})"
    return {
        "b": f"(?:{before}{not_after}|{not_before}{after})",
        "B": f"(?:{before}{after}|{not_before}{not_after})",
        "start": not_before + after,
        "end": before + not_after,
        "start-half": not_before,
        "end-half": not_after,
    }[kind]


class _Literal:
    __slots__ = ("c", "byte")

    def __init__(self, c: str, byte: bool = False) -> None:
        self.c = c
        self.byte = byte  # written `\xNN`: a byte, not a char, when Unicode is off


class _Parser:
    def __init__(self, pattern: str) -> None:
        self.p = pattern
        self.pos = 0
        self.x = False  # ignore whitespace: a parse-time flag
        self.names: set[str] = set()
        self.depth = 0

    # -- cursor ---------------------------------------------------------------------------------

    def error(self, message: str) -> RustRegexError:
        return RustRegexError(f"{message} (at offset {self.pos})")

    @property
    def eof(self) -> bool:
        return self.pos >= len(self.p)

    @property
    def c(self) -> str:
        return self.p[self.pos]

    def bump(self) -> bool:
        if not self.eof:
            self.pos += 1
        return not self.eof

    def bump_space(self) -> None:
        if not self.x:
            return
        while not self.eof:
            if us.is_white_space(self.c):
                self.pos += 1
            elif self.c == "#":
                end = self.p.find("\n", self.pos)
                self.pos = len(self.p) if end == -1 else end + 1
            else:
                break

    def bump_and_bump_space(self) -> bool:
        if not self.bump():
            return False
        self.bump_space()
        return not self.eof

    def peek(self) -> str | None:
        return self.p[self.pos + 1] if self.pos + 1 < len(self.p) else None

    def peek_space(self) -> str | None:
        if not self.x:
            return self.peek()
        i, comment = self.pos + 1, False
        while i < len(self.p):
            c = self.p[i]
            if comment:
                comment = c != "\n"
            elif c == "#":
                comment = True
            elif not us.is_white_space(c):
                return c
            i += 1
        return None

    def bump_if(self, prefix: str) -> bool:
        if self.p.startswith(prefix, self.pos):
            self.pos += len(prefix)
            return True
        return False

    def enter(self) -> None:
        self.depth += 1
        if self.depth > NEST_LIMIT:
            raise self.error(f"exceed the maximum number of nested parentheses/brackets "
                             f"({NEST_LIMIT})")

    # -- expressions ----------------------------------------------------------------------------

    def parse(self) -> str:
        text = self.alternation(_Flags(), top=True)
        return text

    def alternation(self, flags: _Flags, *, top: bool) -> str:
        """Up to the `)` closing the group (not consumed) or the end."""
        branches: list[str] = []
        items: list[str | None] = []  # None: a `(?flags)` (nothing to repeat)
        while True:
            self.bump_space()
            if self.eof:
                if not top:
                    raise self.error("unclosed group")
                break
            c = self.c
            if c == ")":
                if top:
                    raise self.error("unopened group")
                break
            if c == "|":
                branches.append("".join(i for i in items if i))
                items = []
                self.bump()
            elif c == "(":
                new_flags = self.group(flags, items)
                if new_flags is not None:
                    flags = new_flags
                    items.append(None)
            elif c in "?*+":
                self.repeat_uncounted(flags, items)
            elif c == "{":
                self.repeat_counted(flags, items)
            elif c == "[":
                items.append(_set_text(self.bracketed(flags)))
            else:
                items.append(self.primitive(flags))
        branches.append("".join(i for i in items if i))
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    def group(self, flags: _Flags, items: list[str | None]) -> _Flags | None:
        """At `(`: a group (appended to items) or a flag setting (returned)."""
        start = self.pos
        self.bump()
        self.bump_space()
        if any(self.bump_if(p) for p in ("?=", "?!", "?<=", "?<!")):
            self.pos = start
            raise self.error(
                "look-around, including look-ahead and look-behind, is not supported"
            )
        inner = flags
        if self.bump_if("?P<") or self.bump_if("?<"):
            self.capture_name()
        elif self.bump_if("?"):
            if self.eof:
                raise self.error("unclosed group")
            inner, set_x = self.flags(flags)
            end = self.c
            self.bump()
            if end == ")":
                if set_x is not None:
                    self.x = set_x
                return inner
            if set_x is not None:
                saved_x, self.x = self.x, set_x
                self.group_body(inner, items, saved_x)
                return None
        self.group_body(inner, items, self.x)
        return None

    def group_body(self, flags: _Flags, items: list[str | None], saved_x: bool) -> None:
        self.enter()
        body = self.alternation(flags, top=False)
        self.depth -= 1
        self.bump()  # the `)`
        self.x = saved_x
        items.append(f"(?:{body})")

    def capture_name(self) -> None:
        if self.eof:
            raise self.error("EOF found while parsing capture group name")
        start = self.pos
        while self.c != ">":
            c = self.c
            first = self.pos == start
            ok = c == "_" or _alphabetic(c) if first else c in "_.[]" or _alphanumeric(c)
            if not ok:
                raise self.error("invalid capture group character")
            if not self.bump():
                break
        if self.eof:
            raise self.error("EOF found while parsing capture group name")
        name = self.p[start : self.pos]
        self.bump()
        if not name:
            raise self.error("empty capture group name")
        if name in self.names:
            raise self.error("duplicate capture group name")
        self.names.add(name)

    def flags(self, flags: _Flags) -> tuple[_Flags, bool | None]:
        seen: set[str] = set()
        negated = False
        last_was_negation = False
        set_x: bool | None = None
        empty = True
        while self.c not in ":)":
            c = self.c
            if c == "-":
                if negated:
                    raise self.error("flag negation operator repeated")
                negated = last_was_negation = True
            else:
                last_was_negation = False
                if c not in "imsUuRx":
                    raise self.error("unrecognized flag")
                if c in seen:
                    raise self.error("duplicate flag")
                seen.add(c)
                empty = False
                value = not negated
                if c == "x":
                    set_x = value
                else:
                    field = {"i": "i", "m": "m", "s": "s", "U": "swap_greed", "u": "unicode",
                             "R": "crlf"}[c]
                    flags = replace(flags, **{field: value})
            if not self.bump():
                raise self.error("expected flag but got end of regex")
        if last_was_negation:
            raise self.error("dangling flag negation operator")
        if empty and not negated and self.c == ")":
            raise self.error("repetition operator missing expression")
        return flags, set_x

    def repeat_uncounted(self, flags: _Flags, items: list[str | None]) -> None:
        op = self.c
        if not items or items[-1] is None:
            raise self.error("repetition operator missing expression")
        greedy = True
        if self.bump() and self.c == "?":
            greedy = False
            self.bump()
        self.apply_repeat(flags, items, op, greedy)

    def repeat_counted(self, flags: _Flags, items: list[str | None]) -> None:
        if not items or items[-1] is None:
            raise self.error("repetition operator missing expression")
        if not self.bump_and_bump_space():
            raise self.error("unclosed counted repetition")
        low = self.decimal()
        if self.eof:
            raise self.error("unclosed counted repetition")
        high: int | None
        if self.c == ",":
            if not self.bump_and_bump_space():
                raise self.error("unclosed counted repetition")
            if self.c != "}":
                if low is None:
                    raise self.error("repetition quantifier expects a valid decimal")
                high = self.decimal()
                if high is None:
                    raise self.error("repetition quantifier expects a valid decimal")
            else:
                high = -1  # unbounded
        else:
            high = low
        if low is None:
            raise self.error("repetition quantifier expects a valid decimal")
        if self.eof or self.c != "}":
            raise self.error("unclosed counted repetition")
        greedy = True
        if self.bump_and_bump_space() and self.c == "?":
            greedy = False
            self.bump()
        if high is not None and high != -1 and low > high:
            raise self.error("invalid repetition count range, the start must be <= the end")
        op = f"{{{low}}}" if high == low else f"{{{low},}}" if high == -1 else f"{{{low},{high}}}"
        self.apply_repeat(flags, items, op, greedy)

    def decimal(self) -> int | None:
        while not self.eof and us.is_white_space(self.c):
            self.bump()
        digits = ""
        while not self.eof and "0" <= self.c <= "9":
            digits += self.c
            self.bump_and_bump_space()
        while not self.eof and us.is_white_space(self.c):
            self.bump_and_bump_space()
        if not digits:
            return None
        value = int(digits)
        if value > 0xFFFFFFFF:
            raise self.error("decimal literal invalid")
        return value

    def apply_repeat(self, flags: _Flags, items: list[str | None], op: str, greedy: bool) -> None:
        if flags.swap_greed:
            greedy = not greedy
        last = items.pop()
        items.append(f"(?:{last}){op}{'' if greedy else '?'}")

    # -- primitives -----------------------------------------------------------------------------

    def primitive(self, flags: _Flags) -> str:
        c = self.c
        if c == "\\":
            return self.escape_outside(flags)
        self.bump()
        if c == ".":
            return self.dot(flags)
        if c == "^":
            if not flags.m:
                return r"\A"
            return r"(?:\A|(?<=\n)|(?<=\r)(?!\n))" if flags.crlf else r"(?:\A|(?<=\n))"
        if c == "$":
            if not flags.m:
                return r"\Z"
            return r"(?:\Z|(?=\r)|(?<!\r)(?=\n))" if flags.crlf else r"(?=\n|\Z)"
        return self.literal(flags, _Literal(c))

    def dot(self, flags: _Flags) -> str:
        if not flags.unicode:
            raise self.error("pattern can match invalid UTF-8")
        if flags.s:
            return _set_text(us.ALL)
        return r"[^\r\n]" if flags.crlf else r"[^\n]"

    def literal(self, flags: _Flags, lit: _Literal) -> str:
        cp = ord(lit.c)
        if not flags.unicode:
            if lit.byte and cp > 0x7F:
                raise self.error("pattern can match invalid UTF-8")
            if flags.i and lit.c.isascii() and lit.c.isalpha():
                return _set_text(us.union(((cp, cp),), ((ord(lit.c.swapcase()),) * 2,)))
            return _esc(cp)
        if flags.i:
            return _set_text(us.case_fold(((cp, cp),)))
        return _esc(cp)

    def escape_outside(self, flags: _Flags) -> str:
        item = self.escape()
        if isinstance(item, _Literal):
            return self.literal(flags, item)
        if isinstance(item, str):
            return self.assertion(item, flags)
        return _set_text(self.class_item(item, flags))

    def assertion(self, kind: str, flags: _Flags) -> str:
        if kind == "A":
            return r"\A"
        if kind == "z":
            return r"\Z"
        return _boundary(kind, flags.unicode)

    def escape(self) -> _Literal | str | tuple[str, str, bool]:
        """After `\\`: a literal, an assertion name, or a class ("perl"|"unicode", name, neg)."""
        start = self.pos
        if not self.bump():
            raise self.error("incomplete escape sequence, reached end of pattern prematurely")
        c = self.c
        if "0" <= c <= "9":
            self.pos = start
            raise self.error("backreferences are not supported")
        if c in "xuU":
            return self.hex(c)
        if c in "pP":
            return self.unicode_class(negated=c == "P")
        if c in "dswDSW":
            self.bump()
            return ("perl", c.lower(), c.isupper())
        self.bump()
        if c in _META or (c.isascii() and not c.isalnum() and c not in "<>"):
            return _Literal(c)
        special = {"a": "\x07", "f": "\x0c", "t": "\t", "n": "\n", "r": "\r", "v": "\x0b"}
        if c in special:
            return _Literal(special[c])
        if c in "AzB<>":
            return {"<": "start", ">": "end"}.get(c, c)
        if c == "b":
            if not self.eof and self.c == "{":
                kind = self.special_word_boundary()
                if kind is not None:
                    return kind
            return "b"
        self.pos = start
        raise self.error("unrecognized escape sequence")

    def special_word_boundary(self) -> str | None:
        start = self.pos
        if not self.bump_and_bump_space():
            raise self.error("unexpected end of pattern in a special word boundary or repetition")
        if not (self.c.isascii() and (self.c.isalpha() or self.c == "-")):
            self.pos = start
            return None
        name = ""
        while not self.eof and self.c.isascii() and (self.c.isalpha() or self.c == "-"):
            name += self.c
            self.bump_and_bump_space()
        if self.eof or self.c != "}":
            raise self.error("special word boundary assertion is either unclosed or "
                             "contains an invalid character")
        self.bump()
        if name not in ("start", "end", "start-half", "end-half"):
            raise self.error("unrecognized special word boundary assertion")
        return name

    def hex(self, kind: str) -> _Literal:
        if not self.bump_and_bump_space():
            raise self.error("incomplete escape sequence, reached end of pattern prematurely")
        digits = ""
        braced = self.c == "{"
        if braced:
            while self.bump_and_bump_space() and self.c != "}":
                if self.c not in "0123456789abcdefABCDEF":
                    raise self.error("invalid hexadecimal digit")
                digits += self.c
            if self.eof:
                raise self.error("incomplete escape sequence, reached end of pattern "
                                 "prematurely")
            self.bump_and_bump_space()
            if not digits:
                raise self.error("hexadecimal literal empty")
        else:
            for i in range({"x": 2, "u": 4, "U": 8}[kind]):
                if i > 0 and not self.bump_and_bump_space():
                    raise self.error("incomplete escape sequence, reached end of pattern "
                                     "prematurely")
                if self.c not in "0123456789abcdefABCDEF":
                    raise self.error("invalid hexadecimal digit")
                digits += self.c
            self.bump_and_bump_space()
        value = int(digits, 16)
        if value > us.MAX_CODE_POINT or 0xD800 <= value <= 0xDFFF:
            raise self.error("hexadecimal literal is not a Unicode scalar value")
        return _Literal(chr(value), byte=kind == "x" and not braced)

    def unicode_class(self, *, negated: bool) -> tuple[str, str, bool]:
        if not self.bump_and_bump_space():
            raise self.error("incomplete escape sequence, reached end of pattern prematurely")
        if self.c == "{":
            name = ""
            while self.bump_and_bump_space() and self.c != "}":
                name += self.c
            if self.eof:
                raise self.error("incomplete escape sequence, reached end of pattern "
                                 "prematurely")
            self.bump()
            return ("unicode", name, negated)
        if self.c == "\\":
            raise self.error("invalid Unicode character class")
        name = self.c
        self.bump_and_bump_space()
        return ("unicode", name, negated)

    # -- classes --------------------------------------------------------------------------------

    def class_item(self, item: tuple[str, str, bool], flags: _Flags) -> CodeSet:
        kind, name, negated = item
        if kind == "perl":
            if flags.unicode:
                codes = {"d": us.unicode_digit, "w": us.unicode_word}.get(
                    name, lambda: us.WHITE_SPACE
                )()
                return us.complement(codes) if negated else codes
            ascii_codes = {"d": _ASCII_DIGIT, "s": _ASCII_SPACE, "w": _ASCII_WORD}[name]
            if negated:
                raise self.error("pattern can match invalid UTF-8")
            return ascii_codes
        if not flags.unicode:
            raise self.error("Unicode not allowed here")
        codes, negated = self.property(name, negated)
        if flags.i:
            codes = us.case_fold(codes)
        return us.complement(codes) if negated else codes

    def property(self, text: str, negated: bool) -> tuple[CodeSet, bool]:
        try:
            codes, flip = lookup_property(text)
        except PropertyNotFound as missing:
            raise self.error(str(missing)) from None
        except PropertyUnsupported as unsupported:
            raise UnsupportedRegex(str(unsupported)) from None
        return codes, negated != flip

    def bracketed(self, flags: _Flags) -> CodeSet:
        """At `[`: the class, folded and negated as Rust does."""
        self.enter()
        if not self.bump_and_bump_space():
            raise self.error("unclosed character class")
        negated = False
        if self.c == "^":
            negated = True
            if not self.bump_and_bump_space():
                raise self.error("unclosed character class")
        union: list[CodeSet] = []
        while self.c == "-":
            union.append(((0x2D, 0x2D),))
            if not self.bump_and_bump_space():
                raise self.error("unclosed character class")
        if not union and self.c == "]":
            union.append(((0x5D, 0x5D),))
            if not self.bump_and_bump_space():
                raise self.error("unclosed character class")
        left: CodeSet | None = None
        op = ""
        while True:
            self.bump_space()
            if self.eof:
                raise self.error("unclosed character class")
            c = self.c
            if c == "[":
                ascii_class = self.ascii_class(flags)
                union.append(ascii_class if ascii_class is not None else self.bracketed(flags))
            elif c == "]":
                self.bump()
                break
            elif c in "&-~" and self.peek() == c:
                self.pos += 2
                right = us.union(*union)
                left = right if left is None else self.set_op(op, left, right, flags)
                op, union = c, []
            else:
                union.append(self.class_range(flags))
        codes = us.union(*union)
        if left is not None:
            codes = self.set_op(op, left, codes, flags)
        if flags.i:
            codes = self.fold(codes, flags)
        if negated:
            codes = us.complement(codes)
        if not flags.unicode and codes and codes[-1][1] > 0x7F:
            raise self.error("pattern can match invalid UTF-8")
        self.depth -= 1
        return codes

    def fold(self, codes: CodeSet, flags: _Flags) -> CodeSet:
        if flags.unicode:
            return us.case_fold(codes)
        letters = us.intersect(codes, ((0x41, 0x5A), (0x61, 0x7A)))
        return us.union(codes, [(lo ^ 0x20, hi ^ 0x20) for lo, hi in letters])

    def set_op(self, op: str, left: CodeSet, right: CodeSet, flags: _Flags) -> CodeSet:
        if flags.i:
            left, right = self.fold(left, flags), self.fold(right, flags)
        if op == "&":
            return us.intersect(left, right)
        if op == "-":
            return us.difference(left, right)
        return us.symmetric_difference(left, right)

    def ascii_class(self, flags: _Flags) -> CodeSet | None:
        """At a nested `[`: `[:name:]` or `[:^name:]`, else None with the position kept."""
        match = re.compile(r"\[:(\^?)([^:]*):\]").match(self.p, self.pos)
        if match is None or match.group(2) not in ASCII_CLASSES:
            return None
        self.pos = match.end()
        codes = ASCII_CLASSES[match.group(2)]
        if flags.i:
            codes = self.fold(codes, flags)
        if match.group(1):
            codes = us.complement(codes)
            if not flags.unicode:
                raise self.error("pattern can match invalid UTF-8")
        return codes

    def class_range(self, flags: _Flags) -> CodeSet:
        first = self.class_primitive()
        self.bump_space()
        if self.eof:
            raise self.error("unclosed character class")
        if self.c != "-" or self.peek_space() in ("]", "-"):
            return self.class_single(first, flags)
        if not self.bump_and_bump_space():
            raise self.error("unclosed character class")
        second = self.class_primitive()
        if not isinstance(first, _Literal) or not isinstance(second, _Literal):
            raise self.error("invalid range boundary, must be a literal")
        lo, hi = self.class_code(first, flags), self.class_code(second, flags)
        if lo > hi:
            raise self.error("invalid character class range, the start must be <= the end")
        return ((lo, hi),)

    def class_primitive(self) -> _Literal | str | tuple[str, str, bool]:
        if self.c == "\\":
            return self.escape()
        c = self.c
        self.bump()
        return _Literal(c)

    def class_single(self, item: _Literal | str | tuple[str, str, bool], flags: _Flags) -> CodeSet:
        if isinstance(item, _Literal):
            cp = self.class_code(item, flags)
            return ((cp, cp),)
        if isinstance(item, str):
            raise self.error("invalid escape sequence found in character class")
        return self.class_item(item, flags)

    def class_code(self, lit: _Literal, flags: _Flags) -> int:
        cp = ord(lit.c)
        if not flags.unicode and cp > 0x7F:
            if lit.byte:
                raise self.error("pattern can match invalid UTF-8")
            raise self.error("Unicode not allowed here")
        return cp


def _alphabetic(c: str) -> bool:
    return c.isalpha() or unicodedata.category(c) == "Nl"


def _alphanumeric(c: str) -> bool:
    return _alphabetic(c) or unicodedata.category(c) in ("Nd", "No")


@lru_cache(maxsize=1024)
def translate(pattern: str) -> str:
    """The Python `re` pattern with the meaning of Rust regex `pattern`.

    Raises RustRegexError (the crate refuses it) or UnsupportedRegex (agw-fast cannot match
    it the same way).
    """
    text = _Parser(pattern).parse()
    try:
        re.compile(text)
    except (re.error, OverflowError, RecursionError) as error:
        # Rust would refuse these too: counts past its size limit, absurd nesting.
        raise RustRegexError(f"cannot compile: {error}") from None
    return text


@lru_cache(maxsize=1024)
def compile_rust_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))
