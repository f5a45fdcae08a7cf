"""unirt.Session.run on ncnn and MNN against each library's own best Python path, on the same converted model,
interleaved in one process; and the time of a conversion on first load and on a cache hit.

    python benchmarks/bench_ncnn_mnn_overhead.py [--rounds 60] [--iterations 200] [--json out.json]

Targets (issue 5): overhead <= 5% on real models (ratio <= 1.05), <= 1.3x on a tiny model.
The libraries' own paths, with the same settings as unirt (fp32, one thread):
- ncnn: `ex = net.create_extractor(); ex.input(name, ncnn.Mat(sample)); ex.extract(out)`, output copied to numpy
  (a Mat wrapping the caller's array: no input copy);
- MNN: `module.forward([MNN.expr.const(x, shape, NCHW)])`, output `read()` copied (the next forward reuses it).
The real model is the onnx wheel's SqueezeNet (light_squeezenet, 0.7 GFLOPs); the tiny one a 64x64 MatMul+Relu.
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

import unirt
from unirt.testing import conformance_cases, matmul_relu


def per_call_us(fn, iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e6


def ncnn_native(sess, x):
    import ncnn

    conv = sess.conversion
    net = ncnn.Net()
    net.opt.use_fp16_packed = net.opt.use_fp16_storage = net.opt.use_fp16_arithmetic = False
    net.opt.use_bf16_storage = False
    net.opt.num_threads = 1
    net.load_param(str(conv.path))
    net.load_model(str(conv.path.with_suffix(".bin")))
    batched = sess._runner._inputs[0].batched  # pnnx dropped a leading batch of 1
    sample = np.ascontiguousarray(x[0] if batched else x)

    def run():
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(sample))
        _, out = ex.extract("out0")
        return np.array(out)

    return run


def mnn_native(sess, x):
    import MNN.expr as F
    import MNN.nn as nn

    conv = sess.conversion
    module = nn.load_module_from_file(str(conv.path), [], [], precision_mode=F.PrecisionMode.High, thread_num=1)
    shape = list(x.shape)

    def run():
        return np.array(module.forward([F.const(x, shape, F.NCHW)])[0].read())

    return run


NATIVE = {"ncnn": ncnn_native, "mnn": mnn_native}


def measure(name: str, backend: str, source: Path, x: np.ndarray, rounds: int, iterations: int) -> dict:
    t0 = time.perf_counter()
    first = unirt.Session(source, backend=backend, threads=1, backend_options={"conversion": {"cache": False}})
    first_load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sess = unirt.Session(source, backend=backend, threads=1)
    cached_load_s = time.perf_counter() - t0
    assert sess.conversion is not None and sess.conversion.cached
    native = NATIVE[backend](sess, x)
    feed = {sess.inputs[0].name: x}
    np.testing.assert_allclose(
        np.asarray(native()).reshape(-1), next(iter(sess.run(feed).values())).reshape(-1), rtol=1e-4, atol=1e-6
    )
    calls = {"unirt": lambda: sess.run(feed), "native": native}
    for fn in calls.values():  # warm up
        per_call_us(fn, max(3, iterations // 10))
    times: dict[str, list[float]] = {k: [] for k in calls}
    for r in range(rounds):
        for k, fn in calls.items() if r % 2 == 0 else reversed(calls.items()):  # neither always goes first
            times[k].append(per_call_us(fn, iterations))
    med = {k: statistics.median(v) for k, v in times.items()}
    first.close()
    return {
        "model": name,
        "backend": backend,
        "unirt_us": med["unirt"],
        "native_us": med["native"],
        "ratio": med["unirt"] / med["native"],
        "conversion_first_load_s": first_load_s,
        "conversion_seconds": first.conversion.seconds,
        "cache_hit_load_s": cached_load_s,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--iterations", type=int, default=200, help="calls per round on the tiny model (real model: /100)")
    ap.add_argument("--backends", default="ncnn,mnn")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["UNIRT_CACHE_DIR"] = str(Path(tmp) / "cache")
        squeezenet = next(c for c in conformance_cases(("light",)) if c.name == "light_squeezenet")
        tiny = matmul_relu(Path(tmp) / "matmul_relu.onnx", n=64)
        x_tiny = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
        # Few calls per round on the real model, so both sides of a round see the same machine load.
        models = [
            ("squeezenet", squeezenet.model, squeezenet.inputs[0], max(2, args.iterations // 100)),
            ("tiny matmul 64x64", tiny, x_tiny, args.iterations),
        ]
        for backend in args.backends.split(","):
            for name, source, x, iterations in models:
                rows.append(measure(name, backend, source, x, args.rounds, iterations))
    print(
        f"{'backend':<6} {'model':<18} {'unirt us':>10} {'native us':>10} {'ratio':>6} {'convert s':>9} "
        f"{'1st load s':>10} {'cached load s':>13}"
    )
    for r in rows:
        print(
            f"{r['backend']:<6} {r['model']:<18} {r['unirt_us']:>10.1f} {r['native_us']:>10.1f} {r['ratio']:>6.3f} "
            f"{r['conversion_seconds']:>9.2f} {r['conversion_first_load_s']:>10.2f} {r['cache_hit_load_s']:>13.3f}"
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
