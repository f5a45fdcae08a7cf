"""A handle that re-sends a request whose replica died before answering.

Ray Serve replaces a dead replica, but a request that was running on it fails with `ActorDiedError`: Ray cannot
know whether re-running it is safe. Inference is: a request reads its inputs and the model and changes nothing,
so `RetryingHandle` re-sends it (to a live replica: the router stops choosing a dead one) up to `retries` times.
Errors of the request itself (a wrong input, a failed run) are never retried; they are raised as unirt errors.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ray.exceptions import RayActorError
from ray.serve import exceptions as _serve_exceptions

__all__ = ["RetryingHandle", "RETRIED"]
log = logging.getLogger(__name__)

#: What a replica's death looks like to the caller (ActorDiedError and ActorUnavailableError are RayActorErrors).
RETRIED: tuple[type[BaseException], ...] = (RayActorError,) + tuple(
    getattr(_serve_exceptions, name) for name in ("ReplicaUnavailableError",) if hasattr(_serve_exceptions, name)
)


class RetryingHandle:
    """Wraps a `DeploymentHandle` of `UnirtDeployment`: `infer` (blocking) and `infer_async` send one request
    and re-send it when its replica died, after `backoff_s` (doubling), at most `retries` times."""

    def __init__(self, handle: Any, retries: int = 3, backoff_s: float = 0.05) -> None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
        self.handle = handle
        self.retries = retries
        self.backoff_s = backoff_s
        self.retried = 0  # re-sends so far, for the caller's monitoring
        self._lock = threading.Lock()

    def infer(
        self, feeds: Any, output_names: Sequence[str] | None = None, *, timeout_s: float | None = None
    ) -> dict[str, np.ndarray]:
        for attempt in range(self.retries + 1):
            try:
                return self.handle.remote(feeds, output_names).result(timeout_s=timeout_s)
            except RETRIED as exc:
                self._lost(attempt, exc)
                time.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover - _lost raises on the last attempt

    async def infer_async(self, feeds: Any, output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        for attempt in range(self.retries + 1):
            try:
                return await self.handle.remote(feeds, output_names)
            except RETRIED as exc:
                self._lost(attempt, exc)
                await asyncio.sleep(self.backoff_s * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _lost(self, attempt: int, exc: BaseException) -> None:
        if attempt >= self.retries:
            raise exc
        with self._lock:
            self.retried += 1
        log.warning(
            "the replica serving a request died (%s); re-sending it (retry %d of %d)",
            type(exc).__name__,
            attempt + 1,
            self.retries,
        )
