"""The first-run cost of verifying a frontend (OpenVINO reading ONNX, checked against ONNX Runtime) against a later
run, and what a second Session pays once the result is cached.

    python benchmarks/bench_frontend_verify.py [--runs 20] [--json out.json]

Per model, in a fresh cache (UNIRT_CACHE_DIR is pointed at a temporary folder):
- `load`: Session(model, backend="openvino") (hashes the model for the cache key);
- `first run, verified`: the first run, which loads ONNX Runtime, runs both engines on its inputs and compares;
- `later run`: the median of `--runs` later runs;
- `first run, verify=False`: the first run of a session that opted out (OpenVINO's own first-run cost);
- `cached: load` / `cached: first run`: a second Session, which finds the result at load.
Models: a small CNN (`unirt.testing.batched_cnn`, 1x3x32x32) and the onnx wheel's ResNet-50 (light_resnet50,
1x3x224x224, 4 GFLOPs; its weights are made inside the graph, so the file is 80 KB and hashing it is free: a real
100 MB file adds ~0.06 s of SHA-256 to every load for the cache key).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def measure(model: Path, runs: int) -> dict:
    import unirt

    x = (
        np.random.default_rng(0)
        .standard_normal(
            [d if isinstance(d, int) else 1 for d in unirt.Session(model, backend="onnxruntime").inputs[0].shape]
        )
        .astype(np.float32)
    )
    row: dict = {"model": model.name}
    off = unirt.Session(model, backend="openvino", backend_options={"conversion": {"verify": False}})
    t0 = time.perf_counter()
    off.run(x)
    row["first run, verify=False"] = _ms(t0)
    off.close()
    t0 = time.perf_counter()
    sess = unirt.Session(model, backend="openvino")
    row["load"] = _ms(t0)
    t0 = time.perf_counter()
    sess.run(x)
    row["first run, verified"] = _ms(t0)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(x)
        times.append(_ms(t0))
    row["later run"] = statistics.median(times)
    row["verification"] = str(sess.verification)
    sess.close()
    t0 = time.perf_counter()
    again = unirt.Session(model, backend="openvino")
    row["cached: load"] = _ms(t0)
    t0 = time.perf_counter()
    again.run(x)
    row["cached: first run"] = _ms(t0)
    row["cached"] = bool(again.verification.cached)
    again.close()
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json", help="write the rows here")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNIRT_CACHE_DIR"] = str(Path(tmp) / "cache")
        from unirt.testing import batched_cnn, conformance_cases

        models = [batched_cnn(Path(tmp) / "small_cnn.onnx", batch=1)]
        models += [c.model for c in conformance_cases(("light",)) if c.name == "light_resnet50"]
        rows = [measure(m, args.runs) for m in models]
    keys = ["load", "first run, verify=False", "first run, verified", "later run", "cached: load", "cached: first run"]
    print(f"{'model':<22}" + "".join(f"{k:>26}" for k in keys) + "   (ms)")
    for r in rows:
        print(f"{r['model']:<22}" + "".join(f"{r[k]:>26.2f}" for k in keys))
    for r in rows:
        print(f"{r['model']}: {r['verification']}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
