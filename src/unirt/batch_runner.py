"""Running requests whose batch size the model cannot take as is: padding, splitting and packing.

Requests with the same dims after the batch dim form a group. A group's rows are laid end to end and cut into
windows the model can run: N rows for a static batch (the last window zero-padded), at most `max_batch` rows for
a dynamic one (all of them without `max_batch`). A window that is one request's contiguous rows is passed without
a copy; otherwise its rows are gathered into a staging buffer. Where every output can be sized beforehand and the
backend writes into caller memory, all windows write straight into one output buffer per group and each request
gets views of its rows; otherwise the backend's arrays are cut up (and a request spanning windows is gathered).
Where the model turns out not to batch (an output that does not keep the rows), run_many runs requests one by one.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import numpy as np

from . import _core
from .batching import BatchSpec, copy_threads
from .errors import BackendCrashedError, RunError
from .outputs import OutputPlanner

__all__ = ["BatchRunner", "BatchStats"]
log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
# memory.empty(shape, dtype) -> array; memory.reserve(nbytes): the run's whole need, before taking it piece by piece
# call(feeds, output_names, targets) -> outputs in output_names order; targets may be None
BackendCall = Callable[[Arrays, Sequence[str], "dict[str, np.ndarray] | None"], list[Any]]


@dataclass(frozen=True)
class BatchStats:
    """What padding, splitting and packing did. `padding_waste` = padded rows / rows the backend ran."""

    requests: int = 0  # requests that went through batching (run_many, or run with B != N / B > max_batch)
    backend_runs: int = 0  # backend runs they took
    rows: int = 0  # request rows
    padded_rows: int = 0  # zero rows added to fill static batches
    split_requests: int = 0  # requests spread over more than one run
    unbatched_requests: int = 0  # run_many requests run one by one because the model would not batch them

    @property
    def padding_waste(self) -> float:
        total = self.rows + self.padded_rows
        return self.padded_rows / total if total else 0.0


class BatchRunner:
    def __init__(
        self,
        spec: BatchSpec,
        max_batch: int | None,
        input_names: Sequence[str],
        planner: OutputPlanner,
        call: BackendCall,
        writes_into: bool,
        pooled: Any,
    ) -> None:
        """`pooled(attempt, ours)`: RunPlan's fallback where the engine refuses unirt's output buffers."""
        self.spec = spec
        self.max_batch = max_batch
        self._inputs = tuple(input_names)
        self._first = self._inputs[0] if self._inputs else None
        self._planner = planner
        self._call = call
        #: Whether packed runs write outputs into unirt's buffers (RunPlan turns it off when the engine refuses them).
        self.writes_into = writes_into
        self._pooled = pooled
        self._threads = copy_threads()
        self._lock = threading.Lock()
        self._stats = BatchStats()
        # Set when packing requests failed where running them one by one worked (an output that does not keep the
        # batch rows, an engine that refuses a larger batch): run_many then runs requests one by one, as run would.
        self._unbatchable: str | None = None

    def stats(self) -> BatchStats:
        with self._lock:
            return self._stats

    def needs_split(self, arrays: Arrays) -> bool:
        """A dynamic-batch request above max_batch."""
        return self.max_batch is not None and arrays[self._first].shape[0] > self.max_batch  # type: ignore[index]

    # -- entry points ---------------------------------------------------------------------------------------
    def run_one(
        self, arrays: Arrays, names: Sequence[str], out: dict[str, np.ndarray] | None, memory: Any
    ) -> dict[str, np.ndarray]:
        """One request that needs padding or splitting."""
        return self._execute([(0, arrays)], names, {0: out} if out else {}, memory)[0]

    def run_many(
        self, requests: list[Arrays], names: Sequence[str], outs: dict[int, dict[str, np.ndarray]], memory: Any
    ) -> list[dict[str, np.ndarray]]:
        """Independent requests, packed into as few backend runs as the model allows; results in request order.

        Never fails where `run` on each request works: a group whose packed run fails (not a crash) runs again
        one request at a time, as `run` would run it; if that works, the model does not batch, so later calls run
        one by one straight away (counted in `unbatched_requests`, warned once)."""
        if self._unbatchable is not None:
            done = self._one_by_one(list(enumerate(requests)), names, outs, memory)
            return [done[i] for i in range(len(requests))]
        groups: dict[tuple, list[tuple[int, Arrays]]] = {}
        for index, arrays in enumerate(requests):
            key = tuple(arrays[n].shape[1:] for n in self._inputs)
            groups.setdefault(key, []).append((index, arrays))
        results: dict[int, dict[str, np.ndarray]] = {}
        for group in groups.values():
            if self._unbatchable is not None:  # an earlier group of this call found it out
                results.update(self._one_by_one(group, names, outs, memory))
                continue
            try:
                results.update(self._execute(group, names, outs, memory))
                continue
            except BackendCrashedError:
                raise
            except RunError as exc:
                failure = exc
            each = self._one_by_one(group, names, outs, memory)  # raises what run() would raise
            if self._unbatchable is None:
                self._unbatchable = str(failure)
                log.warning(
                    "run_many: packing requests into one batch failed where running them one by one "
                    "works (%s); this session runs run_many's requests one by one",
                    failure,
                )
            results.update(each)
        return [results[i] for i in range(len(requests))]

    def _one_by_one(
        self, group: list[tuple[int, Arrays]], names: Sequence[str], outs: dict[int, dict[str, np.ndarray]], memory: Any
    ) -> dict[int, dict[str, np.ndarray]]:
        """Each request as `run` runs it: as it is where the model takes its rows (a dynamic batch within
        max_batch, a static batch of exactly N), else padded or split (which then fails as `run` would)."""
        results: dict[int, dict[str, np.ndarray]] = {}
        direct = direct_rows = 0
        first, call = self._first, self._call
        static = self.spec.size if self.spec.kind == "static" else None
        limit = self.max_batch if static is None and self.max_batch is not None else None
        try:
            for index, arrays in group:
                rows = arrays[first].shape[0]  # type: ignore[index]
                if rows == static if static is not None else limit is None or rows <= limit:
                    results[index] = dict(zip(names, call(arrays, names, outs.get(index))))
                    direct += 1
                    direct_rows += rows
                else:  # padded or split like run(), and counted there
                    results.update(self._execute([(index, arrays)], names, outs, memory))
        finally:
            with self._lock:
                st = self._stats
                self._stats = dataclasses.replace(
                    st,
                    requests=st.requests + direct,
                    backend_runs=st.backend_runs + direct,
                    rows=st.rows + direct_rows,
                    unbatched_requests=st.unbatched_requests + len(results),
                )
        return results

    # -- the work -------------------------------------------------------------------------------------------
    def _capacity(self, total: int) -> int:
        if self.spec.kind == "static":
            return self.spec.size  # type: ignore[return-value]
        if self.max_batch is not None:
            return self.max_batch
        return max(total, 1)

    def _execute(
        self, group: list[tuple[int, Arrays]], names: Sequence[str], outs: dict[int, dict[str, np.ndarray]], memory: Any
    ) -> dict[int, dict[str, np.ndarray]]:
        first = self._first
        rows = [arrays[first].shape[0] for _, arrays in group]  # type: ignore[index]
        starts = [0, *accumulate(rows)][:-1]
        total = sum(rows)
        cap = self._capacity(total)
        static = self.spec.kind == "static"
        windows = max(1, -(-total // cap))
        padded_total = windows * cap if static else total
        empty = memory.empty
        sample = group[0][1]
        staging = sum(
            -(-cap * sample[n].dtype.itemsize * int(np.prod(sample[n].shape[1:])) // 64) * 64 for n in self._inputs
        )
        memory.reserve(staging + self._output_bytes(group, names, padded_total))
        buffers = self._output_buffers(group, names, outs, padded_total, empty)

        ran, buffers = self._pooled(
            self._attempt,
            tuple(names) if buffers is not None else (),
            group,
            names,
            starts,
            rows,
            total,
            cap,
            windows,
            buffers,
            empty,
        )
        spanning = sum(1 for s, r in zip(starts, rows) if r and (s // cap) != ((s + r - 1) // cap))
        with self._lock:
            st = self._stats
            self._stats = dataclasses.replace(
                st,
                requests=st.requests + len(group),
                backend_runs=st.backend_runs + windows,
                rows=st.rows + total,
                padded_rows=st.padded_rows + padded_total - total,
                split_requests=st.split_requests + spanning,
            )
        results: dict[int, dict[str, np.ndarray]] = {}
        for (index, _), start, r in zip(group, starts, rows):
            target = outs.get(index) or {}
            result = {}
            for n in names:
                rows_view = (
                    buffers[n][start : start + r]
                    if buffers is not None
                    else self._rows(ran, n, start, start + r, empty)
                )
                dest = target.get(n)
                if dest is not None and dest is not rows_view and not np.may_share_memory(dest, rows_view):
                    _core.scatter(rows_view, [dest], self._threads)
                    rows_view = dest
                result[n] = dest if dest is not None else rows_view
            results[index] = result
        return results

    def _attempt(self, own, group, names, starts, rows, total, cap, windows, buffers, empty):
        """Every window, into `buffers` when `own` (RunPlan's fallback runs it again without them)."""
        used = buffers if own else None
        return self._run_windows(group, names, starts, rows, total, cap, windows, used, empty), used

    def _run_windows(
        self, group, names, starts, rows, total, cap, windows, buffers, empty
    ) -> list[tuple[int, dict[str, np.ndarray]]]:
        """Run every window; outputs go into `buffers` when given, else come back as (first row, outputs) each."""
        static = self.spec.kind == "static"
        ran: list[tuple[int, dict[str, np.ndarray]]] = []
        for w in range(windows):
            lo = w * cap
            hi = min(lo + cap, total)
            padded = cap if static else hi - lo
            feeds = {
                name: self._window_input(group, starts, rows, name, lo, hi, padded, empty) for name in self._inputs
            }
            if buffers is not None:
                self._call(feeds, names, {n: buffers[n][lo : lo + padded] for n in names})
            else:
                values = self._call(feeds, names, None)
                produced = dict(zip(names, values))
                for n, v in produced.items():
                    if np.ndim(v) == 0 or np.shape(v)[0] != padded:
                        raise RunError(
                            f"output {n!r} has shape {list(np.shape(v))} for a batch of {padded} rows; "
                            "it does not keep the batch dim, so requests cannot be batched "
                            "(pass batched=False)"
                        )
                ran.append((lo, produced))
        return ran

    def _output_bytes(self, group, names, padded_total) -> int:
        if not self.writes_into:
            return 0
        total = 0
        for n in names:
            shape = self._planner.shape(n, group[0][1])
            if shape:
                total += -(-self._planner.nbytes(n, (padded_total,) + shape[1:]) // 64) * 64
        return total

    def _output_buffers(self, group, names, outs, padded_total, empty) -> dict[str, np.ndarray] | None:
        """One buffer per output for the whole group, when every output can be sized and written into."""
        if not self.writes_into:
            return None
        sample = group[0][1]
        buffers = {}
        for n in names:
            shape = self._planner.shape(n, sample)
            if shape is None or not shape:
                return None
            shape = (padded_total,) + shape[1:]
            single = outs.get(group[0][0], {}).get(n) if len(group) == 1 else None
            if single is not None and single.shape == shape:
                buffers[n] = single  # the caller's own array takes every window directly
            else:
                buffers[n] = empty(shape, self._planner.dtypes[n])
        return buffers

    def _window_input(self, group, starts, rows, name, lo, hi, padded, empty) -> np.ndarray:
        pieces = []
        for (_, arrays), start, r in zip(group, starts, rows):
            a, b = max(lo, start), min(hi, start + r)
            if a < b:
                pieces.append(arrays[name][a - start : b - start])
        if len(pieces) == 1 and pieces[0].shape[0] == padded:
            return pieces[0]  # one request's contiguous rows: no copy
        sample = group[0][1][name]
        if not pieces and padded == 0:
            return sample  # every request is empty: any of them is the (empty) batch
        staging = empty((padded,) + sample.shape[1:], sample.dtype)
        _core.gather(pieces, staging, self._threads)
        return staging

    def _rows(self, ran, name, lo, hi, empty) -> np.ndarray:
        """Rows [lo, hi) of output `name` across the windows' own output arrays."""
        parts = []
        for first, produced in ran:
            value = produced[name]
            a, b = max(lo, first), min(hi, first + value.shape[0])
            if a < b:
                parts.append(value[a - first : b - first])
        if len(parts) == 1:
            return parts[0]
        if not parts:
            value = ran[0][1][name]
            return value[:0]
        sample = parts[0]
        joined = empty((hi - lo,) + sample.shape[1:], sample.dtype)
        _core.gather([np.ascontiguousarray(p) for p in parts], joined, self._threads)
        return joined
