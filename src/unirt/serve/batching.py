"""Gather/scatter for the dynamic batcher: merge per-request feeds into one batch, run once, split the results.

Merging is numpy's concatenate for batches under `NUMPY_MERGE_BYTES` (its fixed cost per call is less than half the
C++ gather's: 11 against 25 us for four 110 KB rows) and the C++ core's gather above (`unirt.gather`: one copy
into the batch, zero rows for padding, the GIL released and large copies split over threads). Splitting hands out
views of the batch's outputs (no copy). The scheduler only calls `batch_key` and `run_batch`.

The rule: requests are merged along dim 0 (the batch dim) up to max_batch_size and never padded, as Triton's
dynamic batcher does; only a model whose batch dim is fixed (`static_batch`) gets its batch padded up to that
size (zero rows), and the padding rows are dropped from the results.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..batching import gather
from ..errors import RunError

__all__ = ["BatchResult", "batch_key", "run_batch"]

Feeds = Mapping[str, np.ndarray]
RunFn = Callable[[dict[str, np.ndarray], Sequence[str]], dict[str, np.ndarray]]
#: Batches whose inputs are smaller than this are merged with numpy (zero padding rows: the C++ gather)
NUMPY_MERGE_BYTES = 8 << 20


@dataclass
class BatchResult:
    """Each request's outputs (in request order) and where the time went, in nanoseconds."""

    outputs: list[dict[str, np.ndarray]]
    input_ns: int
    infer_ns: int
    output_ns: int


def batch_key(feeds: Feeds) -> tuple:
    """Requests with equal keys can share a batch: same inputs, dtypes and shapes past the batch dim."""
    return tuple((name, a.dtype.str, a.shape[1:]) for name, a in feeds.items())


def _merge(requests: Sequence[Feeds], total: int, rows: int) -> dict[str, np.ndarray]:
    merged = {}
    for name, first in requests[0].items():
        parts = [r[name] for r in requests]
        if first.dtype.hasobject:  # BYTES tensors are Python objects: numpy joins them
            if rows > total:
                parts.append(np.full((rows - total,) + first.shape[1:], b"", dtype=object))
            merged[name] = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0)
        elif rows == total and sum(part.nbytes for part in parts) < NUMPY_MERGE_BYTES:
            merged[name] = np.concatenate(parts, axis=0)
        else:  # one copy in C++, zero rows up to a fixed batch dim
            merged[name] = gather(parts, rows=rows)
    return merged


def run_batch(
    run: RunFn,
    requests: Sequence[Feeds],
    sizes: Sequence[int],
    output_names: Sequence[str],
    *,
    static_batch: int | None = None,
) -> BatchResult:
    """Run `requests` (feeds with `sizes[i]` rows each, same `batch_key`) as one batch; split outputs by rows.

    With one request and no padding to do, its feeds go to the model as they are (no copy). Outputs are views
    into the batch's output arrays, which belong to this batch alone.
    """
    t0 = time.perf_counter_ns()
    total = sum(sizes)
    rows = static_batch if static_batch is not None else total
    if total > rows:
        raise RunError(f"batch of {total} rows exceeds the model's fixed batch dim {rows}")
    merged = dict(requests[0]) if len(requests) == 1 and rows == total else _merge(requests, total, rows)
    t1 = time.perf_counter_ns()
    results = run(merged, output_names)
    t2 = time.perf_counter_ns()
    if len(requests) == 1 and rows == total:
        outputs = [dict(results)]
    else:
        for name, value in results.items():
            if np.ndim(value) == 0 or np.shape(value)[0] != rows:
                raise RunError(
                    f"output {name!r} has shape {list(np.shape(value))}: expected {rows} rows (the batch) "
                    "along dim 0, so it cannot be split back into requests"
                )
        outputs, start = [], 0
        for size in sizes:
            outputs.append({name: value[start : start + size] for name, value in results.items()})
            start += size
    t3 = time.perf_counter_ns()
    return BatchResult(outputs, t1 - t0, t2 - t1, t3 - t2)
