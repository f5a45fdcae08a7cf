"""Per model-version statistics, kept once and shown two ways: the v2 statistics endpoint and Prometheus."""

from __future__ import annotations

import threading
import time
from collections import defaultdict

__all__ = ["ModelStats"]

_DURATIONS = ("success", "fail", "queue", "compute_input", "compute_infer", "compute_output", "cache_hit", "cache_miss")


class ModelStats:
    """Counters of one model version. `inference_count` counts batch rows; `execution_count` model runs, so
    inference_count / execution_count is the batching ratio."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.last_inference_ms = 0
        self.inference_count = 0
        self.execution_count = 0
        self.durations = {k: [0, 0] for k in _DURATIONS}  # name -> [count, ns]
        self._success_rows = tuple(
            self.durations[k] for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")
        )
        self.batches: dict[int, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # size -> [count, in, infer, out ns]
        self.failures: dict[str, int] = defaultdict(int)  # reason -> count
        self.pending = 0
        # bounded work: requests refused for a full queue, dropped after their timeout while queued, and dropped
        # because their client went away before they ran
        self.dropped: dict[str, int] = {"rejected": 0, "timeout": 0, "cancelled": 0}

    def queued(self, delta: int) -> None:
        with self._lock:
            self.pending += delta

    def execution(self, batch_size: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        with self._lock:
            self.execution_count += 1
            self.inference_count += batch_size
            self.last_inference_ms = int(time.time() * 1000)
            b = self.batches[batch_size]
            b[0] += 1
            b[1] += input_ns
            b[2] += infer_ns
            b[3] += output_ns

    def success(self, total_ns: int, queue_ns: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        d = self._success_rows
        with self._lock:
            d[0][0] += 1
            d[0][1] += total_ns
            d[1][0] += 1
            d[1][1] += queue_ns
            d[2][0] += 1
            d[2][1] += input_ns
            d[3][0] += 1
            d[3][1] += infer_ns
            d[4][0] += 1
            d[4][1] += output_ns

    def failure(self, total_ns: int, reason: str) -> None:
        with self._lock:
            d = self.durations["fail"]
            d[0] += 1
            d[1] += total_ns
            self.failures[reason] += 1

    def drop(self, why: str) -> None:
        """Count a request that never ran: "rejected" (queue full), "timeout" or "cancelled"."""
        with self._lock:
            self.dropped[why] += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {
                "last_inference": self.last_inference_ms,
                "inference_count": self.inference_count,
                "execution_count": self.execution_count,
                "durations": {k: tuple(v) for k, v in self.durations.items()},
                "batches": {k: tuple(v) for k, v in sorted(self.batches.items())},
                "failures": dict(self.failures),
                "pending": self.pending,
                "dropped": dict(self.dropped),
            }

    def to_v2(self, name: str, version: int) -> dict:
        """This version's entry of the v2 statistics response (`model_stats[i]`)."""
        s = self.snapshot()
        return {
            "name": name,
            "version": str(version),
            "last_inference": s["last_inference"],
            "inference_count": s["inference_count"],
            "execution_count": s["execution_count"],
            "inference_stats": {k: {"count": c, "ns": ns} for k, (c, ns) in s["durations"].items()},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": {"count": c, "ns": i},
                    "compute_infer": {"count": c, "ns": n},
                    "compute_output": {"count": c, "ns": o},
                }
                for size, (c, i, n, o) in s["batches"].items()
            ],
        }
