"""(a) Pool vs fresh allocation for large outputs in a run loop, interleaved in one process.

    python benchmarks/bench_pool.py [--mb 64] [--rounds 15] [--iterations 10] [--json out.json]

Two levels:
- raw: take a `--mb` buffer, write it (as a backend writing its output does), drop it: numpy.empty vs
  unirt.BufferPool.empty. A fresh large allocation is mmap'ed memory that page-faults on first write; a pooled
  block is already mapped.
- session: a model whose output is `--mb` (Relu over float32[N, 1024, 1024]), run in a loop with the result
  dropped each time: unirt.Session with pooled outputs (the default for large outputs) vs pooled_outputs=False
  (ONNX Runtime allocates) vs onnxruntime.InferenceSession.run.
Medians of per-iteration times; pool statistics show that steady-state runs make no new allocation.
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

import unirt


def relu_model(path: Path, rows: int) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, 1024, 1024])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 1024, 1024])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def per_iter_ms(fn, iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mb", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = max(1, args.mb // 4)
    nbytes = rows * 1024 * 1024 * 4
    pool = unirt.BufferPool()
    src = np.random.default_rng(0).standard_normal((rows, 1024, 1024)).astype(np.float32)

    def fresh():
        out = np.empty_like(src)
        np.copyto(out, src)

    def pooled():
        out = pool.empty(src.shape, src.dtype)
        np.copyto(out, src)

    with tempfile.TemporaryDirectory() as tmp:
        path = relu_model(Path(tmp) / "relu.onnx", rows)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        raw = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess_pool = unirt.Session(path, backend="onnxruntime", threads=1)
        sess_fresh = unirt.Session(path, backend="onnxruntime", threads=1, pooled_outputs=False)
        x = src
        np.testing.assert_array_equal(sess_pool.run(x)["y"], raw.run(None, {"x": x})[0])
        calls = {
            "raw numpy.empty + write": fresh,
            "raw BufferPool.empty + write": pooled,
            "ort.InferenceSession.run": lambda: raw.run(None, {"x": x}),
            "unirt.Session.run (pooled_outputs=False)": lambda: sess_fresh.run(x),
            "unirt.Session.run (pooled outputs)": lambda: sess_pool.run(x),
        }
        for fn in calls.values():
            per_iter_ms(fn, 2)
        before = sess_pool.pool.stats()
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                samples[name].append(per_iter_ms(fn, args.iterations))
        after = sess_pool.pool.stats()
    med = {name: statistics.median(v) for name, v in samples.items()}
    runs = args.rounds * args.iterations
    print(
        f"output {nbytes / 2**20:.0f} MiB, {args.rounds} rounds x {args.iterations} iterations, medians, "
        f"onnxruntime {ort.__version__}, 1 thread"
    )
    for name, value in med.items():
        print(f"  {name:<44} {value:8.2f} ms/iteration")
    print(f"raw: pool / numpy = {med['raw BufferPool.empty + write'] / med['raw numpy.empty + write']:.3f}")
    print(
        f"session: pooled / pooled_outputs=False = "
        f"{med['unirt.Session.run (pooled outputs)'] / med['unirt.Session.run (pooled_outputs=False)']:.3f}; "
        f"pooled / InferenceSession.run = "
        f"{med['unirt.Session.run (pooled outputs)'] / med['ort.InferenceSession.run']:.3f}"
    )
    print(
        f"pooled session over {runs} timed runs: {after.allocations - before.allocations} new allocations, "
        f"{after.reuses - before.reuses} reuses; raw pool: {pool.stats().allocations} allocation(s) in all"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "median_ms": med,
                    "mib": nbytes / 2**20,
                    "session_new_allocations": after.allocations - before.allocations,
                    "session_reuses": after.reuses - before.reuses,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
