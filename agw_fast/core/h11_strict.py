"""Two places where h11's request grammar is laxer than RFC 9112, made strict at import.

h11 compiles its grammar into module-level regular expressions, and its readers look them up
by name each time they run. Replacing two of them costs nothing per request (the parser
runs a regex there anyway) where re-scanning every chunked body in Python would:

* Chunk lines (RFC 9112 §7.1, §7.1.1). h11 accepts `;` followed by *anything* up to CRLF,
  bare CR and control characters included. A front proxy that ends the line at a bare CR
  frames the body differently from us, and what it then sends as the body reaches our
  upstream as new requests (a published HTTP Garden case). We accept extensions only as
  `token [= token / quoted-string]`, as the RFC spells them, and a chunk size only if it fits
  in 64 bits (leading zeros aside), as hyper does.
* Obsolete line folding (RFC 9112 §5.2). h11 joins a continuation line to the previous field
  with a space, which the RFC permits; but a front proxy that does not fold sees a different
  field (`Transfer-Encoding:\\r\\n chunked` is empty to it and chunked to us), so we answer 400
  as hyper (agentgateway) and nginx do: a continuation line is then just an invalid field line.

`harden_h11()` raises if h11's internals moved or no longer take effect (it feeds h11 one
request of each kind and expects a `RemoteProtocolError`), so that an h11 upgrade cannot
silently turn this off; tests check the behaviour through h11's public API too.
"""

from __future__ import annotations

import re

import h11
import h11._readers

from agw_fast.core.abnf import CHUNK_LINE_PATTERN

__all__ = ["STRICT_CHUNK_HEADER", "harden_h11"]

# h11 reads the line up to the first CRLF and fullmatches it; it reads the size from the
# `chunk_size` group. The grammar is the one the response side uses (`core.abnf`).
STRICT_CHUNK_HEADER = re.compile(CHUNK_LINE_PATTERN + rb"\r\n")
# Never matches: every line is then a field line of its own, and one that starts with
# whitespace fails h11's field-line grammar (a 400).
_NO_OBS_FOLD = re.compile(rb"(?!)")


def harden_h11() -> None:
    """Make h11's request parsing strict where RFC 9112 asks (idempotent)."""
    readers = h11._readers
    version = getattr(h11, "__version__", "?")
    for name in ("chunk_header_re", "obs_fold_re"):
        if not isinstance(getattr(readers, name, None), re.Pattern):
            raise RuntimeError(
                f"h11 {version} has no h11._readers.{name}: agw_fast.core.h11_strict "
                "must be updated for this h11 version"
            )
    readers.chunk_header_re = STRICT_CHUNK_HEADER
    readers.obs_fold_re = _NO_OBS_FOLD
    # The attributes existing says nothing of h11 still reading them by module name (a
    # reader that bound the pattern at import would keep h11's own): check what it does.
    for what, probe in _PROBES:
        if not _refused(probe):
            raise RuntimeError(
                f"h11 {version} still accepts {what} after hardening: "
                "agw_fast.core.h11_strict must be updated for this h11 version"
            )


# Each must be refused once hardened, and h11 0.16 alone accepts each.
_PROBES = (
    ("a folded header line", b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n"),
    (
        "a bare CR in a chunk extension",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;\rx\r\nhello\r\n",
    ),
)


def _refused(request: bytes) -> bool:
    """Whether a fresh server-side h11 connection raises on `request` before it has read it
    all (a handful of events, once per hardening)."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(request)
    try:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA or isinstance(event, h11.EndOfMessage):
                return False
    except h11.RemoteProtocolError:
        return True
