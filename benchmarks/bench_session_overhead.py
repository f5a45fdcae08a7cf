"""unirt.Session.run against onnxruntime's own APIs on the same tiny model, interleaved in one process.

    python benchmarks/bench_session_overhead.py [--size 64] [--rounds 30] [--iterations 2000] [--json out.json]

Targets (issue 3): unirt / InferenceSession.run <= 1.0, and unirt / ORT's leanest path <= 1.3.
"Leanest path" is the fastest of ORT's low-overhead calls that still return a fresh numpy output:
OrtValue (the native session's run_with_ort_values + .numpy(), with the input wrapped per call or, as a floor,
once outside the timed loop) and IOBinding (bind input + output, run_with_iobinding).
Every call is interleaved round by round so drift on a shared machine hits all of them alike; medians are reported.
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
from unirt.testing import matmul_relu


def per_call_us(fn, iterations: int) -> float:
    t0 = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - t0) / iterations * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--iterations", type=int, default=2000)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = matmul_relu(Path(tmp) / "matmul_relu.onnx", n=args.size)
        x = np.random.default_rng(0).standard_normal((args.size, args.size)).astype(np.float32)

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        raw = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        sess = unirt.Session(path, backend="onnxruntime", device="cpu", threads=1)

        binding = raw.io_binding()

        def ort_iobinding():
            binding.bind_cpu_input("x", x)
            binding.bind_output("y", "cpu")
            raw.run_with_iobinding(binding)
            return binding.get_outputs()[0].numpy()

        # OrtValue calls go to the native session object (InferenceSession._sess): the public
        # run_with_ort_values wrapper adds tens of microseconds per call in onnxruntime 1.32.
        native = raw._sess
        C = ort.capi._pybind_state
        cpu = C.OrtDevice(C.OrtDevice.cpu(), C.OrtDevice.default_memory(), 0)

        def ort_ortvalue():
            return native.run_with_ort_values({"x": C.OrtValue.ortvalue_from_numpy(x, cpu)}, ["y"], None)[0].numpy()

        prebuilt = C.OrtValue.ortvalue_from_numpy(x, cpu)

        def ort_ortvalue_prebuilt():  # the floor: input wrapped once, outside the timed call
            return native.run_with_ort_values({"x": prebuilt}, ["y"], None)[0].numpy()

        calls = {
            "unirt.Session.run": lambda: sess.run({"x": x}),
            "ort.InferenceSession.run": lambda: raw.run(None, {"x": x}),
            "ort IOBinding": ort_iobinding,
            "ort OrtValue (native)": ort_ortvalue,
            "ort OrtValue (native, prebuilt)": ort_ortvalue_prebuilt,
        }
        reference = raw.run(None, {"x": x})[0]
        for name, fn in calls.items():  # same answer from every path, and warm-up
            result = fn()
            got = result["y"] if isinstance(result, dict) else result[0] if isinstance(result, list) else result
            np.testing.assert_array_equal(got, reference, err_msg=name)
            per_call_us(fn, args.iterations)
        samples: dict[str, list[float]] = {name: [] for name in calls}
        for _ in range(args.rounds):
            for name, fn in calls.items():
                samples[name].append(per_call_us(fn, args.iterations))

    med = {name: statistics.median(v) for name, v in samples.items()}
    lean_name = min((n for n in calls if n.startswith("ort ") and n != "ort.InferenceSession.run"), key=med.__getitem__)
    ratio_plain = med["unirt.Session.run"] / med["ort.InferenceSession.run"]
    ratio_lean = med["unirt.Session.run"] / med[lean_name]
    print(
        f"model: MatMul({args.size}x{args.size}) + Relu, 1 thread, onnxruntime {ort.__version__}, "
        f"{args.rounds} rounds x {args.iterations} calls, medians"
    )
    for name, value in med.items():
        print(f"  {name:<32} {value:8.2f} us/call")
    print(f"ratio unirt / InferenceSession.run : {ratio_plain:.3f}  (target <= 1.0)")
    print(f"ratio unirt / leanest ({lean_name}) : {ratio_lean:.3f}  (target <= 1.3)")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "median_us": med,
                    "ratio_vs_run": ratio_plain,
                    "ratio_vs_leanest": ratio_lean,
                    "leanest": lean_name,
                    "onnxruntime": ort.__version__,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
