"""First-run cost of a conversion made at the first run's shapes (issue 13), vs later runs and cached reloads.

    python benchmarks/bench_first_run.py [--size 320] [--other 256x192] [--runs 20] [--json out.json]

A small CNN with dynamic H and W (unirt.testing.batched_cnn: 16 channels, x float32[N, 3, H, W]) on each backend
that converts ONNX on load (ncnn, MNN). Per backend, each in a fresh conversion cache:
- load: Session(...) given no shapes (the conversion waits for the first run);
- first run, verified: converts at the run's shape and verifies (the run's inputs, random ones, a second size);
- first run, unverified: the same with backend_options={"conversion": {"verify": False}}; the difference is what
  verification costs;
- later runs: median at the same shape; other size: the first run at another H x W (a dynamic-size conversion
  takes it as is);
- cached reload: a new Session in the same cache, load + first run (the conversion comes from the disk cache);
- onnxruntime: median of the source model on ONNX Runtime, for scale.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3


def measure(backend: str, model: Path, x, other, runs: int, cache: Path, verify: bool) -> dict:
    import unirt

    os.environ["UNIRT_CACHE_DIR"] = str(cache)
    options = {} if verify else {"backend_options": {"conversion": {"verify": False}}}
    t0 = time.perf_counter()
    sess = unirt.Session(model, backend=backend, **options)
    load_ms = _ms(t0)
    t0 = time.perf_counter()
    sess.run(x)
    first_ms = _ms(t0)
    conv = sess.conversion
    later = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sess.run(x)
        later.append(_ms(t0))
    t0 = time.perf_counter()
    sess.run(other)
    other_ms = _ms(t0)
    sess.close()
    t0 = time.perf_counter()
    with unirt.Session(model, backend=backend, **options) as again:
        again.run(x)
        reload_ms = _ms(t0)
        cached = again.conversion.cached
    return {
        "backend": backend,
        "verify": verify,
        "load_ms": load_ms,
        "first_run_ms": first_ms,
        "conversion_s": conv.seconds,
        "dynamic_axes": {k: list(v) for k, v in conv.dynamic_axes.items()},
        "later_median_ms": statistics.median(later),
        "other_size_first_ms": other_ms,
        "cached_reload_ms": reload_ms,
        "reload_from_cache": cached,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=320)
    ap.add_argument("--other", default="256x192")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--json")
    args = ap.parse_args()
    import numpy as np

    import unirt
    from unirt.testing import batched_cnn

    work = Path(tempfile.mkdtemp(prefix="unirt-first-run-"))
    model = batched_cnn(work / "cnn.onnx", channels=16, size=None)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, args.size, args.size)).astype(np.float32)
    h, w = (int(v) for v in args.other.lower().split("x"))
    other = rng.standard_normal((1, 3, h, w)).astype(np.float32)
    rows = []
    for backend in ("ncnn", "mnn"):
        try:
            if not unirt.registry.availability(backend).available:
                continue
        except unirt.UnirtError:
            continue
        for verify in (True, False):
            rows.append(measure(backend, model, x, other, args.runs, work / f"cache-{backend}-{verify}", verify))
    import onnxruntime as ort

    ref = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    ref.run(None, {"x": x})
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        ref.run(None, {"x": x})
        times.append(_ms(t0))
    ort_ms = statistics.median(times)
    print(
        f"small CNN x float32[1, 3, H, W], first run at {args.size}x{args.size}, other size {args.other}; "
        f"onnxruntime median {ort_ms:.2f} ms"
    )
    head = (
        f"{'backend':<8}{'verify':<8}{'load ms':>9}{'1st run ms':>12}{'(convert s)':>12}{'later ms':>10}"
        f"{'other 1st ms':>14}{'reload+run ms':>15}  dynamic"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['backend']:<8}{str(r['verify']):<8}{r['load_ms']:>9.1f}{r['first_run_ms']:>12.0f}"
            f"{r['conversion_s']:>12.2f}{r['later_median_ms']:>10.2f}{r['other_size_first_ms']:>14.2f}"
            f"{r['cached_reload_ms']:>15.1f}  {r['dynamic_axes'] or 'static'}"
        )
    by = {(r["backend"], r["verify"]): r for r in rows}
    for backend in ("ncnn", "mnn"):
        if (backend, True) in by and (backend, False) in by:
            cost = by[(backend, True)]["first_run_ms"] - by[(backend, False)]["first_run_ms"]
            print(f"{backend}: verification adds {cost:.0f} ms to the first run")
    if args.json:
        Path(args.json).write_text(json.dumps({"onnxruntime_median_ms": ort_ms, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
