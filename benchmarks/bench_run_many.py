"""(e) Session.run_many throughput vs one-by-one runs on a dynamic-batch CNN, interleaved in one process.

    python benchmarks/bench_run_many.py [--requests 32] [--threads 2] [--rounds 10] [--json out.json]

`--requests` independent requests of one image (float32[1, 3, 32, 32]) through unirt.testing.batched_cnn (dynamic
batch N): a loop of Session.run vs one Session.run_many call (gathered into one batch, outputs as views), and the
same on a static-batch copy (N=8: padding/splitting). Results are checked equal first. Medians, requests/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import unirt
from unirt.testing import batched_cnn


def seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    requests = [rng.standard_normal((1, 3, 32, 32)).astype(np.float32) for _ in range(args.requests)]
    with tempfile.TemporaryDirectory() as tmp:
        dynamic = unirt.Session(batched_cnn(Path(tmp) / "dyn.onnx"), backend="onnxruntime", threads=args.threads)
        static = unirt.Session(
            batched_cnn(Path(tmp) / "static8.onnx", batch=8), backend="onnxruntime", threads=args.threads, batched=True
        )
        for sess in (dynamic, static):
            for got, x in zip(sess.run_many(requests), requests):
                want = dynamic.run(x)
                for name in want:
                    np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-6)
        calls = {
            "dynamic: run one by one": lambda: [dynamic.run(x) for x in requests],
            "dynamic: run_many": lambda: dynamic.run_many(requests),
            "static N=8: run one by one (each padded)": lambda: [static.run(x) for x in requests],
            "static N=8: run_many": lambda: static.run_many(requests),
        }
        for fn in calls.values():
            fn()
        samples: dict[str, list[float]] = {n: [] for n in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                samples[name].append(seconds(fn))
        waste = static.batch_stats().padding_waste
    rate = {n: args.requests / statistics.median(v) for n, v in samples.items()}
    print(
        f"{args.requests} requests of float32[1,3,32,32], batched_cnn, {args.threads} threads, {args.rounds} rounds, "
        "medians"
    )
    for name, value in rate.items():
        print(f"  {name:<44} {value:10.0f} requests/s")
    print(
        f"run_many / one by one: dynamic {rate['dynamic: run_many'] / rate['dynamic: run one by one']:.2f}x, "
        f"static {rate['static N=8: run_many'] / rate['static N=8: run one by one (each padded)']:.2f}x "
        f"(static padding waste over the run: {waste:.1%})"
    )
    if args.json:
        args.json.write_text(json.dumps({"requests_per_s": rate, "static_padding_waste": waste}, indent=2))


if __name__ == "__main__":
    main()
