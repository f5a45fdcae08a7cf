"""unirt.Session.run against each backend's own best Python path on the same model, interleaved in one process.

    python benchmarks/bench_backends_overhead.py [--rounds 15] [--iterations 300] [--backends openvino,tflite]
                                                 [--json out.json]

Targets (issue 4): unirt / the backend's best path <= 1.05 on real models, <= 1.3 on a tiny model.

Models: a tiny one (MatMul 64x64 + Relu) and a real one per format: squeezenet with random weights (the onnx
wheel's light model, for ONNX Runtime and OpenVINO) and a small NHWC image classifier built as TFLite
(unirt.testing.tflite.conv_net, for TFLite). 1 thread everywhere. Every call is interleaved round by round so
drift on a shared machine hits all of them alike; medians of per-round means are reported.

Each backend's "best path" is its fastest documented way to run and get outputs the caller can keep:
- onnxruntime: InferenceSession.run, and the native session's run (what the unirt plugin calls);
- openvino: InferRequest.infer(share_inputs=True, share_outputs=True), with and without copying the outputs out
  (without a copy they are overwritten by the next call: unirt must hand over arrays the caller owns);
- tflite: Interpreter set_tensor / invoke / get_tensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import unirt
from unirt.testing import matmul_relu
from unirt.testing.random_weights import random_weight_cases
from unirt.testing.tflite import build_tflite


def per_call_us(fn: Callable[[], Any], iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e6


def onnxruntime_calls(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.log_severity_level = 3
    raw = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    names = [o.name for o in raw.get_outputs()]
    native = raw._sess
    return {
        "ort InferenceSession.run": lambda: raw.run(names, feeds),
        "ort native run": lambda: native.run(names, feeds, None),
    }


def openvino_calls(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(
        str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1, "PERFORMANCE_HINT": "LATENCY"}
    )
    request = compiled.create_infer_request()

    def shared_copied():
        result = request.infer(feeds, share_inputs=True, share_outputs=True)
        return [np.array(v) for v in result.values()]

    return {
        "ov infer()": lambda: request.infer(feeds),
        "ov infer(shared) + copy": shared_copied,
        "ov infer(shared), views": lambda: request.infer(feeds, share_inputs=True, share_outputs=True),
    }


def tflite_calls(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, Callable[[], Any]]:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    ins = [(d["index"], feeds[d["name"]]) for d in interp.get_input_details()]
    outs = [d["index"] for d in interp.get_output_details()]

    def run():
        for index, value in ins:
            interp.set_tensor(index, value)
        interp.invoke()
        return [interp.get_tensor(i) for i in outs]

    return {"tflite set/invoke/get": run}


NATIVE = {"onnxruntime": onnxruntime_calls, "openvino": openvino_calls, "tflite": tflite_calls}


def models(tmp: Path) -> dict[str, dict[str, Path]]:
    """{"tiny"/"real": {backend: model path}}."""
    tiny_onnx = matmul_relu(tmp / "matmul_relu.onnx")
    squeezenet = next(c.model for c in random_weight_cases(tmp / "random") if c.name == "light_squeezenet_random")
    return {
        "tiny": {"onnxruntime": tiny_onnx, "openvino": tiny_onnx, "tflite": build_tflite("matmul_relu", tmp)},
        "real": {"onnxruntime": squeezenet, "openvino": squeezenet, "tflite": build_tflite("conv_net", tmp)},
    }


def feeds_for(sess: unirt.Session, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        i.name: rng.standard_normal([d if isinstance(d, int) else 1 for d in i.shape]).astype(i.dtype)
        for i in sess.inputs
    }


def bench(backend: str, path: Path, rounds: int, iterations: int) -> dict[str, Any]:
    sess = unirt.Session(path, backend=backend, threads=1)
    feeds = feeds_for(sess)
    calls = {"unirt.Session.run": lambda: sess.run(feeds)}
    calls.update(NATIVE[backend](path, feeds))
    reference = sess.run(feeds)
    for name, fn in calls.items():  # same answers from every path, and warm-up
        got = fn()
        values = list(got.values()) if hasattr(got, "values") else list(got)
        for value, expected in zip(values, reference.values()):
            np.testing.assert_allclose(np.asarray(value), expected, rtol=1e-5, atol=1e-6, err_msg=name)
        per_call_us(fn, max(iterations // 10, 3))
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, fn in calls.items():
            samples[name].append(per_call_us(fn, iterations))
    med = {name: statistics.median(v) for name, v in samples.items()}
    # the best native path that hands the caller arrays it owns (views overwritten by the next call do not count)
    owned = {n: v for n, v in med.items() if n != "unirt.Session.run" and not n.endswith("views")}
    best = min(owned, key=owned.get)
    return {
        "median_us": med,
        "best_native": best,
        "ratio": med["unirt.Session.run"] / med[best],
        "engine": unirt.backends(names=[backend])[0].engine_version,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--iterations", type=int, default=300, help="calls per round on the tiny model (/20 on real)")
    ap.add_argument("--backends", default="onnxruntime,openvino,tflite")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    installed = {b.name for b in unirt.backends() if b.available}
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = models(Path(tmp))
        for size, targets in paths.items():
            limit = 1.3 if size == "tiny" else 1.05
            iterations = args.iterations if size == "tiny" else max(args.iterations // 20, 5)
            for backend in args.backends.split(","):
                if backend not in installed or backend not in targets:
                    print(f"{backend}: not installed here, skipped")
                    continue
                r = bench(backend, targets[backend], args.rounds, iterations)
                report[f"{backend}/{size}"] = r
                print(
                    f"{backend} {r['engine']}, {size} model {targets[backend].name}, 1 thread, "
                    f"{args.rounds} rounds x {iterations} calls, medians:"
                )
                for name, value in r["median_us"].items():
                    print(f"  {name:<28} {value:10.1f} us/call")
                verdict = "ok" if r["ratio"] <= limit else "OVER"
                print(f"  ratio unirt / {r['best_native']}: {r['ratio']:.3f} (target <= {limit}) {verdict}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
