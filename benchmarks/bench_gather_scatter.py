"""(b) Gather/scatter in C++ (GIL released, up to 4 threads) vs numpy, interleaved in one process.

    python benchmarks/bench_gather_scatter.py [--requests 32] [--rounds 15] [--json out.json]

gather: `--requests` requests of float32[1, 3, 224, 224] into one batch buffer (numpy.concatenate allocates the
batch; unirt.gather writes into a pooled one, as Session.run_many does). scatter: the batch back into per-request
arrays (a numpy.copyto loop vs unirt.scatter). Also 4 Python threads each gathering at once: numpy holds the GIL
for part of its work, unirt's copies release it. Medians; the machine's CPU count bounds any thread speedup.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np

import unirt


def per_call_ms(fn, iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e3


def in_threads(fn, n: int = 4) -> None:
    threads = [threading.Thread(target=fn) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def python_progress(fn, seconds: float = 0.5) -> float:
    """Iterations per ms a pure-Python thread makes while `fn` runs in a loop on this thread: high when `fn`
    releases the GIL, low when it holds it."""
    ticks = [0]
    stop = threading.Event()

    def spin():
        n = 0
        while not stop.is_set():
            n += 1
        ticks[0] = n

    t = threading.Thread(target=spin)
    t.start()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
    stop.set()
    t.join()
    return ticks[0] / ((time.perf_counter() - t0) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    parts = [rng.standard_normal((1, 3, 224, 224)).astype(np.float32) for _ in range(args.requests)]
    pool = unirt.BufferPool()
    batch = np.concatenate(parts)
    outs = [np.empty_like(p) for p in parts]
    mb = batch.nbytes / 2**20

    def np_scatter():
        start = 0
        for o in outs:
            np.copyto(o, batch[start : start + o.shape[0]])
            start += o.shape[0]

    calls = {
        "gather numpy.concatenate": lambda: np.concatenate(parts),
        "gather unirt 1 thread (pooled batch)": lambda: unirt.gather(parts, empty=pool.empty_raw, threads=1),
        "gather unirt 4 threads (pooled batch)": lambda: unirt.gather(parts, empty=pool.empty_raw, threads=4),
        "scatter numpy.copyto loop": np_scatter,
        "scatter unirt 1 thread": lambda: unirt.scatter(batch, outs, threads=1),
        "scatter unirt 4 threads": lambda: unirt.scatter(batch, outs, threads=4),
        "4 Python threads x numpy.concatenate": lambda: in_threads(lambda: np.concatenate(parts)),
        "4 Python threads x unirt.gather(threads=1)": lambda: in_threads(
            lambda: unirt.gather(parts, empty=pool.empty_raw, threads=1)
        ),
    }
    np.testing.assert_array_equal(unirt.gather(parts, threads=4), batch)
    for fn in calls.values():
        per_call_ms(fn, 2)
    samples: dict[str, list[float]] = {n: [] for n in calls}
    for _ in range(args.rounds):
        for name, fn in calls.items():
            samples[name].append(per_call_ms(fn, args.iterations))
    med = {n: statistics.median(v) for n, v in samples.items()}
    print(
        f"{args.requests} requests of float32[1,3,224,224] = {mb:.1f} MiB per batch, {os.cpu_count()} CPUs, "
        f"{args.rounds} rounds x {args.iterations}, medians"
    )
    for name, value in med.items():
        print(f"  {name:<44} {value:8.3f} ms  ({mb / value * 1e3 / 1024:.2f} GiB/s)")
    print(
        f"gather: unirt 4 threads / numpy.concatenate = "
        f"{med['gather unirt 4 threads (pooled batch)'] / med['gather numpy.concatenate']:.3f}"
    )
    print(
        f"scatter: unirt 4 threads / numpy loop = "
        f"{med['scatter unirt 4 threads'] / med['scatter numpy.copyto loop']:.3f}"
    )
    print(
        f"4 Python threads: unirt / numpy = "
        f"{med['4 Python threads x unirt.gather(threads=1)'] / med['4 Python threads x numpy.concatenate']:.3f}"
    )
    progress = {
        "numpy.concatenate": python_progress(lambda: np.concatenate(parts)),
        "unirt.gather(threads=1)": python_progress(lambda: unirt.gather(parts, empty=pool.empty_raw, threads=1)),
    }
    print("a pure-Python thread's progress while this thread gathers in a loop (higher: the GIL is free):")
    for name, value in progress.items():
        print(f"  during {name:<26} {value:10.0f} iterations/ms")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"median_ms": med, "mib": mb, "cpus": os.cpu_count(), "python_progress_per_ms": progress}, indent=2
            )
        )


if __name__ == "__main__":
    main()
