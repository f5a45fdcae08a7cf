"""One replica's work, without Ray: the Session, the model's v2 spec, and running a merged batch of requests.

`run_batch` is what the deployment's `@serve.batch` method hands its merged requests to: one `Session.run_many`,
so requests arriving together share backend runs. A bad request must fail alone, not take its batch-mates down:
when the merged run is refused, each request runs by itself and gets its own result or error.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...errors import UnirtError
from ...session import Session
from .options import ReplicaOptions

__all__ = ["Replica", "Failed"]
log = logging.getLogger(__name__)

DEFAULT_REQUEST_ROWS = 1024  # rows one v2 request may carry when max_batch does not say (Triton's max_batch_size)


@dataclass(frozen=True)
class Failed:
    """A request of a batch that failed on its own; the caller re-raises `error`."""

    error: BaseException


class Replica:
    """The Session a replica serves and what it did: merged batches by size, requests, rows."""

    def __init__(self, options: ReplicaOptions, replica_id: str = "") -> None:
        self.options = options
        self.replica_id = replica_id
        self.session = Session(options.model, **options.session_kwargs())
        self._spec = None
        self._lock = threading.Lock()
        self._batches: Counter[int] = Counter()
        self._requests = 0
        self._failed = 0
        log.info("replica %s: %s", replica_id or os.getpid(), self.session)

    @property
    def spec(self) -> Any:
        """The model's v2 spec (unirt serve's auto-completed config), built on first use by the HTTP front end.
        With `batched` given, its max_batch_size follows it: requests carry the batch dim exactly when the session
        takes dim 0 as one (up to a static batch's N rows)."""
        if self._spec is None:
            from ...serve.config import ModelConfig, build_spec, parse_config_text

            sess = self.session
            rows = self.options.max_batch or DEFAULT_REQUEST_ROWS
            config = ModelConfig()
            if self.options.batched is not None:
                given = (sess.batch.size or rows) if sess.batch.batched else 0
                config = parse_config_text(f"max_batch_size: {given}")
            self._spec = build_spec(
                config, self.options.name, sess.inputs, sess.outputs, sess.backend, default_max_batch_size=rows
            )
        return self._spec

    def run_batch(self, requests: Sequence[Any]) -> list[dict[str, np.ndarray] | Failed]:
        """Run merged requests (each what `Session.run` takes); one result dict or `Failed` per request."""
        with self._lock:
            self._batches[len(requests)] += 1
            self._requests += len(requests)
        try:
            results: list[dict[str, np.ndarray] | Failed] = list(self.session.run_many(list(requests)))
        except UnirtError as exc:
            if len(requests) == 1:
                results = [Failed(exc)]
            else:  # someone's request spoiled the merged run: give every request its own answer
                results = [self._run_one(r) for r in requests]
        failed = sum(isinstance(r, Failed) for r in results)
        if failed:
            with self._lock:
                self._failed += failed
        return results

    def _run_one(self, feeds: Any) -> dict[str, np.ndarray] | Failed:
        try:
            return self.session.run(feeds)
        except UnirtError as exc:
            return Failed(exc)

    def stats(self) -> dict[str, Any]:
        """What this replica did: requests, merged batches by size (requests per `run_many`), and the session's
        batching (`backend_runs` < `requests` when merging paid off)."""
        with self._lock:
            sizes = dict(sorted(self._batches.items()))
            requests, failed = self._requests, self._failed
        batch = self.session.batch_stats()
        return {
            "replica": self.replica_id,
            "pid": os.getpid(),
            "model": self.options.name,
            "backend": self.session.backend,
            "device": self.session.device,
            "threads": self.options.threads,
            "requests": requests,
            "failed": failed,
            "batches": sum(sizes.values()),
            "batch_sizes": sizes,
            "max_batch_seen": max(sizes, default=0),
            "session": {
                "requests": batch.requests,
                "backend_runs": batch.backend_runs,
                "rows": batch.rows,
                "padded_rows": batch.padded_rows,
                "split_requests": batch.split_requests,
                "unbatched_requests": batch.unbatched_requests,
            },
        }

    def close(self) -> None:
        self.session.close()
