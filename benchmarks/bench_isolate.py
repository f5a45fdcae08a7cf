"""(d) Per-call overhead of isolate=True (the backend in a child process) on a small model, interleaved.

    python benchmarks/bench_isolate.py [--rounds 20] [--iterations 500] [--json out.json]
    python benchmarks/bench_isolate.py --backends onnxruntime,openvino,ncnn,mnn,tflite --serve [--rounds 5]

Session.run in-process vs isolate=True on unirt.testing.dynamic_mlp (x float32[4, 8]), 1 thread, medians.
Target: under 100 us added per call. For reference, a plain blocking pipe round trip between two processes is
measured too: its cost is mostly the wake-up of a sleeping process, which depends on how busy the machine's CPUs
are; isolate=True polls briefly before sleeping to avoid it.

`--backends`: the same comparison for each backend named (ONNX engines on the ONNX model, converted on load where
the backend converts; tflite on the same MLP built as .tflite), so `unirt serve --isolate auto` can weigh the cost
per engine. `--serve`: the cost per request through `unirt serve` (HTTP, tritonclient, one client, requests
in sequence) of the same onnxruntime model served in-process and isolated, interleaved.
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


def per_backend(backends: list[str], rounds: int, iterations: int, tmp: Path) -> dict[str, dict[str, float]]:
    """Median us/call in-process and isolated, per backend, interleaved round by round."""
    from unirt.testing.tflite import build_tflite

    onnx_path = dynamic_mlp(tmp / "mlp.onnx")
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    sessions = {}
    for name in backends:
        path = build_tflite("dynamic_mlp", tmp) if name == "tflite" else onnx_path
        try:
            plain = unirt.Session(path, backend=name, threads=1)
            isolated = unirt.Session(path, backend=name, threads=1, isolate=True)
        except unirt.UnirtError as exc:
            print(f"  {name}: skipped ({exc})")
            continue
        np.testing.assert_allclose(isolated.run(x)["probs"], plain.run(x)["probs"], rtol=1e-5)
        sessions[name] = (plain, isolated)
        for sess in (plain, isolated):
            per_call_us(lambda s=sess: s.run(x), iterations)
    samples: dict[str, dict[str, list[float]]] = {n: {"in-process": [], "isolated": []} for n in sessions}
    for _ in range(rounds):
        for name, (plain, isolated) in sessions.items():
            samples[name]["in-process"].append(per_call_us(lambda: plain.run(x), iterations))
            samples[name]["isolated"].append(per_call_us(lambda: isolated.run(x), iterations))
    for plain, isolated in sessions.values():
        plain.close()
        isolated.close()
    return {n: {k: statistics.median(v) for k, v in kinds.items()} for n, kinds in samples.items()}


def serve_cost(rounds: int, requests: int, tmp: Path) -> dict[str, float]:
    """Median ms/request through unirt serve (HTTP) for the MLP served in-process and isolated."""
    import tritonclient.http as httpclient

    from unirt.serve import ServeOptions, ServerThread

    repo = tmp / "repo"
    for name, isolate in (("inproc", "false"), ("isolated", "true")):
        (repo / name / "1").mkdir(parents=True)
        dynamic_mlp(repo / name / "1" / "model.onnx")
        (repo / name / "config.pbtxt").write_text(
            f'backend: "onnxruntime"\nmax_batch_size: 0\nparameters {{ key: "isolate" value {{ string_value: '
            f'"{isolate}" }} }}\nparameters {{ key: "threads" value {{ string_value: "1" }} }}\n'
        )
    options = ServeOptions(model_repository=repo, http_port=0, grpc_port=None, metrics_port=None)
    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    with ServerThread(options) as server:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{server.ports['http']}")
        inp = httpclient.InferInput("x", [4, 8], "FP32")
        inp.set_data_from_numpy(x, binary_data=True)
        samples: dict[str, list[float]] = {"inproc": [], "isolated": []}
        for model in samples:
            per_call_us(lambda m=model: client.infer(m, [inp]), requests // 4)
        for _ in range(rounds):
            for model in samples:
                samples[model].append(per_call_us(lambda m=model: client.infer(m, [inp]), requests) / 1000)
        client.close()
    return {k: statistics.median(v) for k, v in samples.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--backends", help="comma-separated backends to compare (instead of the onnxruntime run)")
    ap.add_argument("--serve", action="store_true", help="also the cost per request through unirt serve")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    if args.backends or args.serve:
        report: dict = {"cpus": os.cpu_count(), "load_average": os.getloadavg()[0]}
        with tempfile.TemporaryDirectory() as tmp:
            if args.backends:
                rows = per_backend(args.backends.split(","), args.rounds, args.iterations, Path(tmp))
                report["per_backend_us"] = rows
                print(
                    f"dynamic_mlp x[4,8], 1 thread, {args.rounds} rounds x {args.iterations} calls, medians, "
                    f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
                )
                print(f"  {'backend':<12} {'in-process us':>14} {'isolated us':>12} {'added us':>9}")
                for name, r in rows.items():
                    print(
                        f"  {name:<12} {r['in-process']:14.1f} {r['isolated']:12.1f} "
                        f"{r['isolated'] - r['in-process']:9.1f}"
                    )
            if args.serve:
                cost = serve_cost(args.rounds, max(50, args.iterations // 5), Path(tmp))
                report["serve_ms_per_request"] = cost
                print(
                    f"unirt serve, HTTP, 1 client in sequence: in-process {cost['inproc']:.3f} ms/request, "
                    f"isolated {cost['isolated']:.3f} ms/request (added {cost['isolated'] - cost['inproc']:.3f} ms)"
                )
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))
        return
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
    print(
        f"dynamic_mlp x[4,8], 1 thread, {args.rounds} rounds x {args.iterations} calls, medians, "
        f"{os.cpu_count()} CPUs (load average {os.getloadavg()[0]:.1f})"
    )
    for name, value in med.items():
        print(f"  Session.run {name:<14} {value:8.1f} us/call")
    print(f"  blocking pipe round trip  {floor:8.1f} us  (reference)")
    print(f"added by isolate=True: {added:.1f} us/call (target < 100 us)")
    if args.json:
        args.json.write_text(json.dumps({"median_us": med, "added_us": added, "pipe_round_trip_us": floor}, indent=2))


if __name__ == "__main__":
    main()
