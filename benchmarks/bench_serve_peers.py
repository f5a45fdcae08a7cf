"""`unirt serve` against the servers its users would otherwise run: Triton, KServe's ModelServer and MLServer.

    python benchmarks/bench_serve_peers.py [--seconds 4] [--rounds 2] [--clients 16] [--servers unirt,triton,...]
                                           [--protocols http-binary,grpc,http-json] [--models small,detector]
                                           [--cache DIR] [--json out.json]

Each peer runs in its own virtual environment, created by this script under `--cache` (default
`$UNIRT_CACHE_DIR/bench_peers`, or ~/.cache/unirt/bench_peers) on first use:
  * triton:   the `nvidia-pytriton` wheel, which bundles a real `tritonserver` (its Python backend stub needs
              LD_LIBRARY_PATH pointed at the venv Python's own lib/, set here);
  * kserve:   KServe's Python `ModelServer` (`kserve`), a `kserve.Model` subclass (KServe has no dynamic batcher:
              its "batching on" rows are the same server as "off");
  * mlserver: `mlserver` with a custom runtime (adaptive batching for "on"); `uvloop<0.22` for its worker;
  * unirt:    `unirt serve` (`--threads 1`) from this checkout installed with its `serve` extra and the ONNX Runtime
              plugin; in a developer checkout (a compiled src/unirt/_core*.so in the tree) the tree's sources are
              served.
Every server runs the same ONNX models with ONNX Runtime at 1 thread (intra- and inter-op), one instance:
  * small:    a 1x3x48x192 float32 image classifier (a text-direction classifier's shape, ~1 ms): overhead-bound;
  * detector: a small detector-like CNN at 1x3x320x320 (~0.2 GMAC, a 25x20x20 head): compute-bound.
Each model is served twice, with dynamic batching (max batch 32, 1 ms queue delay) and without.

One client program for all: `--clients` processes (kept for the whole run) sending batch-1 requests: tritonclient
over HTTP with binary tensors and over gRPC, and HTTP with JSON tensors from a body encoded once per phase
(`JsonClient`). Servers run one at a time, in alternating order (reversed every round, and so is the order of the
models and of batching on/off within a server). Reported per phase: req/s, p50/p99 latency, failed requests, CPU per
request (the CPU time of the server's whole process tree / requests), the server's RSS (tree, idle after start and
at the end) and cold start (launch to every model ready). Loopback only; every phase is bounded in time; servers are
killed at the end. A peer that refuses a protocol shows as failures, and its rate does not count as a peer's best
(as seen with mlserver 1.7: no binary tensor extension, HTTP 422; kserve 0.21 answered tritonclient's all-JSON body
with 400; the JSON client below sends plain JSON with an id, which it answers).
The summary prints unirt ÷ best peer (req/s) per model, protocol and batching. On a shared or small machine the
clients compete with the server for CPU: the ratios within one run are what count.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

MODELS = {"small": {"shape": [3, 48, 192], "out": [2]}, "detector": {"shape": [3, 320, 320], "out": [25, 20, 20]}}
PROTOCOLS = ("http-binary", "grpc", "http-json")
MAX_BATCH, DELAY_US = 32, 1000

# -- models ------------------------------------------------------------------------------------------------------


def build_model(kind: str, path: Path) -> Path:
    """Conv stacks built with onnx.helper; input `x` float32[N, ...], output `y` float32[N, ...]."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(0)
    nodes, inits, prev = [], [], "x"
    # (out channels, kernel, stride)
    layers = (
        [(16, 3, 2), (32, 3, 2)]
        if kind == "small"
        else [(16, 3, 2), (32, 3, 2), (64, 3, 2), (64, 3, 1), (128, 3, 2), (128, 3, 1)]
    )
    cin = 3
    for i, (cout, k, s) in enumerate(layers):
        w = (rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        inits += [nh.from_array(w, f"w{i}"), nh.from_array(np.zeros(cout, np.float32), f"b{i}")]
        nodes += [
            h.make_node(
                "Conv", [prev, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4
            ),
            h.make_node("Relu", [f"c{i}"], [f"r{i}"]),
        ]
        prev, cin = f"r{i}", cout
    if kind == "small":
        w = (rng.standard_normal((cin, 2)) / np.sqrt(cin)).astype(np.float32)
        inits += [nh.from_array(w, "wf"), nh.from_array(np.zeros(2, np.float32), "bf")]
        nodes += [
            h.make_node("GlobalAveragePool", [prev], ["gap"]),
            h.make_node("Flatten", ["gap"], ["flat"]),
            h.make_node("Gemm", ["flat", "wf", "bf"], ["logits"]),
            h.make_node("Softmax", ["logits"], ["y"]),
        ]
    else:
        w = (rng.standard_normal((25, cin, 1, 1)) / np.sqrt(cin)).astype(np.float32)
        inits += [nh.from_array(w, "wh"), nh.from_array(np.zeros(25, np.float32), "bh")]
        nodes += [h.make_node("Conv", [prev, "wh", "bh"], ["head"]), h.make_node("Sigmoid", ["head"], ["y"])]
    spec = MODELS[kind]
    graph = h.make_graph(
        nodes,
        kind,
        [h.make_tensor_value_info("x", T.FLOAT, ["N", *spec["shape"]])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", *spec["out"]])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


# -- peer servers --------------------------------------------------------------------------------------------------

ORT = """
import onnxruntime as ort
def session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
"""

TRITON = (
    ORT
    + """
import json, sys
import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig

cfg = json.load(open(sys.argv[1]))

def make(path, batched):
    sess = session(path)
    if batched:
        @batch
        def infer(x):
            return {"y": sess.run(["y"], {"x": x})[0]}
    else:
        def infer(requests):
            return [{"y": sess.run(["y"], {"x": r["x"]})[0]} for r in requests]
    return infer

with Triton(config=TritonConfig(http_port=cfg["http"], grpc_port=cfg["grpc"], metrics_port=cfg["metrics"])) as triton:
    for m in cfg["models"]:
        if m["batching"]:
            config = ModelConfig(max_batch_size=cfg["max_batch"],
                                 batcher=DynamicBatcher(max_queue_delay_microseconds=cfg["delay_us"]))
            shape, out = tuple(m["shape"]), tuple(m["out"])
        else:
            config = ModelConfig(batching=False)
            shape, out = (-1, *m["shape"]), (-1, *m["out"])
        triton.bind(model_name=m["name"], infer_func=make(m["path"], m["batching"]),
                    inputs=[Tensor(name="x", dtype=np.float32, shape=shape)],
                    outputs=[Tensor(name="y", dtype=np.float32, shape=out)], config=config, strict=False)
    triton.serve()
"""
)

KSERVE = (
    ORT
    + """
import json, sys
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer

cfg = json.load(open(sys.argv[1]))

class OnnxModel(Model):
    def __init__(self, name, path):
        super().__init__(name)
        self.sess = session(path)
        self.ready = True

    def predict(self, payload, headers=None):
        x = payload.inputs[0].as_numpy()
        y = self.sess.run(["y"], {"x": x})[0]
        out = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
        out.set_data_from_numpy(y)  # the response's REST encoding follows what the request asked for
        return InferResponse(response_id=payload.id, model_name=self.name, infer_outputs=[out],
                             use_binary_outputs=payload.use_binary_outputs, requested_outputs=payload.request_outputs)

# no dynamic batcher in ModelServer: the batched names serve the same model unbatched
models = [OnnxModel(m["name"], m["path"]) for m in cfg["models"]]
ModelServer(http_port=cfg["http"], grpc_port=cfg["grpc"], workers=1, enable_docs_url=False).start(models)
"""
)

MLSERVER_RUNTIME = (
    ORT
    + """
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse

class OnnxModel(MLModel):
    async def load(self) -> bool:
        self.sess = session(self.settings.parameters.uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        y = self.sess.run(["y"], {"x": x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
"""
)

ROOT = Path(__file__).resolve().parent.parent
VENVS = {
    "unirt": [f"{ROOT}[serve]", str(ROOT / "plugins" / "onnxruntime")],
    "triton": ["nvidia-pytriton", "onnxruntime"],
    "kserve": ["kserve", "onnxruntime"],
    "mlserver": ["mlserver", "onnxruntime", "uvloop<0.22"],
}


def ensure_venv(cache: Path, name: str) -> Path:
    """The venv's python, created and filled on first use (a `.ready` marker records a finished install)."""
    venv = cache / name
    python = venv / "bin" / "python"
    if not (venv / ".ready").exists():
        print(f"creating the {name} environment in {venv} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *VENVS[name]], check=True)
        (venv / ".ready").touch()
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(server: str, work: Path, models: list[dict], cache: Path) -> tuple[subprocess.Popen, dict]:
    ports = {"http": free_port(), "grpc": free_port(), "metrics": free_port()}
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # each server sees its own venv only
    home = work / server
    home.mkdir(parents=True, exist_ok=True)
    log = open(home / "server.log", "w")
    if server == "unirt":
        repo = home / "repo"
        for m in models:
            (repo / m["name"] / "1").mkdir(parents=True, exist_ok=True)
            target = repo / m["name"] / "1" / "model.onnx"
            if not target.exists():
                os.symlink(m["path"], target)
            dims = ", ".join(map(str, m["shape"]))
            config = (
                f'max_batch_size: {MAX_BATCH}\ninput [ {{ name: "x" data_type: TYPE_FP32 dims: [ {dims} ] }} ]\n'
                "instance_group [ { count: 1 kind: KIND_CPU } ]\n"
            )
            if m["batching"]:
                config += f"dynamic_batching {{ max_queue_delay_microseconds: {DELAY_US} }}\n"
            (repo / m["name"] / "config.pbtxt").write_text(config)
        python = ensure_venv(cache, server)
        if list((ROOT / "src" / "unirt").glob("_core*.so")):  # a developer checkout: serve its sources
            env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "plugins" / "onnxruntime")])
        cmd = [
            str(python),
            "-m",
            "unirt",
            "serve",
            "--model-repository",
            str(repo),
            "--threads",
            "1",
            "--http-port",
            str(ports["http"]),
            "--grpc-port",
            str(ports["grpc"]),
            "--metrics-port",
            str(ports["metrics"]),
        ]
    elif server == "triton":
        python = ensure_venv(cache, server)
        base = subprocess.run(
            [str(python), "-c", "import sys; print(sys.base_prefix)"], capture_output=True, text=True, check=True
        ).stdout.strip()
        env["LD_LIBRARY_PATH"] = f"{base}/lib:" + env.get("LD_LIBRARY_PATH", "")
        cfg = dict(ports, models=models, max_batch=MAX_BATCH, delay_us=DELAY_US)
        (home / "config.json").write_text(json.dumps(cfg))
        (home / "server.py").write_text(TRITON)
        cmd = [str(python), str(home / "server.py"), str(home / "config.json")]
    elif server == "kserve":
        python = ensure_venv(cache, server)
        (home / "config.json").write_text(json.dumps(dict(ports, models=models)))
        (home / "server.py").write_text(KSERVE)
        cmd = [str(python), str(home / "server.py"), str(home / "config.json")]
    elif server == "mlserver":
        python = ensure_venv(cache, server)
        (home / "runtime.py").write_text(MLSERVER_RUNTIME)
        (home / "settings.json").write_text(
            json.dumps(
                {
                    "http_port": ports["http"],
                    "grpc_port": ports["grpc"],
                    "metrics_port": ports["metrics"],
                    "host": "127.0.0.1",
                    "debug": False,
                }
            )
        )
        for m in models:
            (home / m["name"]).mkdir(exist_ok=True)
            settings = {"name": m["name"], "implementation": "runtime.OnnxModel", "parameters": {"uri": m["path"]}}
            if m["batching"]:
                settings.update(max_batch_size=MAX_BATCH, max_batch_time=DELAY_US / 1e6)
            (home / m["name"] / "model-settings.json").write_text(json.dumps(settings))
        cmd = [str(python.parent / "mlserver"), "start", str(home)]
        env["PYTHONPATH"] = str(home)
    else:
        raise SystemExit(f"unknown server {server!r}")
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, ports


def wait_ready(proc: subprocess.Popen, port: int, names: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    pending = list(names)
    while pending:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before its models were ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"models {pending} not ready after {timeout:.0f} s")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/{pending[0]}/ready", timeout=2) as r:
                if r.status == 200:
                    pending.pop(0)
                    continue
        except OSError:
            pass
        time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(15)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(15)


# -- process-tree measurements ----------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_s(root: int) -> float:
    """utime + stime of the live process tree (and of its reaped children, through cutime/cstime)."""
    total = 0
    for pid in _tree(root):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])
    return total / TICK


def tree_rss_mib(root: int) -> float:
    total = 0
    for pid in _tree(root):
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


# -- clients -----------------------------------------------------------------------------------------------------


class JsonClient:
    """HTTP with JSON tensors, as a load generator sends them: the request body is encoded once per phase (as
    perf_analyzer prepares its inputs), so each request costs the client a send and a parse of the answer, and the
    servers' JSON decoding and encoding is what the phase compares (tritonclient would re-encode 28k-307k floats
    with the standard json module on every request, which made the clients, not the servers, the bottleneck)."""

    def __init__(self, port: int, model: str, x: np.ndarray) -> None:
        import http.client

        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.path = f"/v2/models/{model}/infer"
        body = {  # an id: KServe 0.21's JSON answer needs one (HTTP 500 without)
            "id": "1",
            "inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
            "outputs": [{"name": "y"}],
        }
        self.body = json.dumps(body).encode()
        self.headers = {"Content-Type": "application/json"}

    def infer(self, *_args, **_kw) -> JsonClient:
        try:
            self.conn.request("POST", self.path, self.body, self.headers)
            answer = self.conn.getresponse()
            data = answer.read()
        except Exception:
            self.conn.close()  # the next request opens a new connection
            raise
        if answer.status != 200:
            raise RuntimeError(f"HTTP {answer.status}: {data[:200]!r}")
        self.answer = json.loads(data)
        return self

    def as_numpy(self, name: str) -> np.ndarray:
        out = next(o for o in self.answer["outputs"] if o["name"] == name)
        return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])

    def close(self) -> None:
        self.conn.close()


def client_worker(index: int, commands: mp.Queue, results: mp.Queue) -> None:
    """One client process for the whole run: each command is a phase (protocol, port, model, start, stop)."""
    import tritonclient.grpc as tg
    import tritonclient.http as th

    rng = np.random.default_rng(index)
    results.put("ready")
    while True:
        cmd = commands.get()
        if cmd is None:
            return
        protocol, port, model, shape, seconds = cmd
        x = rng.standard_normal((1, *shape)).astype(np.float32)
        if protocol == "grpc":
            client = tg.InferenceServerClient(f"127.0.0.1:{port}")
            tensor = tg.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x)
            outputs = [tg.InferRequestedOutput("y")]
        elif protocol == "http-json":
            client, tensor, outputs = JsonClient(port, model, x), None, None
        else:
            client = th.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=120)
            tensor = th.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=True)
            outputs = [th.InferRequestedOutput("y", binary_data=True)]
        latencies, failures, error = [], 0, ""
        try:  # warm-up: connection, first-request paths
            client.infer(model, [tensor], outputs=outputs)
        except Exception:  # counted below if it persists
            pass
        results.put("warm")
        start = commands.get()  # the same start for every client, once all are warm
        stop_at = start + seconds
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < stop_at:
            t0 = time.perf_counter()
            try:
                y = client.infer(model, [tensor], outputs=outputs).as_numpy("y")
                if y is None or y.shape[0] != 1:
                    raise RuntimeError(f"output shape {None if y is None else y.shape}")
            except Exception as exc:  # a failed request is counted, not fatal
                failures += 1
                error = error or f"{type(exc).__name__}: {exc}"[:300]
                time.sleep(0.01)
                continue
            latencies.append(time.perf_counter() - t0)
        client.close()
        results.put((latencies, failures, error))


class Clients:
    def __init__(self, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.results = ctx.Queue()
        self.commands = [ctx.Queue() for _ in range(count)]
        self.procs = [
            ctx.Process(target=client_worker, args=(i, q, self.results), daemon=True)
            for i, q in enumerate(self.commands)
        ]
        for p in self.procs:
            p.start()
        for _ in self.procs:  # every client has imported tritonclient
            self.results.get(timeout=300)

    def phase(self, protocol: str, port: int, model: str, shape: list[int], seconds: float, server_pid: int) -> dict:
        for q in self.commands:
            q.put((protocol, port, model, shape, seconds))
        for _ in self.commands:
            self.results.get(timeout=600)  # every client warm
        start = time.time() + 0.05
        for q in self.commands:
            q.put(start)
        while time.time() < start:
            time.sleep(0.005)
        cpu0 = tree_cpu_s(server_pid)
        answers = [self.results.get(timeout=seconds + 300) for _ in self.commands]
        cpu1 = tree_cpu_s(server_pid)
        lat = np.array(sorted(v for a in answers for v in a[0]))
        failures = sum(a[1] for a in answers)
        errors = sorted({a[2] for a in answers if a[2]})
        n = len(lat)
        return {
            "req_s": n / seconds,
            "p50_ms": float(np.percentile(lat, 50) * 1e3) if n else None,
            "p99_ms": float(np.percentile(lat, 99) * 1e3) if n else None,
            "requests": n,
            "failures": failures,
            "cpu_ms_per_req": (cpu1 - cpu0) * 1e3 / n if n else None,
            "error": errors[0] if errors else "",
        }

    def close(self) -> None:
        for q in self.commands:
            q.put(None)
        for p in self.procs:
            p.join(10)


# -- main --------------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=4.0, help="measured seconds per phase")
    ap.add_argument(
        "--json-seconds",
        type=float,
        default=None,
        help="measured seconds per HTTP JSON phase (default 3x --seconds: JSON requests are slow)",
    )
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--servers", default="unirt,triton,kserve,mlserver")
    ap.add_argument("--protocols", default=",".join(PROTOCOLS))
    ap.add_argument("--models", default="small,detector")
    ap.add_argument("--batching", default="on,off")
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--start-timeout", type=float, default=180)
    ap.add_argument("--json", type=Path, help="write every row here")
    args = ap.parse_args()
    args.json_seconds = args.json_seconds or 3 * args.seconds
    cache = args.cache or Path(os.environ.get("UNIRT_CACHE_DIR") or Path.home() / ".cache" / "unirt") / "bench_peers"
    cache.mkdir(parents=True, exist_ok=True)
    servers = args.servers.split(",")
    protocols = args.protocols.split(",")
    kinds = args.models.split(",")
    modes = args.batching.split(",")
    for s in servers:
        ensure_venv(cache, s)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="unirt-peers-") as tmp:
        work = Path(tmp)
        models = []
        for kind in kinds:
            path = build_model(kind, cache / "models" / f"{kind}.onnx")
            for mode in modes:
                models.append(
                    {
                        "name": f"{kind}_{mode}",
                        "kind": kind,
                        "path": str(path),
                        "batching": mode == "on",
                        **MODELS[kind],
                    }
                )
        clients = Clients(args.clients)
        try:
            for rnd in range(args.rounds):
                for server in servers if rnd % 2 == 0 else servers[::-1]:
                    t0 = time.perf_counter()
                    proc, ports = launch(server, work / f"r{rnd}", models, cache)
                    try:
                        wait_ready(proc, ports["http"], [m["name"] for m in models], args.start_timeout)
                    except RuntimeError as exc:
                        stop(proc)
                        print(f"{server}: {exc}; see {work}/r{rnd}/{server}/server.log", flush=True)
                        log = (work / f"r{rnd}" / server / "server.log").read_text()[-3000:]
                        print(log, flush=True)
                        continue
                    cold = time.perf_counter() - t0
                    time.sleep(0.5)
                    idle = tree_rss_mib(proc.pid)
                    try:
                        for m in models if rnd % 2 == 0 else models[::-1]:  # on/off order alternates too
                            for protocol in protocols:
                                port = ports["grpc"] if protocol == "grpc" else ports["http"]
                                seconds = args.json_seconds if protocol == "http-json" else args.seconds
                                r = clients.phase(protocol, port, m["name"], m["shape"], seconds, proc.pid)
                                r.update(
                                    server=server,
                                    round=rnd,
                                    model=m["kind"],
                                    protocol=protocol,
                                    batching="on" if m["batching"] else "off",
                                    cold_start_s=cold,
                                    rss_idle_mib=idle,
                                    rss_mib=tree_rss_mib(proc.pid),
                                )
                                rows.append(r)
                                p50 = f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-"
                                cpu = f"{r['cpu_ms_per_req']:.2f}" if r["cpu_ms_per_req"] is not None else "-"
                                print(
                                    f"r{rnd} {server:8s} {m['name']:12s} {protocol:11s} {r['req_s']:7.1f} req/s "
                                    f"p50 {p50} ms cpu/req {cpu} ms fail {r['failures']} {r['error']}",
                                    flush=True,
                                )
                    finally:
                        stop(proc)
        finally:
            clients.close()
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    summarize(rows, servers)


def summarize(rows: list[dict], servers: list[str]) -> None:
    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else None

    keys = sorted({(r["model"], r["protocol"], r["batching"]) for r in rows})
    print("\nmean over rounds; req/s | p50 ms | p99 ms | CPU ms/req | failures")
    print(
        f"{'model':9s} {'protocol':11s} {'batch':5s} " + " ".join(f"{s:>30s}" for s in servers) + "   unirt÷best peer"
    )
    for key in keys:
        cells, rates = [], {}
        for s in servers:
            sel = [r for r in rows if (r["model"], r["protocol"], r["batching"]) == key and r["server"] == s]
            if not sel:
                cells.append(f"{'-':>30s}")
                continue
            ok = [r for r in sel if r["failures"] == 0 or r["requests"] > 10 * r["failures"]]
            rate = mean([r["req_s"] for r in sel])
            rates[s] = rate if ok else 0.0
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731 - a one-line formatter
            cells.append(
                f"{fmt(rate, '.0f'):>6s} {fmt(mean([r['p50_ms'] for r in sel]), '.1f'):>5s} "
                f"{fmt(mean([r['p99_ms'] for r in sel]), '.1f'):>6s} "
                f"{fmt(mean([r['cpu_ms_per_req'] for r in sel]), '.2f'):>6s} "
                f"{sum(r['failures'] for r in sel):>4d}"
            )
        peers = {s: v for s, v in rates.items() if s != "unirt"}
        best = max(peers.items(), key=lambda kv: kv[1], default=(None, 0.0))
        ratio = f"{rates['unirt'] / best[1]:.2f} ({best[0]})" if "unirt" in rates and best[1] else "-"
        print(f"{key[0]:9s} {key[1]:11s} {key[2]:5s} " + " ".join(cells) + f"   {ratio}")
    print("\ncold start s / idle RSS MiB (mean over rounds):")
    for s in servers:
        sel = {(r["round"]): r for r in rows if r["server"] == s}.values()
        if sel:
            print(
                f"  {s:8s} {mean([r['cold_start_s'] for r in sel]):6.2f} s  "
                f"{mean([r['rss_idle_mib'] for r in sel]):7.1f} MiB idle, "
                f"{max(r['rss_mib'] for r in sel):7.1f} MiB max"
            )


if __name__ == "__main__":
    main()
