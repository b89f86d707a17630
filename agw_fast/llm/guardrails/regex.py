"""The `regex` guard's matching: custom patterns and agentgateway's builtin detectors.

agentgateway (llm/policy/mod.rs `apply_prompt_guard_regex`, llm/policy/pii/) runs a guard's
rules in order over a working copy of the text: with `reject`, the first rule that matches
rejects; with `mask`, each rule replaces its matches in the working text, a custom pattern's
non-empty matches with `<masked>`, a builtin's (overlapping results coalesced) with
`<ENTITY>` (`<SSN>`, `<CREDIT_CARD>`, `<PHONE_NUMBER>`, `<EMAIL_ADDRESS>`, `<CA_SIN>`).

Here masking is computed as *edits* of the original text (start, end, replacement), so a
caller that holds part of a text (a stream) can apply the edits that lie in it and keep the
rest. A later rule matching inside an earlier rule's placeholder replaces the whole
placeholder (agentgateway would keep its unmatched part): no builtin placeholder contains
what a builtin matches, and a custom pattern written against `<masked>` is not a real use.

The builtin patterns are agentgateway's, in Rust regex syntax, translated by
`config.rust_regex` so `\\b` and `\\d` keep Rust's Unicode meaning. `phoneNumber` validates
candidates with libphonenumber (the `phonenumbers` package; agentgateway uses the Rust port)
for the regions US, GB, DE, IL, IN, CA, BR, as agentgateway does.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any, Literal, NamedTuple, Protocol

from agw_fast.config.rust_regex import compile_rust_regex, translate

__all__ = [
    "BUILTIN_PATTERNS",
    "Detector",
    "Edit",
    "PatternDetector",
    "RegexMatcher",
    "apply_edits",
    "builtin_detector",
]


class Edit(NamedTuple):
    """Replace text[start:end] (character offsets of the original text) with `text`."""

    start: int
    end: int
    text: str


# agentgateway's llm/policy/pii recognizers: (entity type, patterns).
BUILTIN_PATTERNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "ssn": (
        "SSN",
        (
            r"\b([0-9]{5})-([0-9]{4})\b",
            r"\b([0-9]{3})-([0-9]{6})\b",
            r"\b(([0-9]{3})-([0-9]{2})-([0-9]{4}))\b",
            r"\b[0-9]{9}\b",
            r"\b([0-9]{3})[- .]([0-9]{2})[- .]([0-9]{4})\b",
        ),
    ),
    "creditCard": (
        "CREDIT_CARD",
        (
            r"\b4\d{3}[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
            r"\b5[0-5]\d{2}[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
            r"\b6\d{3}[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
            r"\b3\d{3}[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{3,5})\b",
            r"\b1\d{3}[- ]?(\d{3,4})[- ]?(\d{3,4})[- ]?(\d{4,5})\b",
        ),
    ),
    "email": ("EMAIL_ADDRESS", (r"[a-zA-Z0-9_.+-]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+",)),
    "caSin": (
        "CA_SIN",
        (r"\b([0-9]{3})[- ]([0-9]{3})[- ]([0-9]{3})\b", r"\b[0-9]{9}\b"),
    ),
}
# The phone recognizer's candidate pattern (group 2 is the candidate; group 1 keeps a digit
# from running into it), then libphonenumber decides.
_PHONE_LEAD = r"(?:\A|[^0-9])"
_PHONE_CANDIDATE = r"[+()]?[0-9][0-9\s().\-]{6,30}"
_PHONE_REGIONS = ("US", "GB", "DE", "IL", "IN", "CA", "BR")
MASKED = "<masked>"


class Detector(Protocol):
    """One rule: where it matches in a text, and the placeholder a mask writes there."""

    label: str

    def found(self, text: str) -> bool: ...

    def spans(self, text: str) -> list[tuple[int, int]]:
        """Disjoint, sorted (start, end) ranges to replace (non-empty)."""
        ...


class PatternDetector:
    """A custom `pattern` (Rust regex syntax)."""

    __slots__ = ("label", "regex")

    def __init__(self, pattern: str) -> None:
        self.label = MASKED
        self.regex = compile_rust_regex(pattern)

    def found(self, text: str) -> bool:
        return self.regex.search(text) is not None

    def spans(self, text: str) -> list[tuple[int, int]]:
        # Zero-width matches (`a*`) mask nothing: replacing them would only insert text.
        return [m.span() for m in self.regex.finditer(text) if m.end() > m.start()]


# Where a match of a number builtin can start: each of their patterns begins with `\b` and
# an ASCII digit, so a match starts at an ASCII digit that no ASCII word character precedes.
# Found with Python's own engine, a superset of the real starts: the translated pattern (whose
# Unicode `\b` is a costly look-around at every position) is then tried only there.
_DIGIT_START = re.compile(r"(?<![0-9A-Za-z_])[0-9]")


class _PatternsDetector:
    """A builtin made of patterns: every match of every pattern, overlaps coalesced."""

    __slots__ = ("label", "regexes", "digit_led")

    def __init__(self, entity: str, patterns: Sequence[str]) -> None:
        self.label = f"<{entity}>"
        self.regexes = tuple(compile_rust_regex(p) for p in patterns)
        # Every pattern starts with `\b` then a digit: see _DIGIT_START.
        self.digit_led = all(re.match(r"\\b\(*(?:\[0-9\]|[0-9])", p) for p in patterns)

    def found(self, text: str) -> bool:
        if not self.digit_led:
            return any(r.search(text) is not None for r in self.regexes)
        starts = [m.start() for m in _DIGIT_START.finditer(text)]
        return any(r.match(text, at) is not None for r in self.regexes for at in starts)

    def spans(self, text: str) -> list[tuple[int, int]]:
        if not self.digit_led:
            return _coalesce([m.span() for r in self.regexes for m in r.finditer(text)])
        starts = [m.start() for m in _DIGIT_START.finditer(text)]
        if not starts:
            return []
        found: list[tuple[int, int]] = []
        for regex in self.regexes:
            end = 0  # as finditer: the next match starts where the last one ended
            for at in starts:
                if at < end:
                    continue
                match = regex.match(text, at)
                if match is not None:
                    found.append(match.span())
                    end = match.end()
        return _coalesce(found)


class _PhoneDetector:
    __slots__ = ("label", "candidates", "_phonenumbers")

    def __init__(self) -> None:
        import phonenumbers  # the `guardrails` extra; the loader checked it is installed

        self._phonenumbers: Any = phonenumbers
        self.label = "<PHONE_NUMBER>"
        self.candidates = re.compile(_PHONE_LEAD + "(" + translate(_PHONE_CANDIDATE) + ")")

    def _valid(self, candidate: str) -> bool:
        numbers = self._phonenumbers
        for region in _PHONE_REGIONS:
            try:
                number = numbers.parse(candidate, region)
            except numbers.NumberParseException:
                continue
            if numbers.is_valid_number(number):
                return True
        return False

    def found(self, text: str) -> bool:
        return any(self._valid(m.group(1)) for m in self.candidates.finditer(text))

    def spans(self, text: str) -> list[tuple[int, int]]:
        return _coalesce(
            [m.span(1) for m in self.candidates.finditer(text) if self._valid(m.group(1))]
        )


def builtin_detector(name: str) -> Detector:
    if name == "phoneNumber":
        return _PhoneDetector()
    entity, patterns = BUILTIN_PATTERNS[name]
    return _PatternsDetector(entity, patterns)


def _coalesce(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping ranges merged (touching ones stay apart), sorted: agentgateway's
    `coalesce` over the results sorted by start."""
    if len(spans) <= 1:
        return spans
    spans.sort()
    out = [spans[0]]
    for start, end in spans[1:]:
        last_start, last_end = out[-1]
        if start < last_end:
            out[-1] = (last_start, max(last_end, end))
        else:
            out.append((start, end))
    return out


class RegexMatcher:
    """A compiled `regex` guard: its rules in order and its action."""

    __slots__ = ("action", "detectors")

    def __init__(self, action: Literal["mask", "reject"], detectors: Sequence[Detector]) -> None:
        self.action = action
        self.detectors = tuple(detectors)

    def rejects(self, text: str) -> bool:
        return any(d.found(text) for d in self.detectors)

    def edits(self, text: str) -> list[Edit]:
        """The masking edits of `text` (sorted, disjoint); [] when nothing matched."""
        replaced: list[Edit] = []  # in original coordinates, sorted, disjoint
        work = text
        for detector in self.detectors:
            spans = detector.spans(work)
            if not spans:
                continue
            if replaced:
                spans = _to_original(spans, replaced, len(text))
            replaced = _merge(replaced, spans, detector.label)
            work = apply_edits(text, replaced)
        return replaced

    def mask(self, text: str) -> str | None:
        """`text` masked; None when nothing matched."""
        edits = self.edits(text)
        return None if not edits else apply_edits(text, edits)


def apply_edits(text: str, edits: Sequence[Edit]) -> str:
    parts: list[str] = []
    at = 0
    for start, end, replacement in edits:
        parts.append(text[at:start])
        parts.append(replacement)
        at = end
    parts.append(text[at:])
    return "".join(parts)


def _to_original(
    spans: list[tuple[int, int]], replaced: list[Edit], length: int
) -> list[tuple[int, int]]:
    """Working-text ranges as ranges of the original text: a range touching a placeholder
    takes in all of the text that placeholder stands for."""
    # Segment starts in the working text, and each segment's (orig start, orig end, edit?).
    work_starts: list[int] = []
    segments: list[tuple[int, int, bool]] = []
    w = o = 0
    for edit in replaced:
        if edit.start > o:
            work_starts.append(w)
            segments.append((o, edit.start, False))
            w += edit.start - o
        work_starts.append(w)
        segments.append((edit.start, edit.end, True))
        w += len(edit.text)
        o = edit.end
    work_starts.append(w)
    segments.append((o, length, False))

    def original(p: int, end: bool) -> int:
        i = bisect_right(work_starts, p - 1 if end else p) - 1
        i = max(i, 0)
        seg_start, seg_end, is_edit = segments[i]
        if is_edit:
            return seg_end if end else seg_start
        return seg_start + (p - work_starts[i])

    return [(original(s, False), original(e, True)) for s, e in spans]


def _merge(replaced: list[Edit], spans: list[tuple[int, int]], label: str) -> list[Edit]:
    """`replaced` with the new ranges added (each swallowing the placeholders it overlaps)."""
    merged: list[list[int]] = []
    for start, end in sorted(spans):
        if merged and start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    out: list[Edit] = []
    new = [Edit(s, e, label) for s, e in merged]
    i = 0
    for edit in new:
        while i < len(replaced) and replaced[i].end <= edit.start:
            out.append(replaced[i])
            i += 1
        while i < len(replaced) and replaced[i].start < edit.end:
            i += 1  # swallowed (it lies within `edit`: its edges map to whole placeholders)
        out.append(edit)
    out.extend(replaced[i:])
    return out
