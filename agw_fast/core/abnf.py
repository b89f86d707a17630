"""The HTTP/1.1 line grammars both directions share, as compiled regular expressions.

A chunk line is read in two places: h11 reads the requests' (with `h11_strict`'s grammar in
place of its own) and `http1.ChunkedScanner` the responses'. Both relay what they accepted
to a peer that parses it again, so both must accept exactly the same lines: one definition,
here. Every pattern excludes the line's CRLF; callers check that themselves.
"""

from __future__ import annotations

import re

__all__ = ["CHUNK_LINE", "CHUNK_LINE_PATTERN", "FIELD_LINE", "TOKEN"]

TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 §5.6.2
# RFC 9110 §5.6.4: qdtext is HTAB, SP, VCHAR except `"` and `\`, or obs-text; a quoted-pair
# escapes HTAB, SP, VCHAR or obs-text. No other control character anywhere.
_QUOTED_STRING = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t -~\x80-\xff])*"'
_BWS = rb"[ \t]*"
# RFC 9112 §7.1.1: chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS ( token / quoted-string ) ] ).
# Anything else after `;` (a bare CR above all: HTTP Garden's chunk-extension desync) is an
# error, never skipped up to the LF, since a peer that ends the line elsewhere frames the
# body differently.
_CHUNK_EXT = (
    rb"(?:" + _BWS + rb";" + _BWS + TOKEN
    + rb"(?:" + _BWS + rb"=" + _BWS + rb"(?:" + TOKEN + rb"|" + _QUOTED_STRING + rb"))?)*"
)
# RFC 9112 §7.1: chunk-size is 1*HEXDIG; we take one only if it fits in 64 bits (16 hex digits
# once leading zeros are skipped), as hyper does. Whitespace before the CRLF is h11's leniency
# (some clients send it), kept on both sides so they stay one grammar.
CHUNK_LINE_PATTERN = (
    rb"0*(?P<chunk_size>[0-9A-Fa-f]{1,16})(?P<chunk_ext>" + _CHUNK_EXT + rb")[ \t]*"
)
CHUNK_LINE = re.compile(CHUNK_LINE_PATTERN)

# A field line (RFC 9112 §5): field-name ":" OWS field-value OWS, no obsolete folding. Value
# bytes as h11 takes them in requests: RFC 9110 §5.5 makes CR, LF and NUL invalid (a peer may
# end the line at any of them) and lets a recipient keep other control characters.
_FIELD_VCHAR = rb"[\x01-\x08\x0e-\x1f!-\xff]"
FIELD_LINE = re.compile(
    TOKEN + rb":[ \t]*(?:" + _FIELD_VCHAR + rb"+(?:[ \t]+" + _FIELD_VCHAR + rb"+)*)?[ \t]*"
)
