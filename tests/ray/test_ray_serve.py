"""The Ray Serve deployment on a real local Ray instance (2 CPUs, HTTP proxy on a free loopback port).

One Ray instance serves the whole module (starting Ray takes ~10 s on 2 cores) and is shut down by its fixture.
The replicas run the real ONNX Runtime plugin on models built with onnx.helper; answers are compared with a
local unirt.Session on the same model.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install '.[ray]')")
serve = pytest.importorskip("ray.serve")

import unirt
from unirt.integrations.ray import RetryingHandle, build
from unirt.testing import models

FEATURES = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, what: str, timeout: float = 60.0, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="module")
def ray_serve(tmp_path_factory):
    port = _free_port()
    # Ray puts the driver's working directory first on its workers' sys.path: from the repository root they
    # would import the source tree's unirt (no compiled core) instead of the installed one.
    here = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("ray_cwd"))
    try:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            log_to_driver=False,
            object_store_memory=96 * 2**20,
            configure_logging=False,
        )
    finally:
        os.chdir(here)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield port
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    return models.dynamic_mlp(tmp_path_factory.mktemp("ray") / "mlp.onnx", features=FEATURES, classes=5, seed=3)


@pytest.fixture(scope="module")
def local(mlp):
    with unirt.Session(mlp, backend="onnxruntime", threads=1) as sess:
        yield sess


@pytest.fixture(scope="module")
def mlp_app(ray_serve, mlp):
    """One replica with the default resources (threads=1 -> 1 CPU), merging up to 8 requests 50 ms apart."""
    before = ray.available_resources().get("CPU", 0)
    handle = serve.run(
        build(mlp, backend="onnxruntime", max_batch_size=8, batch_wait_timeout_s=0.05), name="mlp", route_prefix="/"
    )
    reserved = _wait(lambda: before - ray.available_resources().get("CPU", 0) or None, "the replica's CPU", timeout=10)
    yield handle, reserved


def _rows(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, FEATURES)).astype(np.float32)


def test_replica_reserves_its_threads_as_cpus(mlp_app):
    assert mlp_app[1] == 1


def test_handle_outputs_equal_a_local_session(mlp_app, local):
    handle = mlp_app[0]
    for x in (_rows(1, 0), _rows(5, 1)):
        got = handle.remote(x).result(timeout_s=60)
        want = local.run(x)
        assert set(got) == {"logits", "probs"}
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
    got = handle.infer.remote({"x": _rows(3, 2)}, ["probs"]).result(timeout_s=60)
    assert list(got) == ["probs"]
    np.testing.assert_array_equal(got["probs"], local.run(_rows(3, 2))["probs"])
    with pytest.raises(unirt.InputError, match="unknown output.*'nope'.*logits, probs"):
        handle.remote(_rows(1, 3), ["nope"]).result(timeout_s=60)
    with pytest.raises(unirt.InputError, match="output_names must be an output name or a list.*got 5"):
        handle.remote(_rows(1, 3), 5).result(timeout_s=60)


def test_concurrent_requests_are_merged_and_a_bad_one_fails_alone(mlp_app, local):
    handle = mlp_app[0]
    before = handle.stats.remote().result(timeout_s=30)
    inputs = [_rows(1 + i % 3, 100 + i) for i in range(16)]
    bad = np.zeros((1, FEATURES + 1), np.float32)
    responses = [handle.remote(x) for x in inputs[:8]] + [handle.remote(bad)] + [handle.remote(x) for x in inputs[8:]]
    results = [r for i, r in enumerate(responses) if i != 8]
    for x, response in zip(inputs, results):
        np.testing.assert_array_equal(response.result(timeout_s=60)["logits"], local.run(x)["logits"])
    with pytest.raises(unirt.InputError, match="x"):
        responses[8].result(timeout_s=60)
    after = handle.stats.remote().result(timeout_s=30)
    assert after["requests"] - before["requests"] == 17
    assert after["failed"] - before["failed"] == 1
    assert after["max_batch_seen"] > 1, after["batch_sizes"]
    runs = after["session"]["backend_runs"] - before["session"]["backend_runs"]
    assert runs < after["session"]["requests"] - before["session"]["requests"], after


def test_http_speaks_v2_to_tritonclient(mlp_app, ray_serve, local):
    import tritonclient.http as tc

    client = tc.InferenceServerClient(f"127.0.0.1:{ray_serve}")
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
        meta = client.get_model_metadata("mlp")
        assert meta["inputs"] == [{"name": "x", "datatype": "FP32", "shape": [-1, FEATURES]}]
        x = _rows(4, 7)
        for binary in (True, False):
            tensor = tc.InferInput("x", list(x.shape), "FP32")
            tensor.set_data_from_numpy(x, binary_data=binary)
            out = client.infer("mlp", [tensor], outputs=[tc.InferRequestedOutput("probs", binary_data=binary)])
            np.testing.assert_allclose(out.as_numpy("probs"), local.run(x)["probs"], rtol=1e-6)
            assert out.as_numpy("logits") is None
        with pytest.raises(tc.InferenceServerException, match="unknown model 'other'"):
            client.get_model_metadata("other")
    finally:
        client.close()


def _post(port: int, path: str, body: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        if body is None:
            conn.request("GET", path)
        else:
            conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, json.loads(response.read() or b"{}")
    finally:
        conn.close()


def test_http_bodies_are_unirt_serves(mlp_app, ray_serve, mlp):
    """The same requests to `unirt serve` and to the Ray deployment get the same v2 documents back."""
    from unirt.serve import ServeOptions, ServerThread

    x = _rows(2, 9)
    request = {
        "id": "r1",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2, FEATURES], "data": x.ravel().tolist()}],
        "outputs": [{"name": "probs", "parameters": {"classification": 2}}, {"name": "logits"}],
    }
    bad = {"inputs": [{"name": "x", "datatype": "INT32", "shape": [1, FEATURES], "data": [0] * FEATURES}]}
    options = ServeOptions(model=mlp, http_port=0, grpc_port=None, metrics_port=None, default_max_batch_size=1024)
    with ServerThread(options) as server:
        port = server.ports["http"]
        for path, body in [
            ("/v2/models/mlp", None),
            ("/v2/models/mlp/config", None),
            ("/v2/models/mlp/infer", bad),
            ("/v2/models/mlp/versions/2/infer", request),
        ]:
            assert _post(ray_serve, path, body)[0] == _post(port, path, body)[0], path
            if path.endswith("/2/infer"):
                continue  # both 404, their messages name their own model stores
            assert _post(ray_serve, path, body) == _post(port, path, body), path
        status, ours = _post(ray_serve, "/v2/models/mlp/infer", request)
        status_serve, theirs = _post(port, "/v2/models/mlp/infer", request)
    shm = {
        "inputs": [
            {
                "name": "x",
                "datatype": "FP32",
                "shape": [1, FEATURES],
                "parameters": {"shared_memory_region": "r", "shared_memory_byte_size": 4 * FEATURES},
            }
        ]
    }
    code, body = _post(ray_serve, "/v2/models/mlp/infer", shm)  # replicas may be on other machines
    assert code == 400 and "shared memory is not available here" in body["error"]
    assert _post(ray_serve, "/v2/models/mlp/infer/x")[0] == 404
    assert status == status_serve == 200
    assert [o["name"] for o in ours["outputs"]] == ["probs", "logits"]
    for a, b in zip(ours["outputs"], theirs["outputs"]):
        assert {k: v for k, v in a.items() if k != "data"} == {k: v for k, v in b.items() if k != "data"}
        if a["datatype"] == "BYTES":  # classification: "value:index" strings, the same classes in the same order
            assert [s.split(":")[1] for s in a["data"]] == [s.split(":")[1] for s in b["data"]]
        else:
            np.testing.assert_allclose(a["data"], b["data"], rtol=1e-5)
    assert {k: v for k, v in ours.items() if k != "outputs"} == {k: v for k, v in theirs.items() if k != "outputs"}


def test_user_config_retunes_batching_live(ray_serve, mlp):
    """Ray hands `user_config` to `reconfigure` when a replica starts, and again, to the running replica, on a
    lightweight update (a Serve config file whose only change is user_config): called here through the handle."""

    def batches(handle, n):
        before = handle.stats.remote().result(timeout_s=30)
        for response in [handle.remote(_rows(1, 500 + i)) for i in range(n)]:
            response.result(timeout_s=60)
        after = handle.stats.remote().result(timeout_s=30)
        sizes = {k: after["batch_sizes"].get(k, 0) - before["batch_sizes"].get(k, 0) for k in after["batch_sizes"]}
        return {k: v for k, v in sizes.items() if v}, after["pid"]

    def deploy(user_config):
        return serve.run(
            build(
                mlp,
                name="mlp_live",
                backend="onnxruntime",
                max_batch_size=8,
                batch_wait_timeout_s=0.2,
                ray_actor_options={"num_cpus": 0.25},
                user_config=user_config,
            ),
            name="live",
            route_prefix=None,
        )

    with pytest.raises(unirt.UnsupportedOptionError, match="user_config: unknown key.*threads"):
        deploy({"threads": 2})  # refused in the driver
    handle = deploy({"max_batch_size": 1})
    try:
        sizes, pid = batches(handle, 6)
        assert sizes == {1: 6}  # never merged, whatever the 0.2 s wait
        handle.reconfigure.remote({"max_batch_size": 3, "batch_wait_timeout_s": 0.5}).result(timeout_s=30)
        sizes, same_pid = batches(handle, 6)
        assert 1 < max(sizes) <= 3 and sum(k * v for k, v in sizes.items()) == 6, sizes
        assert same_pid == pid  # retuned in place
        with pytest.raises(unirt.UnsupportedOptionError, match="user_config: unknown key.*threads"):
            handle.reconfigure.remote({"threads": 2}).result(timeout_s=30)  # and in the replica
    finally:
        serve.delete("live")


def test_several_inputs_ints_and_scalars_under_a_route_prefix(ray_serve, tmp_path_factory):
    path = models.multi_io(tmp_path_factory.mktemp("ray_multi") / "multi_io.onnx")
    handle = serve.run(
        build(
            path,
            backend="onnxruntime",
            ray_actor_options={"num_cpus": 0.25},
            num_replicas="auto",
            autoscaling_config={"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 4},
        ),
        name="multi",
        route_prefix="/multi",
    )
    try:
        status = serve.status().applications["multi"].deployments["unirt-multi_io"]
        assert status.status == "HEALTHY" and status.replica_states.get("RUNNING") == 1  # Ray's autoscaler, min 1
        status, meta = _post(ray_serve, "/multi/v2/models/multi_io")
        assert status == 200 and [t["name"] for t in meta["inputs"]] == ["a", "b", "idx", "scale"]
        feeds = {
            "a": _rows(3, 4)[:, :4].copy(),
            "b": _rows(3, 5)[:, :4].copy(),
            "idx": np.array([2, 0], np.int64),
            "scale": np.float32(1.5),
        }
        got = handle.remote(feeds).result(timeout_s=60)
        with unirt.Session(path, backend="onnxruntime") as sess:
            want = sess.run(feeds)
        assert set(got) == set(want)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])
            assert got[name].dtype == want[name].dtype
    finally:
        serve.delete("multi")


def test_a_replica_killed_under_load_is_replaced_and_no_request_is_lost(ray_serve, mlp, local):
    """One replica, killed (SIGKILL) while it holds requests: they fail with ActorDiedError, the RetryingHandle
    re-sends them, they wait in the router until Ray Serve has started a replacement, and every request is
    answered, correctly. (With one replica the killed one surely held requests: each waits 0.1 s in it for
    batch-mates.)"""
    handle = serve.run(
        build(
            mlp, name="mlp_ha", backend="onnxruntime", batch_wait_timeout_s=0.1, ray_actor_options={"num_cpus": 0.25}
        ),
        name="ha",
        route_prefix=None,
    )
    try:
        victim = handle.stats.remote().result(timeout_s=30)["pid"]
        client = RetryingHandle(handle, retries=8)
        inputs = [_rows(1, 1000 + i) for i in range(240)]
        results: dict[int, dict] = {}
        errors: list[BaseException] = []
        started = threading.Event()

        def send(indices):
            for i in indices:
                try:
                    results[i] = client.infer(inputs[i], timeout_s=120)
                except BaseException as exc:  # collected and reported below
                    errors.append(exc)
                if len(results) >= 30:
                    started.set()

        threads = [threading.Thread(target=send, args=(range(k, len(inputs), 12),)) for k in range(12)]
        for t in threads:
            t.start()
        assert started.wait(60), "requests did not get going"
        os.kill(victim, signal.SIGKILL)
        for t in threads:
            t.join(180)
        assert not errors, errors[:3]
        assert sorted(results) == list(range(len(inputs)))  # no request lost
        for i, x in enumerate(inputs):
            np.testing.assert_array_equal(results[i]["probs"], local.run(x)["probs"])
        assert client.retried >= 1
        replacement = handle.stats.remote().result(timeout_s=30)
        assert replacement["pid"] != victim and replacement["requests"] >= 1
    finally:
        serve.delete("ha")
