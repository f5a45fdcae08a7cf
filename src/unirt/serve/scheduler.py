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

With (adaptive) dynamic batching, a cheap in-process model batches on the event loop: `submit_async` collects
the requests that arrive within one loop turn, and one callback at the end of the turn (`_flush`) runs them as
batches on an idle instance's lent runner and answers them there: no thread hop, no queue delay. What does not
fit the turn's time budget (`INLINE_BATCH_NS`), or finds every instance busy or requests queued before it, goes
to the queue, where a worker takes it without waiting max_queue_delay (its loop turn was its batching window).

Adaptive batch size: a batch is worth its rows only while the time per row falls as the batch grows. On a CPU it
often does not (a CNN's activations outgrow the cache: per-row time rises with the batch), and then waiting for and
merging requests costs throughput. `BatchCosts` keeps the time per row by batch size class (1, 2-3, 4-7, ...; CPU
time where the engine computes on the running thread, else wall time with the wait for the batch to fill) and caps
batches at the class past which it stops falling, trying a larger class, or one row at a time again, now and then; a
model whose batches do not pay runs one request at a time, without waiting max_queue_delay, inline when cheap.
Models with preferred batch sizes or a fixed batch dim are not capped: their configs say what pays.
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

__all__ = ["Scheduler", "Completed", "BatchCosts", "INLINE_NS", "INLINE_BATCH_NS"]
log = logging.getLogger(__name__)
#: A model whose runs average less than this (nanoseconds) may run inline, on the caller's thread
INLINE_NS = 1_000_000
#: The most time (nanoseconds, estimated) one event-loop turn spends running collected batches inline
INLINE_BATCH_NS = 2_000_000
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
    gathered: bool = False  # collected on the loop for a turn already: a worker does not wait to batch it


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


#: BatchCosts compares CPU time where runs spend at least this share of their time on the CPU of their thread
_CPU_BOUND = 0.3
_EXPLORE = (1, 0, 2, 0)  # what BatchCosts tries in turn: 1 or 2 classes above the cheapest, 0: one row at a time


class BatchCosts:
    """The model's time per row by batch size class (class k: 2**k to 2**(k+1) - 1 rows) and the batch size cap it
    implies: the top of the cheapest class per row, where a larger class must be cheaper by `gain` to count. The
    time is the CPU time of the running thread where the engine computes there (an in-process CPU engine at one
    thread: at least `_CPU_BOUND` of the wall time), else the wall time (a GPU, a child process, a thread pool).
    CPU time is what a CPU-bound run costs the machine, and it does not count waits for the GIL or for a CPU the
    OS gave to another process, which inflate the wall time of small batches most on a busy machine; for the
    worker, the wall time includes its wait for the batch to fill. A class's time is the lower quartile of its
    last `samples` runs (interruptions make runs longer, never shorter). One row at a time is measured first; a
    class above the cheapest that was never measured is tried once as soon as it is next; every `explore_every`
    runs one class above, one row at a time, two classes above, one row at a time, ... are tried in turn. A try
    lasts until a batch of such a size has run, or `window` runs (a batch forms only when requests come together:
    at low load it does not, and the model runs one row at a time). So the cap follows the model as loads change
    and recovers from a class measured at a bad moment, and a try costs little where batches do not form. The
    first run of each batch size is not counted: engines plan memory for a new shape on its first run."""

    def __init__(
        self, max_rows: int, *, gain: float = 0.1, explore_every: int = 64, samples: int = 16, window: int = 4
    ) -> None:
        self.max_rows = max_rows
        self.gain = gain
        self.explore_every = explore_every
        self.window = window
        classes = max(1, max_rows.bit_length())
        self.per_row: list[float | None] = [None] * classes  # by the metric in use (CPU or wall time)
        self._wall: list[deque[float]] = [deque(maxlen=samples) for _ in range(classes)]
        self._cpu: list[deque[float]] = [deque(maxlen=samples) for _ in range(classes)]
        self._wall_sum = self._cpu_sum = 0.0
        self.by_cpu = False
        self._seen: set[int] = set()
        self._runs = 0
        self._exploring = 0  # runs left to try the class `_explore` classes off the best one
        self._explore = 0
        self._tries = 0
        self._probed: set[int] = set()  # unmeasured classes tried once already
        self._from = 0  # the cheapest class when the try began
        self.cap = max_rows  # nothing measured: any size

    def record(self, rows: int, ns: float, cpu_ns: float | None = None) -> None:
        """One run of `rows` rows took `ns` (`cpu_ns` of CPU time on the running thread): update its class and the
        cap."""
        self._runs += 1
        k = self._class(rows)
        counted = rows in self._seen
        if not counted:  # its first run: a new shape's set-up, not its cost
            self._seen.add(rows)
        else:
            cpu_ns = ns if cpu_ns is None else cpu_ns
            self._wall[k].append(ns / rows)
            self._cpu[k].append(cpu_ns / rows)
            self._wall_sum += ns
            self._cpu_sum += cpu_ns
            by_cpu = self._cpu_sum >= _CPU_BOUND * self._wall_sum
            if by_cpu != self.by_cpu:
                self.by_cpu = by_cpu
                self.per_row = [self._quartile(j) for j in range(len(self.per_row))]
            else:
                self.per_row[k] = self._quartile(k)
        best = self._best()
        if best < 0:
            return
        top = len(self.per_row) - 1
        if self._exploring:
            tried = counted and (k > self._from if self._explore else k < self._from)
            self._exploring = 0 if tried else self._exploring - 1
        if not self._exploring:
            if best < top and self.per_row[best + 1] is None and best + 1 not in self._probed:
                self._probed.add(best + 1)  # the next class up, never measured: try it once now
                self._explore, self._exploring, self._from = 1, self.window, best
            elif self._runs % self.explore_every == 0:
                self._explore = _EXPLORE[self._tries % len(_EXPLORE)]
                self._tries += 1
                self._exploring, self._from = (self.window if self._explore or best else 0), best
        if self.per_row[0] is None:  # one row at a time first: the baseline batches must beat
            best = 0
        elif self._exploring:
            best = min(top, best + self._explore) if self._explore else 0
        self.cap = min(self.max_rows, (1 << (best + 1)) - 1)

    def _quartile(self, k: int) -> float | None:
        samples = sorted(self._cpu[k] if self.by_cpu else self._wall[k])
        return samples[len(samples) // 4] if samples else None

    def _class(self, rows: int) -> int:
        return min(max(rows, 1).bit_length() - 1, len(self.per_row) - 1)

    def _best(self) -> int:
        """The cheapest class per row (-1: none measured); a larger one must be cheaper by `gain`."""
        best, best_ns = -1, 0.0
        for k, v in enumerate(self.per_row):
            if v is not None and (best < 0 or v < best_ns * (1 - self.gain)):
                best, best_ns = k, v
        return best

    def row_ns(self, rows: int) -> float | None:
        """The measured time per row of a batch of `rows` (of its class; else of the nearest class measured)."""
        k = self._class(rows)
        for d in range(len(self.per_row)):
            for j in (k - d, k + d):
                if 0 <= j < len(self.per_row) and self.per_row[j] is not None:
                    return self.per_row[j]
        return None


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
        #: per-row costs and the batch cap they imply; None: batches are not capped (preferred sizes, fixed batch)
        adaptive = self._max_rows > 1 and not preferred and static_batch is None
        self.costs = BatchCosts(self._max_rows) if adaptive else None
        if max_queue_size is None:
            max_queue_size = batching.max_queue_size if batching is not None else 0
        self.max_queue_size = max_queue_size
        self._on_error = on_error
        self._runners = list(runners)
        self._inline = inline
        # batching on the loop: for adaptive batching only (preferred sizes and a fixed batch dim want the delay)
        self._gather = inline and self.costs is not None
        self._run_ns: float | None = None  # moving average of the run times (whole batches)
        self._row_ns: float | None = None  # moving average of the run times per row
        self._runs = 0
        self._free: list[int] = []  # workers waiting for a request, their runner not lent out
        self._lent: set[int] = set()  # workers whose runner runs an inline request
        self._gathering: dict[asyncio.AbstractEventLoop, list[_Pending]] = {}  # collected this loop turn
        self._gathered = 0
        self._waited: dict[int, int] = {}  # worker -> how long it waited for its batch to fill (ns)
        self._threads = [
            threading.Thread(target=self._worker, args=(i, run), name=f"unirt-serve-{name}-{i}", daemon=True)
            for i, run in enumerate(runners)
        ]
        for t in self._threads:
            t.start()

    @property
    def batch_cap(self) -> int:
        """The most rows one batch takes now: max_batch_size, or less where larger batches do not pay (0: no
        dynamic batching)."""
        return self.costs.cap if self.costs is not None else self._max_rows

    def run_inline(self, feeds: dict[str, np.ndarray], size: int) -> Completed | None:
        """Run one request on this thread if the model is cheap, nothing is queued and an instance is idle;
        None (nothing done) otherwise: `submit` it then. A failed run raises its exception. With dynamic batching,
        only while batches do not pay (`batch_cap` 1): else `submit_async` collects requests into batches."""
        if not self._inline:
            return None
        if self._max_rows:
            if self.batch_cap > 1 or self._row_ns is None or self._row_ns * size >= INLINE_NS:
                return None
        elif self._run_ns is None or self._run_ns >= INLINE_NS:
            return None
        with self._cond:
            if self._queue or not self._free or self._stopping:
                return None
            index = self._free.pop()
            self._lent.add(index)
        try:
            cpu = time.thread_time_ns()
            result = run_batch(
                self._runners[index], [feeds], [size], self._output_names, static_batch=self._static_batch
            )
            self._ran(size, result.input_ns, result.infer_ns, result.output_ns, time.thread_time_ns() - cpu)
            return Completed(result.outputs[0], 0, result.input_ns, result.infer_ns, result.output_ns, size)
        finally:
            self._give_back(index)

    def _give_back(self, index: int) -> None:
        """An inline run is over: the runner is its worker's again (the worker is still waiting in _take)."""
        with self._cond:
            self._lent.discard(index)
            self._free.append(index)
            if self._queue or self._stopping:
                self._cond.notify_all()

    def _ran(self, rows: int, input_ns: int, infer_ns: int, output_ns: int, cpu_ns: int, waited_ns: int = 0) -> None:
        """Count a run: its times, `cpu_ns` of CPU time on its thread, and `waited_ns`, how long its worker waited
        for the batch to fill (the instance's time, too)."""
        self._stats.execution(rows, input_ns, infer_ns, output_ns)
        took = input_ns + infer_ns + output_ns
        self._runs += 1  # the mean of the first runs, then a moving average
        weight = max(_EMA, 1 / self._runs)
        self._run_ns = took if self._run_ns is None else self._run_ns + weight * (took - self._run_ns)
        run_rows = self._static_batch or rows  # a fixed batch dim costs its whole batch
        per_row = took / max(run_rows, 1)
        self._row_ns = per_row if self._row_ns is None else self._row_ns + weight * (per_row - self._row_ns)
        if self.costs is not None:
            self.costs.record(rows, took + waited_ns, cpu_ns)

    def submit(self, feeds: dict[str, np.ndarray], size: int) -> Future:
        """Queue one request of `size` batch rows; the future resolves to a `Completed`."""
        return self._submit(_Pending(feeds, size, batch_key(feeds))).future

    def submit_async(self, feeds: dict[str, np.ndarray], size: int) -> tuple[Future, asyncio.Future]:
        """`submit` from a running event loop: (the thread future, to cancel; an asyncio future of this loop, to
        await). A batch's answers reach the loop in one wake-up; a cheap model's batch may run on the loop."""
        loop = asyncio.get_running_loop()
        item = _Pending(feeds, size, batch_key(feeds), waiter=loop.create_future())
        self._submit(item, loop)
        assert item.waiter is not None
        return item.future, item.waiter

    def _submit(self, item: _Pending, loop: asyncio.AbstractEventLoop | None = None) -> _Pending:
        size = item.size
        with self._cond:
            if self._stopping:
                raise Unavailable(f"model {self.name!r} is being unloaded")
            if self.max_queue_size and len(self._queue) + self._gathered >= self.max_queue_size:
                self._stats.drop("rejected")
                raise QueueFull(
                    f"model {self.name!r}: exceeds the maximum queue size ({self.max_queue_size} "
                    "requests waiting); retry later"
                )
            self._stats.queued(+1)
            if (
                loop is not None and self._gather and self._row_ns is not None and self._row_ns < INLINE_NS
            ):  # a cheap model: batch this loop turn's requests at its end
                group = self._gathering.get(loop)
                if group is None:
                    self._gathering[loop] = group = []
                    loop.call_soon(self._flush, loop)
                group.append(item)
                self._gathered += 1
            else:
                self._queue.append(item)
                self._queued_rows += size
                self._wake(item)
        item.future.add_done_callback(lambda f: f.cancelled() and self._forget(item))
        return item

    def _wake(self, item: _Pending) -> None:
        """With the lock held, `item` just queued: wake a worker if one can use it."""
        # A worker collecting a batch needs waking only when the batch may be full or cannot grow (this
        # request does not fit it); otherwise its delay timer wakes it. Fewer wake-ups: less GIL traffic
        # between the workers and the event loop that decodes the requests.
        if self._lent:  # a lent worker would take the wake-up and wait on: wake them all
            self._cond.notify_all()
        elif self._free or (
            self._collecting
            and (self._queued_rows >= min(self._full_rows, self.batch_cap) or item.key != self._queue[0].key)
        ):
            self._cond.notify()

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        """At the end of a loop turn: run the requests `submit_async` collected in it as batches on an idle
        instance's runner (none queued before them), within the turn's time budget; the rest (or all, if every
        instance is busy) join the queue."""
        with self._cond:
            items = self._gathering.pop(loop, [])
            self._gathered -= len(items)
            if self._stopping:
                self._stats.queued(-len(items))
                index = None
            elif self._queue or not self._free:
                self._requeue(items)
                return
            else:
                self._stats.queued(-len(items))
                index = self._free.pop()
                self._lent.add(index)
        if index is None:
            for item in items:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(Unavailable(f"model {self.name!r} was unloaded before this request ran"))
            _resolve(items)
            return
        run, spent, start = self._runners[index], 0.0, 0
        try:
            while start < len(items):
                end, rows = self._batch_end(items, start)
                row_ns = self.costs.row_ns(rows) if self.costs is not None else None
                cost = (row_ns or self._row_ns or 0.0) * (self._static_batch or rows)
                if spent + cost > INLINE_BATCH_NS:
                    break  # over this turn's budget: the workers take the rest
                began = time.perf_counter_ns()
                self._execute(run, items[start:end], _resolve)  # in-process only: no on_error
                spent += time.perf_counter_ns() - began
                start = end
        finally:
            self._give_back(index)
            if start < len(items):
                with self._cond:
                    self._stats.queued(len(items) - start)
                    self._requeue(items[start:])

    def _requeue(self, items: list[_Pending]) -> None:
        """With the lock held: queue collected requests for the workers, which take them without waiting (they
        had their loop turn to gather a batch)."""
        for item in items:
            item.gathered = True
            self._queue.append(item)
            self._queued_rows += item.size
        if items:
            self._cond.notify_all()

    def _batch_end(self, items: list[_Pending], start: int) -> tuple[int, int]:
        """The end of the batch that starts at items[start] (same batch key, within the cap; at least one) and
        its rows."""
        cap, key, rows, end = self.batch_cap, items[start].key, 0, start
        while end < len(items) and items[end].key == key and (end == start or rows + items[end].size <= cap):
            rows += items[end].size
            end += 1
        return end, rows

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
            failed = self._execute(run, batch, _answer_loops, self._waited.pop(index, 0))
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
            return self._take_batch(index)

    def _take_batch(self, index: int) -> list[_Pending]:
        """Called with the lock held and the queue non-empty."""
        policy = self._policy
        assert policy is not None
        delay = int(policy.max_queue_delay_s * 1e9)
        while True:
            deadline = self._queue[0].enqueued + delay
            cap = self.batch_cap
            count, rows = self._compatible_prefix(cap)
            preferred = policy.preferred_sizes
            full = rows >= cap or (preferred and rows >= preferred[-1])
            now = time.perf_counter_ns()
            if full or now >= deadline or self._stopping or count < len(self._queue) or self._queue[0].gathered:
                break  # a full batch, time is up, the next request cannot join, or gathered on the loop already
            self._collecting += 1
            try:
                self._cond.wait((deadline - now) / 1e9)
            finally:
                self._collecting -= 1
                self._waited[index] = self._waited.get(index, 0) + time.perf_counter_ns() - now
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

    def _compatible_prefix(self, cap: int) -> tuple[int, int]:
        """How many requests from the head of the queue fit one batch of at most `cap` rows (the first always
        does), and their rows."""
        key, rows, count = self._queue[0].key, 0, 0
        for item in self._queue:
            if item.key != key or (count and rows + item.size > cap):
                break
            rows += item.size
            count += 1
        return count, rows

    def _execute(
        self, run: RunFn, batch: list[_Pending], answer: Callable[[list[_Pending]], None], waited_ns: int = 0
    ) -> BaseException | None:
        """Run one batch and answer its requests through `answer` (`_answer_loops` from a worker thread,
        `_resolve` on the loop itself); the exception when the run failed."""
        taken = batch
        batch = [item for item in batch if item.future.set_running_or_notify_cancel()]  # drop cancelled ones
        if not batch:
            answer(taken)
            return None
        started = time.perf_counter_ns()
        sizes = [item.size for item in batch]
        cpu = time.thread_time_ns()
        try:
            result = run_batch(
                run, [item.feeds for item in batch], sizes, self._output_names, static_batch=self._static_batch
            )
        except BaseException as exc:  # every waiting request must hear about it
            for item in batch:
                item.future.set_exception(exc)
            answer(taken)
            return exc
        total = sum(sizes)
        self._ran(total, result.input_ns, result.infer_ns, result.output_ns, time.thread_time_ns() - cpu, waited_ns)
        for item, outputs in zip(batch, result.outputs):
            item.future.set_result(
                Completed(outputs, started - item.enqueued, result.input_ns, result.infer_ns, result.output_ns, total)
            )
        answer(taken)
        return None
