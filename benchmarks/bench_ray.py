"""The Ray Serve deployment against an in-process Session and `unirt serve`, on one model, loopback only.

    python benchmarks/bench_ray.py [--clients 8] [--seconds 5] [--hidden 1024] [--json out.json]

Phases, each bounded in time, every replica / server instance with 1 thread (1 CPU):
  * in-process: Session.run from 1 caller (the compute floor of one core) and from N caller threads;
  * unirt serve over HTTP (dynamic batching on), N client processes sending batch-1 requests;
  * Ray Serve with 1 and then 2 replicas: N threads calling the Python handle, then N client processes over HTTP
    through Ray's proxy (the same v2 requests as for unirt serve);
  * Ray's own floor: a deployment that returns its input (no model, no unirt), through the handle.
Reports throughput, p50/p99 latency, failures and the mean merged batch (requests per backend run). Every
process shares this machine's cores: clients, proxies and replicas compete for them, which the figures include.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_serve import FEATURES, build_mlp, client_loop, summarize, wait_ready

SERVE_CONFIG = (
    """
max_batch_size: 32
input [ { name: "x" data_type: TYPE_FP32 dims: [ %d ] } ]
dynamic_batching { max_queue_delay_microseconds: 2000 }
parameters { key: "threads" value { string_value: "1" } }
"""
    % FEATURES
)


def tree_cpu_s() -> float:
    """CPU seconds used so far by this process and all its descendants (clients, servers, Ray's processes and
    replicas): the machine is shared, so machine-wide counters would include others' work."""
    parents, times = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended meanwhile
            continue
        pid = int(stat.parent.name)
        parents[pid] = int(fields[1])
        times[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    ours, total = {os.getpid()}, 0
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in ours and pid not in ours:
                ours.add(pid)
                changed = True
    total = sum(times.get(pid, 0) for pid in ours)
    return total / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per request over a phase: what one request costs all the processes involved together."""

    def __enter__(self) -> CpuMeter:
        self.start = tree_cpu_s()
        return self

    def __exit__(self, *exc: object) -> None:
        self.used = tree_cpu_s() - self.start

    def per_request(self, row: dict) -> dict:
        row["cpu_ms_per_request"] = 1e3 * self.used / max(1, row["requests"])
        return row


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def threaded(name: str, call, clients: int, seconds: float, extra: dict | None = None) -> dict:
    """`clients` threads calling `call()` in a loop for `seconds`."""
    for _ in range(20):
        call()
    results: list[list[float]] = [[] for _ in range(clients)]
    failures = [0] * clients
    stop = time.perf_counter() + seconds

    def loop(i: int) -> None:
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                call()
            except Exception:  # counted
                failures[i] += 1
                continue
            results[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(clients)]
    with CpuMeter() as meter:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return meter.per_request(summarize(name, [v for r in results for v in r], sum(failures), seconds, extra))


def http_clients(name: str, port: int, clients: int, seconds: float, extra: dict | None = None) -> dict:
    """bench_serve's client processes (batch-1 v2 requests over HTTP), with the machine's CPU measured over
    exactly their sending window (not their start-up)."""
    ctx = mp.get_context("spawn")
    out: mp.Queue = ctx.Queue()
    start = time.time() + 3.0
    procs = [
        ctx.Process(target=client_loop, args=("http", port, "mlp", start, start + seconds, out)) for _ in range(clients)
    ]
    for proc in procs:
        proc.start()
    time.sleep(max(0.0, start - time.time()))
    with CpuMeter() as meter:
        time.sleep(max(0.0, start + seconds - time.time()))
    latencies, failures = [], 0
    for _ in procs:
        lat, fail = out.get(timeout=seconds + 120)
        latencies += lat
        failures += fail
    for proc in procs:
        proc.join(30)
    return meter.per_request(summarize(name, latencies, failures, seconds, extra))


def in_process(path: Path, clients: int, seconds: float) -> list[dict]:
    import unirt

    x = np.random.default_rng(1).standard_normal((1, FEATURES)).astype(np.float32)
    with unirt.Session(path, backend="onnxruntime", threads=1) as sess:
        return [
            threaded("in-process Session.run, 1 caller", lambda: sess.run({"x": x}), 1, seconds),
            threaded(f"in-process Session.run, {clients} callers", lambda: sess.run({"x": x}), clients, seconds),
        ]


def unirt_serve(repo: Path, clients: int, seconds: float) -> dict:
    ports = [free_port() for _ in range(3)]
    # this Python's unirt (cwd is the repository folder, so -m cannot pick up a source tree)
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unirt",
            "serve",
            "--model-repository",
            str(repo),
            "--http-port",
            str(ports[0]),
            "--grpc-port",
            str(ports[1]),
            "--metrics-port",
            str(ports[2]),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=repo,
    )
    try:
        wait_ready(ports[0])
        import tritonclient.http as httpclient

        stats = httpclient.InferenceServerClient(f"127.0.0.1:{ports[0]}")
        before = stats.get_inference_statistics("mlp")["model_stats"][0]
        row = http_clients("unirt serve, HTTP, 1 instance", ports[0], clients, seconds)
        after = stats.get_inference_statistics("mlp")["model_stats"][0]
        stats.close()
        row["requests_per_run"] = (after["inference_count"] - before["inference_count"]) / max(
            1, after["execution_count"] - before["execution_count"]
        )
        return row
    finally:
        server.terminate()
        server.wait(60)


def replica_totals(handle, replicas: int) -> dict[str, dict]:
    """Each replica's latest stats (calls go to any replica: ask until every one has answered)."""
    seen: dict[str, dict] = {}
    for _ in range(40):
        s = handle.stats.remote().result(timeout_s=30)
        seen[s["replica"]] = s
        if len(seen) >= replicas and _ > 8:
            break
    return seen


def merged_per_run(before: dict[str, dict], after: dict[str, dict]) -> float:
    requests = sum(
        a["session"]["requests"] - before.get(k, {"session": {"requests": 0}})["session"]["requests"]
        for k, a in after.items()
    )
    runs = sum(
        a["session"]["backend_runs"] - before.get(k, {"session": {"backend_runs": 0}})["session"]["backend_runs"]
        for k, a in after.items()
    )
    return requests / max(1, runs)


def ray_phases(path: Path, clients: int, seconds: float, batch_wait: float) -> list[dict]:
    import ray
    from ray import serve

    from unirt.integrations.ray import build

    here = os.getcwd()
    os.chdir(path.parent)  # Ray puts the driver's cwd on its workers' sys.path: keep a source tree's unirt off it
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    finally:
        os.chdir(here)
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    rows = []
    x = np.random.default_rng(1).standard_normal((1, FEATURES)).astype(np.float32)
    try:

        @serve.deployment(max_ongoing_requests=32)
        class Echo:
            async def __call__(self, value):
                return value

        handle = serve.run(Echo.bind(), name="echo", route_prefix=None)
        rows.append(
            threaded(
                "Ray Serve echo (no model), 1 replica, handle",
                lambda: handle.remote(x).result(timeout_s=60),
                clients,
                seconds,
            )
        )
        print(json.dumps(rows[-1]), flush=True)
        serve.delete("echo")
        for replicas in (1, 2):
            handle = serve.run(
                build(
                    path,
                    name="mlp",
                    backend="onnxruntime",
                    threads=1,
                    num_replicas=replicas,
                    max_batch_size=16,
                    batch_wait_timeout_s=batch_wait,
                ),
                name="mlp",
                route_prefix="/",
            )
            label = f"Ray Serve, {replicas} replica{'s' if replicas > 1 else ''}"
            before = replica_totals(handle, replicas)
            row = threaded(f"{label}, Python handle", lambda: handle.remote(x).result(timeout_s=60), clients, seconds)
            after = replica_totals(handle, replicas)
            row["requests_per_run"] = merged_per_run(before, after)
            rows.append(row)
            print(json.dumps(row), flush=True)
            row = http_clients(f"{label}, HTTP", port, clients, seconds)
            row["requests_per_run"] = merged_per_run(after, replica_totals(handle, replicas))
            rows.append(row)
            print(json.dumps(rows[-1]), flush=True)
            serve.delete("mlp")
    finally:
        serve.shutdown()
        ray.shutdown()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--hidden", type=int, default=1024, help="width of the MLP's hidden layers")
    ap.add_argument("--batch-wait", type=float, default=0.002, help="Ray's batch_wait_timeout_s (default 0.002)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        repo = Path(tmp) / "repo"
        (repo / "mlp" / "1").mkdir(parents=True)
        (repo / "mlp" / "config.pbtxt").write_text(SERVE_CONFIG)
        path = build_mlp(repo / "mlp" / "1" / "model.onnx", args.hidden)
        rows = in_process(path, args.clients, args.seconds)
        for row in rows:
            print(json.dumps(row), flush=True)
        rows.append(unirt_serve(repo, args.clients, args.seconds))
        print(json.dumps(rows[-1]), flush=True)
        rows += ray_phases(path, args.clients, args.seconds, args.batch_wait)

    print(
        f"\nMLP {FEATURES}-{args.hidden}-{args.hidden}-10, batch-1 requests, {args.clients} clients, "
        f"{args.seconds:g} s per phase, {os.cpu_count()} CPUs"
    )
    print(f"{'phase':44} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'failed':>6} {'req/run':>8} {'CPU ms/req':>10}")
    for r in rows:
        merged = f"{r['requests_per_run']:.2f}" if "requests_per_run" in r else "-"
        print(
            f"{r['phase']:44} {r['throughput_rps']:8.0f} {r['p50_ms']:8.3f} {r['p99_ms']:8.3f} {r['failed']:6d} "
            f"{merged:>8} {r['cpu_ms_per_request']:10.2f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"clients": args.clients, "seconds_per_phase": args.seconds, "hidden": args.hidden, "phases": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
