"""Route regexes in Rust `regex` crate syntax, as agentgateway compiles them.

Every expectation below was produced by regex 1.13.1 itself (the version agentgateway locks),
`Regex::new(pattern)?.find(haystack)`, and the translation was also compared with it on
45,000 random patterns and haystacks (see the branch's report); these rows pin the cases where
Python's `re` alone would answer differently.
"""

from __future__ import annotations

import pytest

from agw_fast.config.rust_regex import (
    RustRegexError,
    UnsupportedRegex,
    compile_rust_regex,
    translate,
)

Span = tuple[int, int] | None


def _find(pattern: str, haystack: str) -> Span:
    found = compile_rust_regex(pattern).search(haystack)
    return None if found is None else found.span()


@pytest.mark.parametrize(
    ("pattern", "haystack", "span"),
    [
        # Leftmost-first: the first alternative that matches wins, even if shorter.
        ("/v1|/v1/chat", "/v1/chat", (0, 3)),
        # Syntax Python's re lacks or reads differently.
        (r"\p{L}+", "héllo", (0, 5)),
        (r"(?<name>a)b", "ab", (0, 2)),
        (r"(?P<name>a)b", "ab", (0, 2)),
        (r"a\z", "a\n", None),
        ("a$", "a\n", None),  # Python's $ also matches before a final newline
        ("[[:digit:]]+", "x12", (1, 3)),
        ("[[:^alpha:]]", "é", (0, 1)),  # negated over all of Unicode
        ("a++a", "aaa", (0, 3)),  # a repeated repetition, not possessive
        ("a**", "aa", (0, 2)),  # Python: "multiple repeat"
        ("[a-z&&[^c]]+", "abcd", (0, 2)),
        ("[0-9--4]+", "1245", (0, 2)),
        ("[a-g~~b-h]+", "ah", (0, 2)),
        ("(?x) a b # comment", "ab", (0, 2)),
        (r"\x{48}\u{49}\U00000021", "HI!", (0, 3)),
        (r"\<\w+\>", " ab ", (1, 3)),
        (r"\b{start}a", "a", (0, 1)),
        ("[]a]", "]", (0, 1)),
        (r"[\[\]]+", "[]", (0, 2)),
        (r"\%\/\-", "%/-", (0, 3)),
        # Rust's Unicode classes, not Python's.
        (r"\d", "\u0663", (0, 1)),
        (r"\w", "\u0301", (0, 1)),  # combining marks are word characters in Rust
        (r"\w", "²", None),  # Python counts other numbers as word characters
        (r"\s", "\x1c", None),  # Python's \s includes the information separators
        (r"\b", "é", (0, 0)),
        (r"(?-u:\w)", "é", None),
        (r"\pN+", "½1", (0, 2)),
        (r"\p{gc=Lu}", "A", (0, 1)),
        (r"\P{N}", "a", (0, 1)),
        # Rust's simple case folding.
        ("(?i)k", "\u212a", (0, 1)),  # KELVIN SIGN
        ("(?i)i", "ı", None),  # Python's (?i) equates i and dotless i
        ("(?i)Σ", "ς", (0, 1)),
        ("(?i)[^k]", "\u212a", None),  # folded before negation
        (r"(?i)\p{Ll}", "A", (0, 1)),
        # Flags and their scope.
        ("(?m)^b$", "a\nb\n", (2, 3)),
        ("(?mR)^b$", "a\r\nb\r\n", (3, 4)),
        ("(?s).", "\n", (0, 1)),
        (".", "\n", None),
        ("(?R).", "\r", None),
        ("(?U)a+", "aaa", (0, 1)),
        ("a{2,3}?", "aaa", (0, 2)),
        ("(?i:a)b|c", "Ab", (0, 2)),
        ("(?:(?i)a|b)", "B", (0, 1)),  # a flag reaches the later alternatives
    ],
)
def test_accepted_with_rusts_meaning(pattern: str, haystack: str, span: Span) -> None:
    assert _find(pattern, haystack) == span


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("(?=a)", "look-around, including look-ahead and look-behind, is not supported"),
        ("(?<!a)b", "look-around"),
        (r"(a)\1", "backreferences are not supported"),
        (r"\0", "backreferences are not supported"),
        (r"a\Z", "unrecognized escape sequence"),
        (r"\h", "unrecognized escape sequence"),
        (r"\e", "unrecognized escape sequence"),
        ("a{,3}", "repetition quantifier expects a valid decimal"),
        ("/v1/{id}", "repetition quantifier expects a valid decimal"),
        ("a{2,1}", "invalid repetition count range, the start must be <= the end"),
        ("a{1", "unclosed counted repetition"),
        ("a{4294967296}", "decimal literal invalid"),
        ("(?z)", "unrecognized flag"),
        ("(?s-s)", "duplicate flag"),
        ("(?--i)", "flag negation operator repeated"),
        ("(?i-)", "dangling flag negation operator"),
        ("(?)", "repetition operator missing expression"),
        ("(?i)*", "repetition operator missing expression"),
        ("*", "repetition operator missing expression"),
        ("a|*", "repetition operator missing expression"),
        ("[z-a]", "invalid character class range, the start must be <= the end"),
        (r"[a-\d]", "invalid range boundary, must be a literal"),
        (r"[\b]", "invalid escape sequence found in character class"),
        ("(", "unclosed group"),
        ("(?", "unclosed group"),
        (")", "unopened group"),
        ("[", "unclosed character class"),
        ("[^]", "unclosed character class"),
        ("(?<n>a)(?<n>b)", "duplicate capture group name"),
        ("(?P<1a>a)", "invalid capture group character"),
        ("(?P<>a)", "empty capture group name"),
        ("(?-u:.)", "pattern can match invalid UTF-8"),
        (r"(?-u:\W)", "pattern can match invalid UTF-8"),
        ("(?-u:[^a])", "pattern can match invalid UTF-8"),
        (r"(?-u:\xFF)", "pattern can match invalid UTF-8"),
        ("(?-u:[é])", "Unicode not allowed here"),
        (r"(?-u:\pL)", "Unicode not allowed here"),
        (r"\x{110000}", "hexadecimal literal is not a Unicode scalar value"),
        (r"\x{D800}", "hexadecimal literal is not a Unicode scalar value"),
        (r"\x{}", "hexadecimal literal empty"),
        (r"\xZZ", "invalid hexadecimal digit"),
        ("\\", "incomplete escape sequence"),
        (r"\p{Cs}", "Unicode property value not found"),
        (r"\b{middle}", "unrecognized special word boundary assertion"),
        ("(" * 300 + ")" * 300, "nested"),
    ],
)
def test_refused_as_rust_refuses(pattern: str, message: str) -> None:
    with pytest.raises(RustRegexError) as info:
        translate(pattern)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "pattern", [r"\p{Greek}", r"\p{Script=Latin}", r"\p{Alphabetic}", r"[\p{Greek}&&\pL]"]
)
def test_valid_but_unsupported_properties_are_refused(pattern: str) -> None:
    with pytest.raises(UnsupportedRegex, match="agw-fast knows general categories"):
        translate(pattern)


@pytest.mark.parametrize(
    "pattern",
    [r"\p{ L }", r"\p{isL}", r"\p{Is_Letter}", r"\p{General_Category:Lu}", r"\p{gc!=Lu}",
     r"\p{White_Space}", r"\p{space}", r"\p{Any}", r"\p{ascii}", r"\p{Assigned}", r"\pZ",
     r"(?x)\x 4 1", "a{ 2 , 3 }", r"\b{5}", "(?x)( ?: a)", "[[:foo:]]", "[a&&]", "[~~]",
     "(|a)+", "", "()", "(?:)*", "(?P<a.b[c]>a)", r"[\x00-\x{10FFFF}]"],
)
def test_accepted(pattern: str) -> None:
    translate(pattern)


def test_translation_is_explicit_about_anchors_and_classes() -> None:
    assert translate("^/v1$") == r"\A/v1\Z"
    assert translate("[a-c]") == "[a-c]"
    assert translate("[a&&b]") == "(?!)"  # empty: matches nothing
