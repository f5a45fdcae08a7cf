"""Soak test of `unirt serve` (not CI): minutes of load at ~80% of measured capacity over HTTP and gRPC, with
malformed requests and a model child killed every minute, watching the server's memory, descriptors and
shared memory.

    python benchmarks/soak_serve.py [--minutes 2] [--load 0.8] [--malformed 0.05] [--kill-every 60] [--json out.json]

1. A real server process (`unirt serve --model-repository ...` on 127.0.0.1, free ports) serving an MLP whose
   config asks for isolation (`parameters { key: "isolate" ... }`; `--isolate always` is passed when the server
   has that flag).
2. Capacity: closed-loop clients (half tritonclient.http, half tritonclient.grpc) as fast as they can for
   --capacity-seconds; then each client is paced so the total is --load x that rate.
3. --malformed of the requests are wrong on purpose (a wrong shape, a wrong datatype, an unknown model, a body
   that is not JSON): each must get its 4xx / INVALID_ARGUMENT / NOT_FOUND, never a 5xx.
4. Every --kill-every seconds one child of the server whose command line holds `unirt._isolated_worker` is
   SIGKILLed (none found: said, and the run goes on). Only requests in flight on the killed child may fail.
5. Every few seconds: the server's RSS (its own and its children's), open file descriptors, children.

Reports requests served, errors by status (expected: the malformed ones; tolerated: 5xx within a few seconds of a
kill; anything else is a failure), wrong answers, p99 per window, RSS and descriptors over time (flat after
warm-up: RSS within 5%), and /dev/shm segments of the server's processes left after it stopped (expected 0).
Exit status 1 when a check fails. Loopback only; every loop stops by itself.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

FEATURES, HIDDEN, CLASSES = 64, 256, 10
CONFIG = """
max_batch_size: 16
input [ { name: "x" data_type: TYPE_FP32 dims: [ %d ] } ]
output [ { name: "y" data_type: TYPE_FP32 dims: [ %d ] } ]
dynamic_batching { max_queue_delay_microseconds: 500 }
instance_group [ { count: 2 kind: KIND_CPU } ]
parameters { key: "isolate" value { string_value: "true" } }
""" % (FEATURES, CLASSES)
CRASH_WINDOW = 5.0  # seconds after a kill in which 5xx / UNAVAILABLE answers are the kill's in-flight requests
SETTLE = 10.0  # seconds after a kill in which a restarting child's RSS is not judged (it is reloading its model)
SAMPLE_EVERY = 2.0
UNIRT = shutil.which("unirt", path=os.path.dirname(sys.executable)) or shutil.which("unirt") or "unirt"


def build_mlp(path: Path) -> Path:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    dims = [FEATURES, HIDDEN, CLASSES]
    w0 = (rng.standard_normal((dims[0], dims[1])) / 8).astype(np.float32)
    w1 = (rng.standard_normal((dims[1], dims[2])) / 16).astype(np.float32)
    graph = h.make_graph(
        [
            h.make_node("Gemm", ["x", "w0"], ["g"]),
            h.make_node("Relu", ["g"], ["r"]),
            h.make_node("Gemm", ["r", "w1"], ["y"]),
        ],
        "soak_mlp",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", FEATURES])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", CLASSES])],
        [nh.from_array(w0, "w0"), nh.from_array(w1, "w1")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


# -- the server process and what it holds ------------------------------------------------------------------------


def start_server(repo: Path, isolate_flag: bool) -> tuple[subprocess.Popen, dict[str, int]]:
    args = [
        UNIRT,
        "serve",
        "--model-repository",
        str(repo),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
    ]
    if isolate_flag:
        args += ["--isolate", "always"]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    ports: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while len(ports) < 3:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            proc.kill()
            raise SystemExit("the server printed no ports in 120 s") from None
        if line.startswith("unirt serve: ") and " on " in line:
            name, address = line[len("unirt serve: ") :].strip().split(" on ")
            ports[name] = int(address.rsplit(":", 1)[1])
    return proc, ports


def wait_ready(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/v2/health/ready")
            if conn.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def children(pid: int) -> list[int]:
    """Every descendant of `pid` (from /proc)."""
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids[ppid].append(int(entry))
    out, todo = [], [pid]
    while todo:
        for kid in kids.get(todo.pop(), []):
            out.append(kid)
            todo.append(kid)
    return out


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def rss_mib(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def shm_segments(pids: set[int]) -> list[str]:
    """unirt's segments (/dev/shm/unirt.<pid>.<n>) created by any of `pids`."""
    try:
        names = os.listdir("/dev/shm")
    except OSError:
        return []
    return sorted(
        n for n in names if n.startswith("unirt.") and n.split(".")[1].isdigit() and int(n.split(".")[1]) in pids
    )


# -- clients -----------------------------------------------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.served: Counter = Counter()  # protocol -> good answers
        self.latencies: list[tuple[float, float]] = []  # (time, seconds) of good requests
        self.errors: Counter = Counter()  # (kind, status) -> count; kind: malformed | crash | unexpected
        self.wrong = 0
        self.malformed_accepted = 0
        self.kills: list[float] = []
        self.examples: dict[tuple[str, str], str] = {}


def _status(exc: Exception, protocol: str) -> str:
    status = getattr(exc, "status", lambda: None)()
    if status:
        return str(status).replace("StatusCode.", "")
    return type(exc).__name__


def client_loop(
    protocol: str,
    ports: dict[str, int],
    stats: Stats,
    x: np.ndarray,
    expected: np.ndarray,
    rate: float | None,
    stop: float,
    malformed: float,
    seed: int,
    record: bool,
) -> int:
    """Requests from now to `stop` (monotonic): as fast as possible (rate None) or paced at `rate` per second.
    Returns the good answers."""
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient

    tc = httpclient if protocol == "http" else grpcclient
    url = f"127.0.0.1:{ports[protocol]}"
    client = tc.InferenceServerClient(url, network_timeout=30) if protocol == "http" else tc.InferenceServerClient(url)
    rng = np.random.default_rng(seed)
    good = tc.InferInput("x", list(x.shape), "FP32")
    good.set_data_from_numpy(x)
    bad_shape = tc.InferInput("x", [x.shape[0], FEATURES - 1], "FP32")
    bad_shape.set_data_from_numpy(np.zeros((x.shape[0], FEATURES - 1), np.float32))
    bad_type = tc.InferInput("x", list(x.shape), "INT32")
    bad_type.set_data_from_numpy(np.zeros(x.shape, np.int32))
    done, n, t0 = 0, 0, time.monotonic()
    while True:
        now = time.monotonic()
        if now >= stop:
            break
        if rate is not None:
            due = t0 + n / rate
            if due > now:
                time.sleep(min(due - now, stop - now))
                continue
        n += 1
        inject = record and rng.random() < malformed
        start = time.monotonic()
        try:
            if inject:
                kind = int(rng.integers(4))
                if kind == 0:
                    client.infer("soak", [bad_shape])
                elif kind == 1:
                    client.infer("soak", [bad_type])
                elif kind == 2:
                    client.infer("no_such_model", [good])
                elif protocol == "http":  # a body that is not JSON
                    conn = http.client.HTTPConnection("127.0.0.1", ports["http"], timeout=30)
                    conn.request("POST", "/v2/models/soak/infer", body=b"{not json", headers={})
                    resp = conn.getresponse()
                    resp.read()
                    conn.close()
                    if resp.status >= 500 or resp.status < 400:
                        raise RuntimeError(f"malformed body answered {resp.status}")
                    with stats.lock:
                        stats.errors[("malformed", str(resp.status))] += 1
                    continue
                else:
                    client.infer("soak", [good], outputs=[tc.InferRequestedOutput("no_such_output")])
                with stats.lock:
                    stats.malformed_accepted += 1
                continue
            result = client.infer("soak", [good]).as_numpy("y")
        except Exception as exc:  # every answer is classified
            status = _status(exc, protocol)
            after_kill = any(0 <= time.time() - k <= CRASH_WINDOW for k in stats.kills)
            server_side = status.startswith("5") or status in ("INTERNAL", "UNAVAILABLE")
            if inject and not server_side:
                kind = "malformed"
            elif server_side and after_kill:
                kind = "crash"
            else:
                kind = "unexpected"
            with stats.lock:
                stats.errors[(kind, status)] += 1
                stats.examples.setdefault((kind, status), str(exc)[:200])
            continue
        elapsed = time.monotonic() - start
        if not np.allclose(result, expected, rtol=1e-4, atol=1e-5):
            with stats.lock:
                stats.wrong += 1
            continue
        done += 1
        if record:
            with stats.lock:
                stats.served[protocol] += 1
                stats.latencies.append((time.time(), elapsed))
    client.close()
    return done


def run_clients(
    count: int,
    ports: dict[str, int],
    stats: Stats,
    x: np.ndarray,
    expected: np.ndarray,
    rate: float | None,
    seconds: float,
    malformed: float,
    record: bool,
) -> int:
    stop = time.monotonic() + seconds
    results: list[int] = [0] * count
    threads = []
    for i in range(count):
        protocol = "http" if i % 2 == 0 else "grpc"

        def work(i: int = i, protocol: str = protocol) -> None:
            results[i] = client_loop(protocol, ports, stats, x, expected, rate, stop, malformed, 1000 + i, record)

        threads.append(threading.Thread(target=work, daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return sum(results)


# -- the run -----------------------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--load", type=float, default=0.8, help="fraction of measured capacity (default 0.8)")
    ap.add_argument("--capacity-seconds", type=float, default=6.0)
    ap.add_argument("--clients", type=int, default=8, help="client threads, half HTTP half gRPC (default 8)")
    ap.add_argument("--malformed", type=float, default=0.05)
    ap.add_argument("--kill-every", type=float, default=60.0)
    ap.add_argument("--window", type=float, default=10.0, help="seconds per p99 window (default 10)")
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds of the run before flatness is judged")
    ap.add_argument("--json", help="write the figures here")
    args = ap.parse_args()

    help_text = subprocess.run([UNIRT, "serve", "--help"], capture_output=True, text=True).stdout
    isolate_flag = "--isolate" in help_text
    tmp = Path(tempfile.mkdtemp(prefix="unirt_soak_"))
    (tmp / "repo" / "soak" / "1").mkdir(parents=True)
    build_mlp(tmp / "repo" / "soak" / "1" / "model.onnx")
    (tmp / "repo" / "soak" / "config.pbtxt").write_text(CONFIG)
    x = np.random.default_rng(1).standard_normal((1, FEATURES)).astype(np.float32)
    import unirt

    with unirt.Session(tmp / "repo" / "soak" / "1" / "model.onnx", backend="onnxruntime") as sess:
        expected = sess.run({"x": x})["y"]

    proc, ports = start_server(tmp / "repo", isolate_flag)
    print(
        f"server pid {proc.pid}, ports {ports}, isolate flag {'--isolate always' if isolate_flag else 'absent'}",
        flush=True,
    )
    stats = Stats()
    seen_pids = {proc.pid}
    samples: list[dict] = []
    try:
        wait_ready(ports["http"])
        run_clients(args.clients, ports, stats, x, expected, None, 2.0, 0.0, False)  # warm the connections
        capacity = run_clients(args.clients, ports, stats, x, expected, None, args.capacity_seconds, 0.0, False)
        capacity_rps = capacity / args.capacity_seconds
        target = args.load * capacity_rps
        print(
            f"capacity {capacity_rps:.0f} req/s with {args.clients} clients; soaking at {target:.0f} req/s "
            f"({args.load:.0%}) for {args.minutes} min",
            flush=True,
        )

        seconds = args.minutes * 60
        t_start = time.time()
        stop_monitor = threading.Event()
        kill_log: list[dict] = []

        def monitor() -> None:
            next_kill = time.monotonic() + args.kill_every
            while not stop_monitor.is_set():
                kids = children(proc.pid)
                seen_pids.update(kids)
                samples.append(
                    {
                        "t": round(time.time() - t_start, 1),
                        "rss_mib": round(rss_mib(proc.pid), 1),
                        "children_rss_mib": round(sum(rss_mib(k) for k in kids), 1),
                        "fds": fd_count(proc.pid),
                        "children": len(kids),
                    }
                )
                if time.monotonic() >= next_kill:
                    next_kill += args.kill_every
                    workers = [k for k in kids if "unirt._isolated_worker" in cmdline(k)]
                    if workers:
                        victim = workers[0]
                        stats.kills.append(time.time())
                        try:
                            os.kill(victim, signal.SIGKILL)
                            kill_log.append({"t": round(time.time() - t_start, 1), "pid": victim})
                            print(f"  t={time.time() - t_start:5.0f}s killed isolated worker {victim}", flush=True)
                        except ProcessLookupError:
                            pass
                    else:
                        kill_log.append({"t": round(time.time() - t_start, 1), "pid": None})
                        print(
                            f"  t={time.time() - t_start:5.0f}s no child with unirt._isolated_worker in its "
                            "command line (isolated serving not available): nothing to kill",
                            flush=True,
                        )
                stop_monitor.wait(SAMPLE_EVERY)

        mon = threading.Thread(target=monitor, daemon=True)
        mon.start()
        run_clients(args.clients, ports, stats, x, expected, target / args.clients, seconds, args.malformed, True)
        stop_monitor.set()
        mon.join(10)
    finally:
        seen_pids.update(children(proc.pid))
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        time.sleep(1.0)  # the reaper removes a dead process's segments
        leaked = shm_segments(seen_pids)
        shutil.rmtree(tmp, ignore_errors=True)

    # -- figures -------------------------------------------------------------------------------------------------
    served = sum(stats.served.values())
    windows: dict[int, list[float]] = defaultdict(list)
    for t, lat in stats.latencies:
        windows[int((t - t_start) // args.window)].append(lat)
    p99 = [
        {
            "from_s": w * args.window,
            "requests": len(v),
            "rps": round(len(v) / args.window, 1),
            "p50_ms": round(float(np.percentile(v, 50)) * 1e3, 2),
            "p99_ms": round(float(np.percentile(v, 99)) * 1e3, 2),
        }
        for w, v in sorted(windows.items())
    ]
    kill_times = [k["t"] for k in kill_log if k["pid"] is not None]
    steady = [s for s in samples if s["t"] >= args.warmup]
    settled = [s for s in steady if not any(0 <= s["t"] - k <= SETTLE for k in kill_times)]
    rss = [s["rss_mib"] + s["children_rss_mib"] for s in settled]
    own = [s["rss_mib"] for s in steady]
    fds = [s["fds"] for s in steady]
    rss_spread = (max(rss) - min(rss)) / min(rss) if rss else float("nan")
    own_spread = (max(own) - min(own)) / min(own) if own else float("nan")
    errors = {f"{kind} {status}": n for (kind, status), n in sorted(stats.errors.items())}
    unexpected = sum(n for (kind, _), n in stats.errors.items() if kind == "unexpected")
    report = {
        "minutes": args.minutes,
        "clients": args.clients,
        "capacity_rps": round(capacity_rps, 1),
        "target_rps": round(target, 1),
        "served": served,
        "served_by_protocol": dict(stats.served),
        "achieved_rps": round(served / seconds, 1),
        "errors": errors,
        "error_examples": {f"{k} {s}": m for (k, s), m in stats.examples.items()},
        "wrong_answers": stats.wrong,
        "malformed_accepted": stats.malformed_accepted,
        "kills": kill_log,
        "p99_over_time": p99,
        "rss_mib_after_warmup": {
            "first": rss[0] if rss else None,
            "last": rss[-1] if rss else None,
            "min": min(rss, default=None),
            "max": max(rss, default=None),
            "spread": round(rss_spread, 4),
            "server_only_spread": round(own_spread, 4),
            "note": f"server + children, samples within {SETTLE:.0f} s of a kill left out",
        },
        "fds_after_warmup": {
            "first": fds[0] if fds else None,
            "last": fds[-1] if fds else None,
            "min": min(fds, default=None),
            "max": max(fds, default=None),
        },
        "leaked_shm_segments": leaked,
        "server_exit_status": rc,
        "samples": samples,
    }
    checks = {
        "no unexpected errors": unexpected == 0,
        "no wrong answers": stats.wrong == 0,
        "every malformed request refused": stats.malformed_accepted == 0,
        "RSS flat within 5% after warm-up": rss_spread <= 0.05 and own_spread <= 0.05,
        "file descriptors flat after warm-up": bool(fds) and max(fds) - min(fds) <= 4,
        "no leaked /dev/shm segments": not leaked,
        "clean exit on SIGTERM": rc == 0,
    }
    report["checks"] = checks

    print(f"\nserved {served} requests ({dict(stats.served)}), {served / seconds:.0f} req/s of {target:.0f} targeted")
    print("errors by status: " + (", ".join(f"{k}: {n}" for k, n in errors.items()) or "none"))
    for key, msg in report["error_examples"].items():
        if key.startswith("unexpected"):
            print(f"  e.g. {key}: {msg}")
    print(f"wrong answers {stats.wrong}; malformed requests accepted {stats.malformed_accepted}")
    print("p99 over time (ms): " + " ".join(f"{w['p99_ms']:.1f}" for w in p99))
    print(
        f"RSS after warm-up (server + children, MiB; {SETTLE:.0f} s after each kill left out): first "
        f"{report['rss_mib_after_warmup']['first']}, last {report['rss_mib_after_warmup']['last']}, spread "
        f"{rss_spread:.1%}; the server's own RSS spread {own_spread:.1%}"
    )
    print(f"open fds after warm-up: min {min(fds, default=None)}, max {max(fds, default=None)}")
    print(f"leaked /dev/shm segments: {len(leaked)} {leaked if leaked else ''}")
    for name, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {name}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
