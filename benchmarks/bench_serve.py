"""Load test of `unirt serve`: N concurrent tritonclient clients against a real server process on loopback.

    python benchmarks/bench_serve.py [--clients 16] [--seconds 10] [--protocol http|grpc|both] [--json out.json]

Phases, each bounded in time, on one server process that serves the same MLP twice (dynamic batching on, off):
  * in-process: N threads calling unirt.Session.run directly (batch 1), the floor the server adds to;
  * for each protocol: N client processes sending batch-1 requests to the model with dynamic batching on, then
    to the one with it off.
Reports throughput, p50/p99 latency, failed requests, the batching ratio (inferences / executions, from the
server's statistics), and the server's RSS sampled through the whole run (first, last, max: a leak shows as
growth from phase to phase). Loopback only; every loop stops by itself.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FEATURES, CLASSES = 256, 10
BATCHED = (
    """
max_batch_size: 32
input [ { name: "x" data_type: TYPE_FP32 dims: [ %d ] } ]
dynamic_batching { max_queue_delay_microseconds: 1000 }
"""
    % FEATURES
)
SINGLE = (
    """
max_batch_size: 32
input [ { name: "x" data_type: TYPE_FP32 dims: [ %d ] } ]
"""
    % FEATURES
)


def build_mlp(path: Path, hidden: int) -> Path:
    """x float32[N, 256] -> Gemm hidden -> Relu -> Gemm hidden -> Relu -> Gemm 10 (hidden 2048: 4.7 M MACs a row)."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    dims = [FEATURES, hidden, hidden, CLASSES]
    nodes, inits, prev = [], [], "x"
    for i in range(3):
        w = (rng.standard_normal((dims[i], dims[i + 1])) / np.sqrt(dims[i])).astype(np.float32)
        inits += [nh.from_array(w, f"w{i}"), nh.from_array(np.zeros(dims[i + 1], np.float32), f"b{i}")]
        out = "y" if i == 2 else f"h{i}"
        nodes.append(h.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if i == 2 else f"g{i}"]))
        if i < 2:
            nodes.append(h.make_node("Relu", [f"g{i}"], [out]))
        prev = out
    graph = h.make_graph(
        nodes,
        "mlp",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", FEATURES])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", CLASSES])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def client_loop(protocol: str, port: int, model: str, start: float, stop: float, out: mp.Queue) -> None:
    """One client: batch-1 requests in a loop from `start` to `stop` (wall clock); reports latencies and failures."""
    if protocol == "http":
        import tritonclient.http as tc

        client = tc.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=60)
    else:
        import tritonclient.grpc as tc

        client = tc.InferenceServerClient(f"127.0.0.1:{port}")
    x = np.random.default_rng(port).standard_normal((1, FEATURES)).astype(np.float32)
    tensor = tc.InferInput("x", [1, FEATURES], "FP32")
    tensor.set_data_from_numpy(x)
    latencies, failures = [], 0
    while time.time() < start:
        time.sleep(0.001)
    while time.time() < stop:
        t0 = time.perf_counter()
        try:
            result = client.infer(model, [tensor])
            if result.as_numpy("y").shape != (1, CLASSES):
                failures += 1
        except Exception:  # a failed request is counted, not fatal
            failures += 1
            continue
        latencies.append(time.perf_counter() - t0)
    client.close()
    out.put((latencies, failures))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def summarize(name: str, latencies: list[float], failures: int, seconds: float, extra: dict | None = None) -> dict:
    lat = np.array(latencies) * 1e3
    row = {
        "phase": name,
        "requests": len(latencies),
        "failed": failures,
        "throughput_rps": len(latencies) / seconds,
        "p50_ms": float(np.percentile(lat, 50)) if lat.size else None,
        "p99_ms": float(np.percentile(lat, 99)) if lat.size else None,
    }
    row.update(extra or {})
    return row


def run_clients(protocol: str, port: int, model: str, clients: int, seconds: float) -> tuple[list[float], int]:
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 3.0  # spawned clients import tritonclient first; the clock starts for all at once
    procs = [
        ctx.Process(target=client_loop, args=(protocol, port, model, start, start + seconds, out))
        for _ in range(clients)
    ]
    for p in procs:
        p.start()
    latencies, failures = [], 0
    for _ in procs:
        lat, fail = out.get(timeout=seconds + 120)
        latencies += lat
        failures += fail
    for p in procs:
        p.join(30)
    return latencies, failures


def in_process(path: Path, clients: int, seconds: float) -> dict:
    import unirt

    with unirt.Session(path, backend="onnxruntime") as sess:
        x = np.random.default_rng(1).standard_normal((1, FEATURES)).astype(np.float32)
        for _ in range(50):
            sess.run({"x": x})
        results: list[list[float]] = [[] for _ in range(clients)]
        stop = time.perf_counter() + seconds

        def loop(i: int) -> None:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                sess.run({"x": x})
                results[i].append(time.perf_counter() - t0)

        threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return summarize("in-process Session.run (threads)", [v for r in results for v in r], 0, seconds)


def wait_ready(port: int, timeout: float = 60) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.is_server_ready():
                break
        except Exception:  # not up yet
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become ready")
        time.sleep(0.1)
    client.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--protocol", choices=["http", "grpc", "both"], default="both")
    ap.add_argument("--hidden", type=int, default=2048, help="width of the MLP's hidden layers")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    protocols = ["http", "grpc"] if args.protocol == "both" else [args.protocol]

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        for name, config in (("mlp_batched", BATCHED), ("mlp_single", SINGLE)):
            (repo / name / "1").mkdir(parents=True)
            (repo / name / "config.pbtxt").write_text(config)
        path = build_mlp(repo / "mlp_batched" / "1" / "model.onnx", args.hidden)
        shutil.copy(path, repo / "mlp_single" / "1" / "model.onnx")

        rows = [in_process(path, args.clients, args.seconds)]
        print(json.dumps(rows[-1]), flush=True)
        # the unirt of this interpreter (python -m unirt): no activated venv or PATH needed
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "unirt",
                "serve",
                "--model-repository",
                str(repo),
                "--http-port",
                "0",
                "--grpc-port",
                "0",
                "--metrics-port",
                "0",
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=tmp,
        )
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in server.stdout], daemon=True).start()
        ports = {}
        while len(ports) < 3:
            name, address = lines.get(timeout=60).strip()[len("unirt serve: ") :].split(" on ")
            ports[name] = int(address.rsplit(":", 1)[1])
        rss: list[tuple[float, int]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.wait(0.5):
                rss.append((time.time(), rss_kib(server.pid)))

        try:
            wait_ready(ports["http"])
            threading.Thread(target=sample, daemon=True).start()
            import tritonclient.http as httpclient

            stats_client = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}")
            for protocol in protocols:
                for model, label in (("mlp_batched", "dynamic batching on"), ("mlp_single", "dynamic batching off")):
                    before = stats_client.get_inference_statistics(model)["model_stats"][0]
                    rss_before = rss_kib(server.pid)
                    lat, fail = run_clients(protocol, ports[protocol], model, args.clients, args.seconds)
                    after = stats_client.get_inference_statistics(model)["model_stats"][0]
                    inferences = after["inference_count"] - before["inference_count"]
                    executions = max(1, after["execution_count"] - before["execution_count"])
                    rows.append(
                        summarize(
                            f"{protocol} {label}",
                            lat,
                            fail,
                            args.seconds,
                            {
                                "inferences_per_execution": inferences / executions,
                                "server_rss_mib_before": rss_before / 1024,
                                "server_rss_mib_after": rss_kib(server.pid) / 1024,
                            },
                        )
                    )
                    print(json.dumps(rows[-1]), flush=True)
            stats_client.close()
        finally:
            sampling.set()
            server.terminate()
            code = server.wait(60)
        values = [v for _, v in rss]
        report = {
            "clients": args.clients,
            "seconds_per_phase": args.seconds,
            "hidden": args.hidden,
            "phases": rows,
            "server_rss_mib": {
                "first": values[0] / 1024 if values else None,
                "last": values[-1] / 1024 if values else None,
                "max": max(values) / 1024 if values else None,
                "samples": len(values),
            },
            "server_exit_code": code,
        }

    print()
    print(f"{'phase':40} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'batch':>6} {'RSS MiB':>15}")
    for r in report["phases"]:
        batch = f"{r['inferences_per_execution']:.2f}" if "inferences_per_execution" in r else "-"
        mem = (
            f"{r['server_rss_mib_before']:.0f}->{r['server_rss_mib_after']:.0f}"
            if "server_rss_mib_before" in r
            else "-"
        )
        print(
            f"{r['phase']:40} {r['throughput_rps']:9.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['failed']:6d} "
            f"{batch:>6} {mem:>15}"
        )
    m = report["server_rss_mib"]
    print(
        f"server RSS over the run: first {m['first']:.1f} MiB, last {m['last']:.1f} MiB, max {m['max']:.1f} MiB "
        f"({m['samples']} samples); server exit code {code} after SIGTERM"
    )
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    sys.exit(main())
