"""Response guards on a stream: text held in bounded windows, released as it is cleared.

agentgateway's `GuardedSseBody` (llm/policy/streaming_guardrails.rs) holds SSE frames while
their text deltas accumulate; at 1 KiB of text it evaluates a window (the last 256 bytes of
earlier text, then the new text) and flushes the held frames, or drops them and ends the
stream with a `guardrail_blocked` error event. It does not mask on streams.

Here, over the client's SSE events (after any translation), the same windows also *mask*:
- the events that carry text are held; an event without text passes at once when nothing
  is held, else it waits its turn (order is kept);
- every `THRESHOLD` characters of new text, the window (the last `OVERLAP` characters already
  sent, for context, then the held text) is checked: a `reject` guard's match drops what is
  held and ends the stream with agentgateway's error event; `mask` guards' matches become
  edits of the held text;
- the held text is released up to `OVERLAP` characters before its end (never through the
  middle of a match, nor of one event), with the edits applied (a changed event is
  re-serialised); the rest stays held, so a match split across events is complete in the
  next window before any part of it is sent.

So a pattern up to `OVERLAP` characters long is caught wherever the chunks split it, and the
client still sees text while the stream runs. Memory is bounded: past `HELD_LIMIT`
characters of held text everything is decided and released. Summary events that repeat the
whole text (Responses' `*.done` and `response.completed`) are masked as a whole. Sans-IO.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from agw_fast.llm.guardrails.regex import Edit, RegexMatcher
from agw_fast.llm.jsonbytes import loads
from agw_fast.llm.translate.events import SSEEventReader

__all__ = ["HELD_LIMIT", "OVERLAP", "THRESHOLD", "StreamScanner", "blocked_event"]

THRESHOLD = 256  # characters of new text that trigger a window check
OVERLAP = 256  # characters held back (and kept as context) so split matches are whole
HELD_LIMIT = 64 * 1024  # past this much held text, everything is decided and released
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode

# A text piece: (owner, key) with owner[key] a str.
_Piece = tuple[Any, Any]


def blocked_event(message: bytes) -> bytes:
    """agentgateway's synthetic SSE error event for a blocked stream."""
    text = message.decode("utf-8", "replace")
    doc = {"error": {"type": "guardrail_blocked", "code": "guardrail_intervention",
                     "message": text}}  # fmt: skip
    return b"data: " + _dumps(doc).encode() + b"\n\n"


class _Event:
    __slots__ = ("name", "data", "doc", "pieces", "texts", "start")

    def __init__(self, name: bytes | None, data: bytes, doc: Any, pieces: list[_Piece]) -> None:
        self.name = name
        self.data = data
        self.doc = doc
        self.pieces = pieces
        self.texts = [p[0][p[1]] for p in pieces]
        self.start = 0  # where this event's text starts in the held text

    def raw(self) -> bytes:
        head = b"event: " + self.name + b"\n" if self.name is not None else b""
        return head + b"data: " + self.data.replace(b"\n", b"\ndata: ") + b"\n\n"


class StreamScanner:
    """One stream's guard state. `feed` client SSE bytes, get what may be sent now; after a
    rejection `ended` is set and `feed` returns nothing more."""

    __slots__ = (
        "_reader", "_pieces", "_summary", "_mask", "_rejects", "_held", "_held_text",
        "_new", "_context", "ended", "masked", "rejected_by", "threshold", "overlap",
    )  # fmt: skip

    def __init__(
        self,
        route_type: str,
        mask: RegexMatcher | None,
        rejects: Sequence[tuple[RegexMatcher, bytes]],
        *,
        threshold: int = THRESHOLD,
        overlap: int = OVERLAP,
    ) -> None:
        self._reader = SSEEventReader()
        self._pieces = _PIECES.get(route_type, _no_pieces)
        self._summary = route_type == "responses"
        self._mask = mask
        self._rejects = tuple(rejects)  # (matcher, rejection body)
        self._held: list[_Event] = []
        self._held_text = 0  # characters of text held
        self._new = 0  # characters of text not yet in a checked window
        self._context = ""  # the last `overlap` characters of text released
        self.ended = False
        self.masked = False  # some text was masked (for the guards' metric)
        self.rejected_by: int | None = None  # index in `rejects` of the guard that blocked
        self.threshold = threshold
        self.overlap = overlap

    @property
    def reject_guards(self) -> int:
        return len(self._rejects)

    def feed(self, data: bytes) -> bytes:
        if self.ended or not data:
            return b""
        return self._events(self._reader.feed(data))

    def finish(self) -> bytes:
        """The stream ended: the last window, everything still held."""
        if self.ended:
            return b""
        out = self._events(self._reader.finish())
        if self.ended:
            return out
        return out + self._check(final=True)

    def _events(self, events: list[tuple[bytes | None, bytes]]) -> bytes:
        out: list[bytes] = []
        for name, data in events:
            event = self._parse(name, data)
            if event is None or not event.pieces:
                if self._held:
                    if event is None:
                        event = _Event(name, data, None, [])
                    self._held.append(event)
                else:
                    out.append(event.raw() if event is not None else _raw(name, data))
                continue
            event.start = self._held_text
            size = sum(len(t) for t in event.texts)
            self._held.append(event)
            self._held_text += size
            self._new += size
            if self._new >= self.threshold or self._held_text > HELD_LIMIT:
                out.append(self._check(final=self._held_text > HELD_LIMIT))
                if self.ended:
                    break
        return b"".join(out)

    def _parse(self, name: bytes | None, data: bytes) -> _Event | None:
        if not data.startswith(b"{"):
            return None  # [DONE] and other non-JSON data carry no text
        try:
            doc = loads(data)
        except ValueError:
            return None
        if type(doc) is not dict:
            return None
        if self._summary and self._mask is not None and _mask_summary(doc, self._mask):
            self.masked = True
            return _Event(name, _dumps(doc).encode(), doc, [])
        return _Event(name, data, doc, self._pieces(doc))

    def _check(self, final: bool) -> bytes:
        """Check the window; release what is decided (all of it when `final`)."""
        held = self._held
        if not held:
            return b""
        self._new = 0
        text = "".join(t for e in held for t in e.texts)
        window = self._context + text
        base = len(self._context)
        for index, (matcher, body) in enumerate(self._rejects):
            if matcher.rejects(window):
                held.clear()
                self._held_text = 0
                self.ended = True
                self.rejected_by = index
                return blocked_event(body)
        edits: list[Edit] = self._mask.edits(window) if self._mask is not None else []
        cut = len(window) if final else max(base, len(window) - self.overlap)
        for edit in edits:
            if edit.start < cut < edit.end:
                cut = max(base, edit.start)
                break
        release = cut - base  # characters of held text to release
        # Never split an event: release whole events whose text ends by the cut.
        count = released_text = 0
        for event in held:
            if event.pieces:
                end = event.start + sum(len(t) for t in event.texts)
                if end > release:
                    break
                released_text = end
            count += 1
        if count == 0:
            return b""
        released = held[:count]
        release = released_text
        edits = [
            Edit(max(e.start - base, 0), e.end - base, e.text)
            for e in edits
            if e.end > base and e.end - base <= release
        ]
        out = [self._emit(event, edits) for event in released]
        del held[:count]
        self._held_text -= release
        for event in held:
            event.start -= release
        self._context = (self._context + text[:release])[-self.overlap:]
        return b"".join(out)

    def _emit(self, event: _Event, edits: list[Edit]) -> bytes:
        if not event.pieces or not edits:
            return event.raw()
        changed = False
        at = event.start
        for (owner, key), text in zip(event.pieces, event.texts, strict=True):
            end = at + len(text)
            new = _slice(text, at, end, edits)
            if new != text:
                owner[key] = new
                changed = True
            at = end
        if not changed:
            return event.raw()
        self.masked = True
        event.data = _dumps(event.doc).encode()
        return event.raw()


def _slice(text: str, start: int, end: int, edits: list[Edit]) -> str:
    """The part [start, end) of the held text (`text` is that part) with `edits` applied: an
    edit's replacement goes where the edit starts; text it covers is dropped."""
    parts: list[str] = []
    at = start
    for edit in edits:
        if edit.end <= start or edit.start >= end:
            if edit.start >= end:
                break
            continue
        if edit.start >= at:
            parts.append(text[at - start : edit.start - start])
            parts.append(edit.text)
        at = max(at, min(edit.end, end))
    parts.append(text[at - start :])
    return "".join(parts)


def _raw(name: bytes | None, data: bytes) -> bytes:
    head = b"event: " + name + b"\n" if name is not None else b""
    return head + b"data: " + data.replace(b"\n", b"\ndata: ") + b"\n\n"


def _no_pieces(doc: dict[str, Any]) -> list[_Piece]:
    return []


def _completion_pieces(doc: dict[str, Any]) -> list[_Piece]:
    choices = doc.get("choices")
    if type(choices) is not list:
        return []
    out: list[_Piece] = []
    for choice in choices:
        delta = choice.get("delta") if type(choice) is dict else None
        if type(delta) is dict and type(delta.get("content")) is str:
            out.append((delta, "content"))
    return out


def _messages_pieces(doc: dict[str, Any]) -> list[_Piece]:
    delta = doc.get("delta")
    if type(delta) is dict and type(delta.get("text")) is str:
        return [(delta, "text")]
    return []


def _responses_pieces(doc: dict[str, Any]) -> list[_Piece]:
    if doc.get("type") == "response.output_text.delta" and type(doc.get("delta")) is str:
        return [(doc, "delta")]
    return []


def _gemini_pieces(doc: dict[str, Any]) -> list[_Piece]:
    out: list[_Piece] = []
    for candidate in doc.get("candidates") or ():
        content = candidate.get("content") if type(candidate) is dict else None
        if type(content) is not dict:
            continue
        for part in content.get("parts") or ():
            if type(part) is dict and part.get("thought") is not True and type(
                part.get("text")
            ) is str:
                out.append((part, "text"))
    return out


_PIECES: dict[str, Callable[[dict[str, Any]], list[_Piece]]] = {
    "completions": _completion_pieces,
    "messages": _messages_pieces,
    "responses": _responses_pieces,
    "generateContent": _gemini_pieces,
}


def _mask_summary(doc: dict[str, Any], mask: RegexMatcher) -> bool:
    """Responses events that repeat the whole text: masked as a whole. True if changed."""
    kind = doc.get("type")
    targets: list[_Piece] = []
    if kind == "response.output_text.done":
        targets.append((doc, "text"))
    elif kind == "response.content_part.done":
        part = doc.get("part")
        if type(part) is dict:
            targets.append((part, "text"))
    elif kind == "response.output_item.done":
        item = doc.get("item")
        if type(item) is dict:
            targets += _output_texts([item])
    elif kind in ("response.completed", "response.incomplete"):
        response = doc.get("response")
        if type(response) is dict and type(response.get("output")) is list:
            targets += _output_texts(response["output"])
    changed = False
    for owner, key in targets:
        text = owner.get(key)
        if type(text) is str:
            masked = mask.mask(text)
            if masked is not None:
                owner[key] = masked
                changed = True
    return changed


def _output_texts(items: list[Any]) -> list[_Piece]:
    out: list[_Piece] = []
    for item in items:
        if type(item) is dict and item.get("type") == "message":
            for part in item.get("content") or ():
                if type(part) is dict and part.get("type") == "output_text":
                    out.append((part, "text"))
    return out
