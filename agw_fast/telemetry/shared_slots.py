"""Per-worker metrics published through shared memory, with no IPC on the request path.

The parent creates one anonymous shared mapping before it forks; each worker owns a slot and
publishes its registry's snapshot there (a seqlock over two buffers, with a CRC), and the
process serving `/metrics` reads and sums every slot.
"""

from __future__ import annotations

import logging
import math
import mmap
import struct
import time
import zlib
from collections.abc import Callable

from agw_fast.telemetry.metrics import MetricsRegistry, Snapshot

__all__ = ["DEFAULT_SLOT_SIZE", "Publisher", "SharedSlots"]

_log = logging.getLogger(__name__)

_HEADER = struct.Struct("<QI4x")
_SEQ = struct.Struct("<Q")
_ACTIVE = struct.Struct("<I")
_BUFFER = struct.Struct("<II")
DEFAULT_SLOT_SIZE = 1024 * 1024
_READ_ATTEMPTS = 200
_FAST_RETRIES = 20


class SharedSlots:
    """One publish slot per worker in an anonymous shared mmap.

    Create it in the parent *before* forking: `mmap(-1, …)` is MAP_SHARED, so the children
    and the parent see the same pages. `slot_size` is the largest payload a slot accepts.
    """

    __slots__ = ("_capacity", "_mm", "_n", "_stride", "_warned")

    def __init__(self, n_slots: int, slot_size: int = DEFAULT_SLOT_SIZE) -> None:
        if n_slots < 1 or slot_size < 1:
            raise ValueError("n_slots and slot_size must be positive")
        self._n = n_slots
        self._capacity = slot_size
        stride = _HEADER.size + 2 * (_BUFFER.size + slot_size)
        self._stride = (stride + 63) & ~63  # cache-line aligned: no false sharing
        self._mm = mmap.mmap(-1, n_slots * self._stride)
        self._warned = False

    @property
    def n_slots(self) -> int:
        return self._n

    @property
    def slot_size(self) -> int:
        return self._capacity

    def close(self) -> None:
        self._mm.close()

    def _buffer_offset(self, base: int, which: int) -> int:
        return base + _HEADER.size + which * (_BUFFER.size + self._capacity)

    def publish(self, index: int, payload: bytes) -> bool:
        """Write `payload` into slot `index`; False (and one warning) if it does not fit."""
        if not 0 <= index < self._n:
            raise IndexError(f"slot {index} out of range")
        size = len(payload)
        if size > self._capacity:
            if not self._warned:
                self._warned = True
                _log.warning(
                    "metrics snapshot of %d bytes exceeds the %d-byte slot; not published",
                    size,
                    self._capacity,
                )
            return False
        mm = self._mm
        base = index * self._stride
        seq, active = _HEADER.unpack_from(mm, base)
        if seq & 1:
            seq += 1  # the previous writer died mid-write; its buffer was the inactive one
        target = active ^ 1
        _SEQ.pack_into(mm, base, seq + 1)
        offset = self._buffer_offset(base, target)
        mm[offset + _BUFFER.size : offset + _BUFFER.size + size] = payload
        _BUFFER.pack_into(mm, offset, size, zlib.crc32(payload))
        _ACTIVE.pack_into(mm, base + _SEQ.size, target)
        _SEQ.pack_into(mm, base, seq + 2)
        return True

    def read_payload(self, index: int) -> bytes | None:
        """The last complete payload of slot `index`, or None if it was never written."""
        if not 0 <= index < self._n:
            raise IndexError(f"slot {index} out of range")
        mm = self._mm
        base = index * self._stride
        for attempt in range(_READ_ATTEMPTS):
            seq, active = _HEADER.unpack_from(mm, base)
            if seq == 0:
                return None
            offset = self._buffer_offset(base, active & 1)
            size, crc = _BUFFER.unpack_from(mm, offset)
            if size <= self._capacity:
                data = mm[offset + _BUFFER.size : offset + _BUFFER.size + size]
                # An unchanged seq, even if odd, means the buffer read was not the one being
                # written: writers only fill the inactive buffer.
                if _SEQ.unpack_from(mm, base)[0] == seq and zlib.crc32(data) == crc:
                    return data
            if attempt >= _FAST_RETRIES:
                time.sleep(0.001)
        _log.warning("metrics slot %d stayed inconsistent; skipped", index)
        return None

    def is_published(self, index: int) -> bool:
        """Whether slot `index` was ever written: a cheap check for readiness probes."""
        if not 0 <= index < self._n:
            raise IndexError(f"slot {index} out of range")
        return bool(_SEQ.unpack_from(self._mm, index * self._stride)[0])

    def read(self, index: int) -> Snapshot | None:
        payload = self.read_payload(index)
        if payload is None:
            return None
        try:
            return Snapshot.decode(payload)
        except ValueError:
            _log.warning("metrics slot %d holds an unreadable snapshot", index)
            return None

    def read_all(self) -> list[Snapshot]:
        """Snapshots of every slot that holds one, in slot order."""
        return [snap for i in range(self._n) if (snap := self.read(i)) is not None]


class Publisher:
    """Publishes a worker's registry into its slot at most every `interval_s` when dirty."""

    __slots__ = ("_clock", "_index", "_interval", "_last", "_registry", "_slots")

    def __init__(
        self,
        registry: MetricsRegistry,
        slots: SharedSlots,
        index: int,
        *,
        interval_s: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._registry = registry
        self._slots = slots
        self._index = index
        self._interval = interval_s
        self._clock = clock
        self._last = -math.inf

    def maybe_publish(self) -> bool:
        """Cheap when idle; True if a snapshot was written."""
        if not self._registry.dirty or self._clock() - self._last < self._interval:
            return False
        return self.publish_now()

    def publish_now(self) -> bool:
        self._last = self._clock()
        payload = self._registry.encode_snapshot()
        # Clean even if the slot rejects it: retrying an oversized payload cannot succeed.
        self._registry.mark_clean()
        return self._slots.publish(self._index, payload)
