"""Run a function on several threads and fail loudly: an exception in any thread is raised in the caller.

A bare `threading.Thread` swallows its target's exception (it is only printed), so a concurrency test that records
mismatches in a list passes when a worker crashed. `run_concurrently` collects every worker's exception, joins
with a deadline (a thread still running then is a deadlock) and raises the first failure with the others listed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

__all__ = ["run_concurrently", "ThreadsFailed"]

JOIN_SECONDS = 60.0


class ThreadsFailed(AssertionError):
    """One or more worker threads raised or hung; `.failures` holds (thread index, exception) pairs."""

    def __init__(self, message: str, failures: list[tuple[int, BaseException]]) -> None:
        super().__init__(message)
        self.failures = failures


def run_concurrently(
    target: Callable[[int], Any], n: int, *, timeout: float = JOIN_SECONDS, start_together: bool = True
) -> list[Any]:
    """Call `target(i)` for i in range(n), each on its own thread; return their results in order.

    With `start_together` the threads wait at a barrier so their calls overlap. Raises `ThreadsFailed` (an
    AssertionError, chained to the first exception) if any call raised or a thread was still running after
    `timeout` seconds.
    """
    results: list[Any] = [None] * n
    failures: list[tuple[int, BaseException]] = []
    barrier = threading.Barrier(n) if start_together and n > 1 else None

    def guarded(i: int) -> None:
        try:
            if barrier is not None:
                barrier.wait(timeout)
            results[i] = target(i)
        except BaseException as exc:  # every failure, KeyboardInterrupt included, is reported to the caller
            failures.append((i, exc))

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True, name=f"run_concurrently-{i}") for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    hung = [i for i, t in enumerate(threads) if t.is_alive()]
    if hung:
        raise ThreadsFailed(f"threads {hung} still running after {timeout} s (a deadlock?)", failures)
    if failures:
        failures.sort(key=lambda f: f[0])
        listed = "; ".join(f"thread {i}: {type(e).__name__}: {e}" for i, e in failures[:5])
        raise ThreadsFailed(f"{len(failures)} of {n} threads failed: {listed}", failures) from failures[0][1]
    return results
