"""(d) Per-call overhead of isolate=True (the backend in a child process) on a small model, interleaved.

    python benchmarks/bench_isolate.py [--rounds 20] [--iterations 500] [--json out.json]

Session.run in-process vs isolate=True on unirt.testing.dynamic_mlp (x float32[4, 8]), 1 thread, medians.
Target: under 100 us added per call. For reference, a plain blocking pipe round trip between two processes is
measured too: its cost is mostly the wake-up of a sleeping process, which depends on how busy the machine's CPUs
are; isolate=True polls briefly before sleeping to avoid it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import unirt
from unirt.testing import dynamic_mlp


def per_call_us(fn, iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e6


_ECHO = "import os\nwhile True:\n    data = os.read(0, 5)\n    if not data: break\n    os.write(1, data)\n"


def pipe_round_trip_us(iterations: int) -> float:
    """A 5-byte message to a child process and back, with blocking reads (each side sleeps, then is woken)."""
    child = subprocess.Popen([sys.executable, "-c", _ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    to_child, from_child = child.stdin.fileno(), child.stdout.fileno()
    os.write(to_child, b"warm!")
    os.read(from_child, 5)
    t0 = time.perf_counter()
    for _ in range(iterations):
        os.write(to_child, b"ping!")
        os.read(from_child, 5)
    elapsed = (time.perf_counter() - t0) / iterations * 1e6
    child.stdin.close()
    child.wait()
    child.stdout.close()
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = dynamic_mlp(Path(tmp) / "mlp.onnx")
        x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
        plain = unirt.Session(path, backend="onnxruntime", threads=1)
        isolated = unirt.Session(path, backend="onnxruntime", threads=1, isolate=True)
        np.testing.assert_array_equal(isolated.run(x)["probs"], plain.run(x)["probs"])
        calls = {"in-process": lambda: plain.run(x), "isolate=True": lambda: isolated.run(x)}
        for fn in calls.values():
            per_call_us(fn, args.iterations)
        samples: dict[str, list[float]] = {n: [] for n in calls}
        pipe: list[float] = []
        for _ in range(args.rounds):
            for name, fn in calls.items():
                samples[name].append(per_call_us(fn, args.iterations))
            pipe.append(pipe_round_trip_us(args.iterations))
        isolated.close()
    med = {n: statistics.median(v) for n, v in samples.items()}
    added = med["isolate=True"] - med["in-process"]
    floor = statistics.median(pipe)
    print(f"dynamic_mlp x[4,8], 1 thread, {args.rounds} rounds x {args.iterations} calls, medians, "
          f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})")
    for name, value in med.items():
        print(f"  Session.run {name:<14} {value:8.1f} us/call")
    print(f"  blocking pipe round trip  {floor:8.1f} us  (reference)")
    print(f"added by isolate=True: {added:.1f} us/call (target < 100 us)")
    if args.json:
        args.json.write_text(json.dumps({"median_us": med, "added_us": added, "pipe_round_trip_us": floor},
                                        indent=2))


if __name__ == "__main__":
    main()
