"""Crash containment in unirt serve: models whose instances run isolated (child processes, shared-memory I/O).
A crash fails only the requests that instance was running (HTTP 500 / gRPC INTERNAL naming the signal), the
instance restarts, the other models keep serving, and /metrics counts it. Real crashes: a segfault in native code
(the test plugin `slow`, tests/plugin_sources/unirt_slow_plugin.py) and SIGKILL sent to the child mid-request."""

from __future__ import annotations

import json
import os
import re
import signal
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from conftest import install_distribution

import unirt
from unirt.testing import models

pytestmark = [
    pytest.mark.skipif(os.name != "posix", reason="isolated instances need POSIX shared memory"),
    pytest.mark.timeout(180),
]

SEGFAULT = -4321.0
FRAGILE = """
backend: "slow"
max_batch_size: 0
parameters { key: "isolate" value { string_value: "true" } }
"""
SLOW_AUTO = 'backend: "slow"\nmax_batch_size: 0\n'  # a third-party backend: isolated by default
SLOW_INPROC = 'backend: "slow"\nmax_batch_size: 0\nparameters { key: "isolate" value { string_value: "false" } }\n'
BAD_ISOLATE = 'backend: "slow"\nmax_batch_size: 0\nparameters { key: "isolate" value { string_value: "maybe" } }\n'


def doubler(path: Path) -> Path:
    """y = 2 * x, x float32[W]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"])],
        "doubler",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["W"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["W"])],
        [numpy_helper.from_array(np.array(2, np.float32), "two")],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def slow_plugin(tmp_path_factory):
    """The test distribution `unirt-slow-test` (backend "slow"); its runs are logged to the returned file."""
    site = tmp_path_factory.mktemp("site")
    install_distribution(site, "unirt-slow-test", "unirt_slow_plugin", {"slow": "unirt_slow_plugin:SlowBackend"})
    calls = site / "calls.txt"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.setenv("UNIRT_TEST_CALLS", str(calls))
        mp.setenv("UNIRT_TEST_LOAD_DELAY", str(site / "load_delay.txt"))
        unirt.refresh()
        yield calls
    unirt.refresh()


@pytest.fixture(scope="module")
def repo(slow_plugin, tmp_path_factory, add_model):
    repo = tmp_path_factory.mktemp("isolation-repo")
    add_model(repo, "fragile", doubler, 1, FRAGILE)
    add_model(repo, "slow_auto", doubler, 1, SLOW_AUTO)
    add_model(repo, "slow_inproc", doubler, 1, SLOW_INPROC)
    add_model(repo, "mlp", models.dynamic_mlp)
    return repo


@pytest.fixture(scope="module")
def server(repo):
    from unirt.serve import ServeOptions, ServerThread

    options = ServeOptions(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0, drain_timeout=10)
    with ServerThread(options) as running:
        yield running


def infer(port: int, model: str, values: list[float], timeout: float = 60) -> tuple[int, dict]:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values}]}
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/v2/models/{model}/infer",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def mlp_ok(port: int) -> bool:
    body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": [0.5] * 8}]}
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/mlp/infer", json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=30) as resp:
        out = {o["name"]: o for o in json.loads(resp.read())["outputs"]}
    return resp.status == 200 and abs(sum(out["probs"]["data"]) - 1) < 1e-5


def metrics(server) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics", timeout=30) as resp:
        return resp.read().decode()


def metric(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def dead(pid: int) -> bool:
    """Whether process `pid` has exited: gone, or a zombie whose threads have all ended (until they have, its
    parent cannot reap it: a multithreaded engine takes a moment to die after SIGKILL)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state in ("Z", "X") and len(os.listdir(f"/proc/{pid}/task")) <= 1
    except (FileNotFoundError, ProcessLookupError):
        return True


def child_pid(server, model: str) -> int:
    pid = metric(metrics(server), "unirt_model_instance_pid", model=model, instance="0")
    assert pid is not None, f"no child pid for {model}"
    return int(pid)


def test_isolation_default_per_backend_and_config(server):
    text = metrics(server)
    assert metric(text, "unirt_model_isolated", model="fragile") == 1  # config: true
    assert metric(text, "unirt_model_isolated", model="slow_auto") == 1  # a third-party backend: isolated
    assert metric(text, "unirt_model_isolated", model="slow_inproc") == 0  # config: false
    assert metric(text, "unirt_model_isolated", model="mlp") == 0  # onnxruntime: in the server's process
    pid = child_pid(server, "fragile")
    assert pid != os.getpid()
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes() if Path("/proc").is_dir() else b"unirt._isolated_worker"
    assert b"unirt._isolated_worker" in cmdline  # what operators (and the soak script) look for


def test_segfault_fails_only_its_request_and_the_instance_restarts(server):
    port = server.ports["http"]
    before = metric(metrics(server), "unirt_model_restarts_total", model="fragile", version="1") or 0
    old_pid = child_pid(server, "fragile")
    status, body = infer(port, "fragile", [SEGFAULT, 1.0])
    assert status == 500 and "SIGSEGV" in body["error"], body
    assert mlp_ok(port)  # another model, unaffected
    status, body = infer(port, "fragile", [0.25, -2.0])  # served by the restarted child
    assert status == 200 and body["outputs"][0]["data"] == [0.5, -4.0]
    text = wait_for(
        lambda: (
            lambda t: t if (metric(t, "unirt_model_restarts_total", model="fragile") or 0) >= before + 1 else None
        )(metrics(server)),
        "the restart to be counted",
    )
    assert metric(text, "unirt_model_crashes_total", model="fragile", version="1") >= 1
    assert 'unirt_model_last_crash_signal_info{model="fragile",signal="SIGSEGV",version="1"} 1.0' in text
    assert child_pid(server, "fragile") != old_pid
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/fragile/ready", timeout=30) as resp:
        assert resp.status == 200


def test_model_is_not_ready_while_its_only_instance_restarts(server, slow_plugin):
    import tritonclient.grpc as grpcclient

    port = server.ports["http"]
    delay = slow_plugin.parent / "load_delay.txt"
    delay.write_text("1.5")  # the new child takes 1.5 s to load the model
    try:
        status, body = infer(port, "fragile", [SEGFAULT])
        assert status == 500 and "SIGSEGV" in body["error"]
        with pytest.raises(urllib.error.HTTPError) as info:  # restarting: 503 with the reason
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/fragile/ready", timeout=30)
        assert info.value.code == 503
        assert "restarting its instance after a crash (SIGSEGV)" in json.loads(info.value.read())["error"]
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        try:
            assert not client.is_model_ready("fragile") and client.is_model_ready("mlp")
        finally:
            client.close()
        assert mlp_ok(port)
        status, body = infer(port, "fragile", [0.0, 1.0])  # waits for the restart, then runs
        assert status == 200 and body["outputs"][0]["data"] == [0.0, 2.0]
    finally:
        delay.unlink()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/models/fragile/ready", timeout=30) as resp:
        assert resp.status == 200


def test_child_killed_mid_request_gets_500_naming_the_signal(server, slow_plugin):
    port = server.ports["http"]
    pid = child_pid(server, "fragile")
    result: dict = {}
    marker = 2.25  # the run sleeps 2.25 s: killed while it runs
    thread = threading.Thread(target=lambda: result.update(answer=infer(port, "fragile", [marker])))
    thread.start()
    wait_for(lambda: slow_plugin.exists() and f"{marker!r}" in slow_plugin.read_text().split(), "the run to start")
    assert mlp_ok(port)  # served while the isolated model is busy
    os.kill(pid, signal.SIGKILL)
    thread.join(30)
    status, body = result["answer"]
    assert status == 500 and "SIGKILL" in body["error"], body
    status, body = infer(port, "fragile", [0.0, 4.0])  # the next request is served by the restarted child
    assert status == 200 and body["outputs"][0]["data"] == [0.0, 8.0]
    assert child_pid(server, "fragile") != pid
    text = metrics(server)
    assert 'signal="SIGKILL"' in text and mlp_ok(port)


def test_grpc_crash_is_internal_and_the_model_serves_again(server):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
    try:

        def request(values):
            x = grpcclient.InferInput("x", [len(values)], "FP32")
            x.set_data_from_numpy(np.array(values, np.float32))
            return client.infer("slow_auto", [x])

        with pytest.raises(InferenceServerException) as info:
            request([SEGFAULT])
        assert info.value.status() == "StatusCode.INTERNAL" and "SIGSEGV" in info.value.message()
        np.testing.assert_array_equal(request([1.0, 2.0]).as_numpy("y"), [2.0, 4.0])
        assert client.is_model_ready("slow_auto") and client.is_model_ready("mlp")
    finally:
        client.close()


def test_in_process_model_is_not_isolated_and_still_serves(server):
    status, body = infer(server.ports["http"], "slow_inproc", [0.0, 3.0])
    assert status == 200 and body["outputs"][0]["data"] == [0.0, 6.0]
    assert metric(metrics(server), "unirt_model_instance_pid", model="slow_inproc") is None


def test_server_isolate_mode_and_bad_config(repo, tmp_path, add_model):
    from unirt.serve.errors import Unsupported
    from unirt.serve.manager import ModelManager
    from unirt.serve.repository import DirectoryRepository

    never = ModelManager(DirectoryRepository(repo), isolate="never")
    try:
        never.load_all(["slow_auto", "fragile"])
        assert not never.get("slow_auto").isolated  # the server's "never" for a model that leaves it to auto
        assert never.get("fragile").isolated  # the model's own "true" wins
    finally:
        never.close()
    always = ModelManager(DirectoryRepository(repo), isolate="always")
    try:
        always.load_all(["mlp", "slow_inproc"])
        assert always.get("mlp").isolated and not always.get("slow_inproc").isolated
        x = np.full((2, 8), 0.25, np.float32)
        done = always.get("mlp").submit({"x": x}, 2).result(30)
        ref = unirt.Session(repo / "mlp" / "1" / "model.onnx", backend="onnxruntime").run(x)
        np.testing.assert_allclose(done.outputs["probs"], ref["probs"], rtol=1e-6)
    finally:
        always.close()
    with pytest.raises(Unsupported, match="isolate must be one of auto, always, never"):
        ModelManager(DirectoryRepository(repo), isolate="sometimes")
    add_model(tmp_path, "bad", doubler, 1, BAD_ISOLATE)
    manager = ModelManager(DirectoryRepository(tmp_path))
    manager.load_all()
    assert re.search(
        r"parameters\[isolate\]: expected one of true, false, auto, got 'maybe'", manager.index()[0]["reason"]
    )


def test_cli_isolate_always_and_queue_bound(tmp_path):
    """`unirt serve model.onnx --isolate always --max-queue-size 7` as a process: its child is killed between
    requests, the next request runs on a new one, and SIGTERM leaves no child behind."""
    import queue
    import subprocess
    import sys

    model = models.dynamic_mlp(tmp_path / "mlp.onnx")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "unirt",
            "serve",
            str(model),
            "--isolate",
            "always",
            "--max-queue-size",
            "7",
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=tmp_path,
    )
    try:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
        ports: dict[str, int] = {}
        while len(ports) < 3:
            line = lines.get(timeout=90)
            if line.startswith("unirt serve: ") and " on " in line:
                name, address = line[len("unirt serve: ") :].strip().split(" on ")
                ports[name] = int(address.rsplit(":", 1)[1])

        class Server:
            pass

        server = Server()
        server.ports = ports
        wait_for(lambda: metric(metrics(server), "unirt_model_isolated", model="mlp") is not None, "the model", 90)
        text = metrics(server)
        assert metric(text, "unirt_model_isolated", model="mlp") == 1
        assert metric(text, "unirt_model_queue_capacity", model="mlp") == 7
        port = ports["http"]
        assert mlp_ok(port)
        pid = child_pid(server, "mlp")
        os.kill(pid, signal.SIGKILL)  # between requests: no request was running on it
        wait_for(lambda: dead(pid), "the child to die", 15)
        assert mlp_ok(port)  # the next request starts a new child and runs there: nothing lost, nothing failed
        new_pid = child_pid(server, "mlp")
        text = metrics(server)
        assert new_pid != pid and metric(text, "unirt_model_restarts_total", model="mlp") == 1
        assert 'signal="SIGKILL"' in text and metric(text, "unirt_model_crashes_total", model="mlp") == 0
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        wait_for(lambda: dead(new_pid), "the child to end", 15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
