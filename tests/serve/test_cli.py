"""`unirt serve` as a process: the command line, the single-model shortcut, SIGTERM draining in-flight requests,
and the error without the serve extra."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tritonclient.http as httpclient

from unirt.testing import models

# the installed console script, as a user runs it: the one next to this interpreter (no activated venv needed)
UNIRT = shutil.which("unirt", path=os.path.dirname(sys.executable)) or shutil.which("unirt") or "unirt"
CONFIG = """
max_batch_size: 4
dynamic_batching { max_queue_delay_microseconds: 1500000 }
"""


def _ports(proc: subprocess.Popen, count: int, timeout: float = 60) -> dict[str, int]:
    """Read the "unirt serve: <endpoint> on <host>:<port>" lines the server prints once it has bound its ports."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    ports: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while len(ports) < count:
        try:
            line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"the server printed no ports in {timeout} s") from None
        if line.startswith("unirt serve: ") and " on " in line:
            name, address = line[len("unirt serve: ") :].strip().split(" on ")
            assert address.startswith("127.0.0.1:")  # binds loopback unless told otherwise
            ports[name] = int(address.rsplit(":", 1)[1])
    return ports


@pytest.fixture
def serve_process(tmp_path):
    procs = []

    def start(*args: str) -> subprocess.Popen:
        proc = subprocess.Popen(
            [UNIRT, "serve", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def test_sigterm_drains_in_flight_requests(tmp_path, serve_process):
    path = models.dynamic_mlp(tmp_path / "classifier.onnx")
    (tmp_path / "config.pbtxt").write_text(CONFIG)
    proc = serve_process(
        str(path),
        "--model-config",
        str(tmp_path / "config.pbtxt"),
        "--http-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--drain-timeout",
        "20",
    )
    ports = _ports(proc, 3)
    client = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}", network_timeout=30)
    deadline = time.monotonic() + 60
    while not client.is_server_ready():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert client.get_model_metadata("classifier")["inputs"][0]["shape"] == [-1, 8]
    results, errors = [], []

    def infer(i):
        try:
            c = httpclient.InferenceServerClient(f"127.0.0.1:{ports['http']}", network_timeout=30)
            x = httpclient.InferInput("x", [1, 8], "FP32")
            x.set_data_from_numpy(np.full((1, 8), i, np.float32))
            results.append(c.infer("classifier", [x]).as_numpy("probs"))
            c.close()
        except Exception as exc:  # recorded and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=infer, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.4)  # the requests now wait in the batcher's queue (max_queue_delay 1.5 s)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert proc.wait(30) == 0
    assert not errors and len(results) == 3 and all(r.shape == (1, 3) for r in results)
    client.close()


def test_command_line_errors(tmp_path):
    def run(*args):
        return subprocess.run([UNIRT, "serve", *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)

    both = run(str(tmp_path / "m.onnx"), "--model-repository", str(tmp_path))
    assert both.returncode == 2 and "either a model file" in both.stderr
    missing = run(
        "--model-repository", str(tmp_path / "nowhere"), "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0"
    )
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    bad_port = run("--model-repository", str(tmp_path), "--http-port", "70000")
    assert bad_port.returncode == 2 and "port must be 0..65535" in bad_port.stderr
    (tmp_path / "real" / "1").mkdir(parents=True)
    models.dynamic_mlp(tmp_path / "real" / "1" / "model.onnx")
    ports = ("--http-port", "0", "--grpc-port", "0", "--metrics-port", "0")
    typo = run(
        "--model-repository", str(tmp_path), "--model-control-mode", "explicit", "--load-model", "rael", *ports
    )  # as Triton: a model named to load at start that is not there stops the server
    assert typo.returncode == 2 and "--load-model 'rael': no such model" in typo.stderr and "real" in typo.stderr
    implicit = run("--model-repository", str(tmp_path), "--load-model", "real", *ports)
    assert implicit.returncode == 2 and "--model-control-mode=explicit" in implicit.stderr


def test_missing_serve_extra_names_the_extra(tmp_path):
    blocker = tmp_path / "site"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['uvicorn'] = None\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(blocker), os.environ.get("PYTHONPATH"))))}
    out = subprocess.run(
        [UNIRT, "serve", "--model-repository", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 2 and "pip install '.[serve]'" in out.stderr and "uvicorn" in out.stderr
