"""Request scheduling for one model version: a queue served by one worker thread per execution instance.

Without dynamic batching each worker takes one request at a time. With it, a worker takes the oldest request
and merges the compatible requests behind it (same shapes past the batch dim) up to max_batch_size, waiting up
to max_queue_delay for a full or preferred-size batch, as Triton's dynamic batcher does. Merging, running and
splitting go through `batching.run_batch`.

The queue is bounded (`max_queue_size`; 0 = unbounded): a request over the bound is refused at once with
`QueueFull`. A queued request whose future is cancelled (its client went away, its timeout passed) leaves the
queue at once and never runs. `on_error(instance, exc)` hears of every failed run, e.g. to restart a crashed
isolated instance before the worker takes its next request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from .batching import batch_key, run_batch
from .config import BatchingPolicy
from .errors import QueueFull, Unavailable
from .stats import ModelStats

__all__ = ["Scheduler", "Completed"]
log = logging.getLogger(__name__)
RunFn = Callable[[dict[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]


@dataclass
class Completed:
    """A request's outputs and its share of the timings (nanoseconds)."""

    outputs: dict[str, np.ndarray]
    queue_ns: int
    input_ns: int
    infer_ns: int
    output_ns: int
    batch_size: int


@dataclass(eq=False)  # identity: a cancelled request is removed from the queue by `is`
class _Pending:
    feeds: dict[str, np.ndarray]
    size: int
    key: tuple
    future: Future = field(default_factory=Future)
    enqueued: int = field(default_factory=time.perf_counter_ns)


class Scheduler:
    """Queues requests for `runners` (one run function per instance, each used by one thread only)."""

    def __init__(self, name: str, runners: Sequence[RunFn], output_names: Sequence[str], stats: ModelStats, *,
                 max_batch_size: int = 0, batching: BatchingPolicy | None = None,
                 static_batch: int | None = None, max_queue_size: int | None = None,
                 on_error: Callable[[int, BaseException], None] | None = None) -> None:
        self.name = name
        self._output_names = tuple(output_names)
        self._stats = stats
        self._max_rows = max_batch_size if batching is not None and max_batch_size > 0 else 0
        self._policy = batching
        self._static_batch = static_batch
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        if max_queue_size is None:
            max_queue_size = batching.max_queue_size if batching is not None else 0
        self.max_queue_size = max_queue_size
        self._on_error = on_error
        self._threads = [threading.Thread(target=self._worker, args=(i, run), name=f"unirt-serve-{name}-{i}",
                                          daemon=True) for i, run in enumerate(runners)]
        for t in self._threads:
            t.start()

    def submit(self, feeds: dict[str, np.ndarray], size: int) -> Future:
        """Queue one request of `size` batch rows; the future resolves to a `Completed`."""
        item = _Pending(feeds, size, batch_key(feeds))
        with self._cond:
            if self._stopping:
                raise Unavailable(f"model {self.name!r} is being unloaded")
            if self.max_queue_size and len(self._queue) >= self.max_queue_size:
                self._stats.drop("rejected")
                raise QueueFull(f"model {self.name!r}: exceeds the maximum queue size ({self.max_queue_size} "
                                "requests waiting); retry later")
            self._queue.append(item)
            self._stats.queued(+1)
            self._cond.notify()
        item.future.add_done_callback(lambda f: f.cancelled() and self._forget(item))
        return item.future

    def _forget(self, item: _Pending) -> None:
        """A queued request was cancelled: take it out of the queue now (if no worker took it already)."""
        with self._cond:
            for i, queued in enumerate(self._queue):
                if queued is item:
                    del self._queue[i]
                    self._stats.queued(-1)
                    break

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking requests, finish the queued ones, and join the workers."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in self._threads:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        with self._cond:  # workers that did not finish in time: fail what is left rather than leave it hanging
            left, self._queue = list(self._queue), deque()
        for item in left:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(Unavailable(f"model {self.name!r} was unloaded before this request ran"))

    # -- workers ---------------------------------------------------------------------------------------------
    def _worker(self, index: int, run: RunFn) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            failed = self._execute(run, batch)
            if failed is not None and self._on_error is not None:
                try:
                    self._on_error(index, failed)
                except Exception:  # the worker must go on serving
                    log.exception("model %r instance %d: error handler failed", self.name, index)

    def _take(self) -> list[_Pending] | None:
        with self._cond:
            while not self._queue:
                if self._stopping:
                    return None
                self._cond.wait()
            if not self._max_rows:
                item = self._queue.popleft()
                self._stats.queued(-1)
                return [item]
            return self._take_batch()

    def _take_batch(self) -> list[_Pending]:
        """Called with the lock held and the queue non-empty."""
        policy = self._policy
        assert policy is not None
        delay = int(policy.max_queue_delay_s * 1e9)
        while True:
            deadline = self._queue[0].enqueued + delay
            count, rows = self._compatible_prefix()
            preferred = policy.preferred_sizes
            full = rows >= self._max_rows or (preferred and rows >= preferred[-1])
            now = time.perf_counter_ns()
            if full or now >= deadline or self._stopping or count < len(self._queue):
                break  # a full batch, time is up, or the next request cannot join this batch anyway
            self._cond.wait((deadline - now) / 1e9)
            if not self._queue:  # another worker took them
                return []
        if preferred:  # the largest preferred size the queue's prefix can make, if any
            sums, total = [], 0
            for item in list(self._queue)[:count]:
                total += item.size
                sums.append(total)
            best = max((i + 1 for i, s in enumerate(sums) if s in preferred), default=count)
            count = best
        batch = [self._queue.popleft() for _ in range(count)]
        self._stats.queued(-len(batch))
        return batch

    def _compatible_prefix(self) -> tuple[int, int]:
        """How many requests from the head of the queue fit one batch, and their rows."""
        key, rows, count = self._queue[0].key, 0, 0
        for item in self._queue:
            if item.key != key or rows + item.size > self._max_rows:
                break
            rows += item.size
            count += 1
        return count, rows

    def _execute(self, run: RunFn, batch: list[_Pending]) -> BaseException | None:
        """Run one batch and answer its requests; the exception when the run failed."""
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not batch:
            return None
        started = time.perf_counter_ns()
        sizes = [item.size for item in batch]
        try:
            result = run_batch(run, [item.feeds for item in batch], sizes, self._output_names,
                               static_batch=self._static_batch)
        except BaseException as exc:  # every waiting request must hear about it
            for item in batch:
                item.future.set_exception(exc)
            return exc
        total = sum(sizes)
        self._stats.execution(total, result.input_ns, result.infer_ns, result.output_ns)
        for item, outputs in zip(batch, result.outputs):
            item.future.set_result(Completed(outputs, started - item.enqueued, result.input_ns, result.infer_ns,
                                             result.output_ns, total))
        return None
