"""Whether each worker reaches the shared-limits store (Redis), for `/metrics`.

One small anonymous MAP_SHARED region mapped before the workers fork: per worker, its state
(0 not tried yet, 1 reachable, 2 unreachable) and how many attempts failed. The workers write
their own pair; the stats process reads them all.
"""

from __future__ import annotations

import mmap

__all__ = ["DOWN", "UNKNOWN", "UP", "StoreStatus"]

UNKNOWN, UP, DOWN = 0, 1, 2


class StoreStatus:
    __slots__ = ("_mm", "_values", "n_workers")

    def __init__(self, n_workers: int) -> None:
        self.n_workers = n_workers
        self._mm = mmap.mmap(-1, max(16 * n_workers, 16))  # MAP_SHARED | MAP_ANONYMOUS
        self._values = memoryview(self._mm).cast("d")

    def set_state(self, worker: int, state: int) -> None:
        self._values[2 * worker] = float(state)

    def count_error(self, worker: int) -> None:
        self._values[2 * worker + 1] += 1.0

    def state(self, worker: int) -> int:
        return int(self._values[2 * worker])

    def render(self) -> bytes:
        """The two series in the Prometheus text format (appended to the gateway's)."""
        states = [self.state(i) for i in range(self.n_workers)]
        up = 0 if DOWN in states else 1
        errors = sum(self._values[2 * i + 1] for i in range(self.n_workers))
        return (
            "# HELP agw_fast_shared_limits_store_up Whether every worker reached the shared "
            "limits store (Redis) on its last attempt (0: some cannot).\n"
            "# TYPE agw_fast_shared_limits_store_up gauge\n"
            f"agw_fast_shared_limits_store_up {up}\n"
            "# HELP agw_fast_shared_limits_store_errors_total Batches of shared limit updates "
            "that could not reach the store.\n"
            "# TYPE agw_fast_shared_limits_store_errors_total counter\n"
            f"agw_fast_shared_limits_store_errors_total {int(errors)}\n"
        ).encode()
