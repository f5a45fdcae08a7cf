"""Request scheduling for one model version: a queue served by one worker thread per execution instance.

Without dynamic batching each worker takes one request at a time. With it, a worker takes the oldest request
and merges the compatible requests behind it (same shapes past the batch dim) up to max_batch_size, waiting up
to max_queue_delay for a full or preferred-size batch, as Triton's dynamic batcher does. Merging, running and
splitting go through `batching.run_batch`.

The queue is bounded (`max_queue_size`; 0 = unbounded): a request over the bound is refused at once with
`QueueFull`. A queued request whose future is cancelled (its client went away, its timeout passed) leaves the
queue at once and never runs. `on_error(instance, exc)` hears of every failed run, e.g. to restart a crashed
isolated instance before the worker takes its next request.

Inline runs: without dynamic batching, a cheap model (its recent runs average under `INLINE_NS`) whose queue is
empty and which has an idle instance runs a request on the caller's thread (the server's event loop) instead of
handing it to a worker thread and back: two thread switches and a loop wake-up less per request, which is most
of the serving cost of a sub-millisecond model. `run_inline` lends the idle worker's runner for that run; the
worker takes no request until it is back. Only in-process instances run inline (`inline=True`).
"""

from __future__ import annotations

import asyncio
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

__all__ = ["Scheduler", "Completed", "INLINE_NS"]
log = logging.getLogger(__name__)
#: A model whose runs average less than this (nanoseconds) may run inline, on the caller's thread
INLINE_NS = 1_000_000
_EMA = 0.1  # weight of the latest run in the moving average of run times
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
    waiter: asyncio.Future | None = None  # the awaiting loop's future (`submit_async`), resolved from `future`


def _resolve(items: list[_Pending]) -> None:
    """On the awaiting loop: pass each request's outcome from its thread future to its loop future."""
    for item in items:
        waiter, future = item.waiter, item.future
        if waiter is None or waiter.done():
            continue
        if future.cancelled():
            waiter.cancel()
        elif future.exception() is not None:
            waiter.set_exception(future.exception())
        else:
            waiter.set_result(future.result())


def _answer_loops(items: list[_Pending]) -> None:
    """Wake each awaiting loop once for all of its requests in `items` (not once per request, as
    `asyncio.wrap_future` does): one self-pipe write and one callback per batch."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}
    for item in items:
        if item.waiter is not None:
            by_loop.setdefault(item.waiter.get_loop(), []).append(item)
    for loop, group in by_loop.items():
        try:
            loop.call_soon_threadsafe(_resolve, group)
        except RuntimeError:  # the loop is closed: nobody is waiting any more
            pass


class Scheduler:
    """Queues requests for `runners` (one run function per instance, each used by one thread only)."""

    def __init__(
        self,
        name: str,
        runners: Sequence[RunFn],
        output_names: Sequence[str],
        stats: ModelStats,
        *,
        max_batch_size: int = 0,
        batching: BatchingPolicy | None = None,
        static_batch: int | None = None,
        max_queue_size: int | None = None,
        on_error: Callable[[int, BaseException], None] | None = None,
        inline: bool = False,
    ) -> None:
        self.name = name
        self._output_names = tuple(output_names)
        self._stats = stats
        self._max_rows = max_batch_size if batching is not None and max_batch_size > 0 else 0
        self._policy = batching
        self._static_batch = static_batch
        self._queue: deque[_Pending] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._collecting = 0  # workers waiting for their batch to fill (until max_queue_delay)
        self._queued_rows = 0
        preferred = batching.preferred_sizes if batching is not None else ()
        self._full_rows = min(self._max_rows, preferred[-1]) if preferred and self._max_rows else self._max_rows
        if max_queue_size is None:
            max_queue_size = batching.max_queue_size if batching is not None else 0
        self.max_queue_size = max_queue_size
        self._on_error = on_error
        self._runners = list(runners)
        self._inline = inline and not self._max_rows  # with dynamic batching, requests wait to be merged
        self._run_ns: float | None = None  # moving average of the run times (whole batches)
        self._runs = 0
        self._free: list[int] = []  # workers waiting for a request, their runner not lent out
        self._lent: set[int] = set()  # workers whose runner runs an inline request
        self._threads = [
            threading.Thread(target=self._worker, args=(i, run), name=f"unirt-serve-{name}-{i}", daemon=True)
            for i, run in enumerate(runners)
        ]
        for t in self._threads:
            t.start()

    def run_inline(self, feeds: dict[str, np.ndarray], size: int) -> Completed | None:
        """Run one request on this thread if the model is cheap, nothing is queued and an instance is idle;
        None (nothing done) otherwise: `submit` it then. A failed run raises its exception."""
        if not self._inline or self._run_ns is None or self._run_ns >= INLINE_NS:
            return None
        with self._cond:
            if self._queue or not self._free or self._stopping:
                return None
            index = self._free.pop()
            self._lent.add(index)
        try:
            result = run_batch(
                self._runners[index], [feeds], [size], self._output_names, static_batch=self._static_batch
            )
            self._ran(size, result.input_ns, result.infer_ns, result.output_ns)
            return Completed(result.outputs[0], 0, result.input_ns, result.infer_ns, result.output_ns, size)
        finally:
            with self._cond:
                self._lent.discard(index)
                self._free.append(index)  # its worker is still waiting in _take
                if self._queue or self._stopping:
                    self._cond.notify_all()

    def _ran(self, rows: int, input_ns: int, infer_ns: int, output_ns: int) -> None:
        self._stats.execution(rows, input_ns, infer_ns, output_ns)
        took = input_ns + infer_ns + output_ns
        self._runs += 1  # the mean of the first runs, then a moving average
        self._run_ns = (
            took if self._run_ns is None else self._run_ns + max(_EMA, 1 / self._runs) * (took - self._run_ns)
        )

    def submit(self, feeds: dict[str, np.ndarray], size: int) -> Future:
        """Queue one request of `size` batch rows; the future resolves to a `Completed`."""
        return self._submit(_Pending(feeds, size, batch_key(feeds))).future

    def submit_async(self, feeds: dict[str, np.ndarray], size: int) -> tuple[Future, asyncio.Future]:
        """`submit` from a running event loop: (the thread future, to cancel; an asyncio future of this loop, to
        await). A batch's answers reach the loop in one wake-up."""
        item = _Pending(feeds, size, batch_key(feeds), waiter=asyncio.get_running_loop().create_future())
        self._submit(item)
        assert item.waiter is not None
        return item.future, item.waiter

    def _submit(self, item: _Pending) -> _Pending:
        size = item.size
        with self._cond:
            if self._stopping:
                raise Unavailable(f"model {self.name!r} is being unloaded")
            if self.max_queue_size and len(self._queue) >= self.max_queue_size:
                self._stats.drop("rejected")
                raise QueueFull(
                    f"model {self.name!r}: exceeds the maximum queue size ({self.max_queue_size} "
                    "requests waiting); retry later"
                )
            self._queue.append(item)
            self._queued_rows += size
            self._stats.queued(+1)
            # A worker collecting a batch needs waking only when the batch may be full or cannot grow (this
            # request does not fit it); otherwise its delay timer wakes it. Fewer wake-ups: less GIL traffic
            # between the workers and the event loop that decodes the requests.
            if self._lent:  # a lent worker would take the wake-up and wait on: wake them all
                self._cond.notify_all()
            elif self._free or (
                self._collecting and (self._queued_rows >= self._full_rows or item.key != self._queue[0].key)
            ):
                self._cond.notify()
        item.future.add_done_callback(lambda f: f.cancelled() and self._forget(item))
        return item

    def _forget(self, item: _Pending) -> None:
        """A queued request was cancelled: take it out of the queue now (if no worker took it already)."""
        with self._cond:
            for i, queued in enumerate(self._queue):
                if queued is item:
                    del self._queue[i]
                    self._queued_rows -= item.size
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
            self._queued_rows = 0
        for item in left:
            if item.future.set_running_or_notify_cancel():
                item.future.set_exception(Unavailable(f"model {self.name!r} was unloaded before this request ran"))
        _answer_loops(left)

    # -- workers ---------------------------------------------------------------------------------------------
    def _worker(self, index: int, run: RunFn) -> None:
        while True:
            batch = self._take(index)
            if batch is None:
                return
            failed = self._execute(run, batch)
            if failed is not None and self._on_error is not None:
                try:
                    self._on_error(index, failed)
                except Exception:  # the worker must go on serving
                    log.exception("model %r instance %d: error handler failed", self.name, index)

    def _take(self, index: int) -> list[_Pending] | None:
        with self._cond:
            self._free.append(index)
            try:
                while not self._queue or index in self._lent:
                    if self._stopping and index not in self._lent:
                        return None
                    self._cond.wait()
            finally:
                if index in self._free:
                    self._free.remove(index)
            if not self._max_rows:
                item = self._queue.popleft()
                self._queued_rows -= item.size
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
            self._collecting += 1
            try:
                self._cond.wait((deadline - now) / 1e9)
            finally:
                self._collecting -= 1
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
        self._queued_rows -= sum(item.size for item in batch)
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
        taken = batch
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not batch:
            return None
        started = time.perf_counter_ns()
        sizes = [item.size for item in batch]
        try:
            result = run_batch(
                run, [item.feeds for item in batch], sizes, self._output_names, static_batch=self._static_batch
            )
        except BaseException as exc:  # every waiting request must hear about it
            for item in batch:
                item.future.set_exception(exc)
            _answer_loops(taken)
            return exc
        total = sum(sizes)
        self._ran(total, result.input_ns, result.infer_ns, result.output_ns)
        for item, outputs in zip(batch, result.outputs):
            item.future.set_result(
                Completed(outputs, started - item.enqueued, result.input_ns, result.infer_ns, result.output_ns, total)
            )
        _answer_loops(taken)
        return None
