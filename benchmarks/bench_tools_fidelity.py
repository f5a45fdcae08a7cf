"""Does `unirt bench` report the latency a hand-written ONNX Runtime loop measures? Interleaved in one process.

    python benchmarks/bench_tools_fidelity.py [--size 128] [--rounds 10] [--iterations 500] [--json out.json]

Each round runs unirt.tools.bench (onnxruntime, 1 thread, `iterations` timed runs) and a plain loop timing
`onnxruntime.InferenceSession.run` per call with time.perf_counter on the same model and input size, and records
both p50 and mean latencies. Target: bench p50 / raw p50 <= 1.1 (the tool's timing adds no more than
unirt.Session.run's own overhead, which bench_session_overhead.py bounds). Medians over rounds are reported.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from unirt.testing import matmul_relu
from unirt.tools import bench


def raw_latencies_ms(sess: ort.InferenceSession, x: np.ndarray, warmup: int, iterations: int) -> np.ndarray:
    for _ in range(warmup):
        sess.run(None, {"x": x})
    samples = np.empty(iterations)
    for i in range(iterations):
        t0 = time.perf_counter()
        sess.run(None, {"x": x})
        samples[i] = time.perf_counter() - t0
    return samples * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = matmul_relu(Path(tmp) / "matmul_relu.onnx", n=args.size)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        raw = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)
        p50_ratio, mean_ratio, rows = [], [], []
        for _ in range(args.rounds):
            report = bench(path, ["onnxruntime"], threads=1, device="cpu", warmup=20, iterations=args.iterations)
            lat = report.results[0].latency_ms
            raw_ms = raw_latencies_ms(raw, x, 20, args.iterations)
            raw_p50, raw_mean = float(np.percentile(raw_ms, 50)), float(raw_ms.mean())
            p50_ratio.append(lat.p50 / raw_p50)
            mean_ratio.append(lat.mean / raw_mean)
            rows.append(
                {"bench_p50_ms": lat.p50, "raw_p50_ms": raw_p50, "bench_mean_ms": lat.mean, "raw_mean_ms": raw_mean}
            )
    result = {
        "model": f"matmul_relu n={args.size}",
        "rounds": args.rounds,
        "iterations": args.iterations,
        "median_bench_p50_ms": statistics.median(r["bench_p50_ms"] for r in rows),
        "median_raw_p50_ms": statistics.median(r["raw_p50_ms"] for r in rows),
        "ratio_p50": statistics.median(p50_ratio),
        "ratio_mean": statistics.median(mean_ratio),
    }
    print(f"unirt bench vs a raw onnxruntime loop ({result['model']}, {args.rounds} rounds x {args.iterations} runs)")
    print(
        f"  p50:  bench {result['median_bench_p50_ms']:.4f} ms, raw {result['median_raw_p50_ms']:.4f} ms, "
        f"ratio {result['ratio_p50']:.3f}"
    )
    print(f"  mean ratio {result['ratio_mean']:.3f}   (target: p50 ratio <= 1.1)")
    if args.json:
        args.json.write_text(json.dumps({**result, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
