"""Bounded work in unirt serve: a bounded queue (503 + Retry-After / gRPC UNAVAILABLE over it), request timeouts
(the v2 `timeout` parameter and the config's default) that drop queued work, and clients that go away before their
request ran: their work is dropped, not run. Runs are observed with the test plugin `slow`
(tests/plugin_sources/unirt_slow_plugin.py): a run sleeps as many seconds as its first input value says and logs
that value, so a test knows exactly which requests ran."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from conftest import install_distribution

import unirt
from unirt.testing import models

pytestmark = pytest.mark.timeout(180)

BOUNDED = """
backend: "slow"
max_batch_size: 0
dynamic_batching { default_queue_policy { max_queue_size: 2 } }
"""
TIMED = """
backend: "slow"
max_batch_size: 0
dynamic_batching { default_queue_policy { default_timeout_microseconds: 300000 allow_timeout_override: true } }
"""
OPEN = 'backend: "slow"\nmax_batch_size: 0\n'  # no queue policy: the server's default bound; timeouts on request
HOLD = 1.5  # seconds the first request of each test keeps the model's only instance busy


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
def runs(tmp_path_factory):
    """The test distribution `unirt-slow-test` (backend "slow"); returns the values its runs logged so far."""
    site = tmp_path_factory.mktemp("site")
    install_distribution(site, "unirt-slow-test", "unirt_slow_plugin", {"slow": "unirt_slow_plugin:SlowBackend"})
    calls = site / "calls.txt"
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(site))
        mp.setenv("UNIRT_TEST_CALLS", str(calls))
        unirt.refresh()
        yield lambda: [round(float(v), 6) for v in calls.read_text().split()] if calls.exists() else []  # float32
    unirt.refresh()


@pytest.fixture(scope="module")
def server(runs, tmp_path_factory, add_model):
    from unirt.serve import ServeOptions, ServerThread

    repo = tmp_path_factory.mktemp("overload-repo")
    for name, config in (("bounded", BOUNDED), ("timed", TIMED), ("open", OPEN)):
        add_model(repo, name, doubler, 1, config + 'parameters { key: "isolate" value { string_value: "false" } }\n')
    add_model(repo, "mlp", models.dynamic_mlp)
    options = ServeOptions(model_repository=repo, http_port=0, grpc_port=0, metrics_port=0, drain_timeout=10)
    with ServerThread(options) as running:
        yield running


def body(values: list[float], **parameters) -> bytes:
    doc = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values)], "data": values}]}
    if parameters:
        doc["parameters"] = parameters
    return json.dumps(doc).encode()


def post(port: int, model: str, values: list[float], **parameters) -> tuple[int, dict, dict, float]:
    """(status, headers, JSON body, seconds taken)."""
    started = time.monotonic()
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/models/{model}/infer", body(values, **parameters))
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return (
                resp.status,
                {k.lower(): v for k, v in resp.headers.items()},
                json.loads(resp.read()),
                time.monotonic() - started,
            )
    except urllib.error.HTTPError as err:
        return (
            err.code,
            {k.lower(): v for k, v in err.headers.items()},
            json.loads(err.read()),
            time.monotonic() - started,
        )


def metric(server, name: str, **labels: str) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{server.ports['metrics']}/metrics", timeout=30) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def wait_for(predicate, what: str, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def hold(pool, port: int, model: str, runs, marker: float):
    """Start a request that keeps `model`'s instance busy for about `marker` seconds; returns its future once the
    run has started."""
    busy = pool.submit(post, port, model, [marker])
    wait_for(lambda: marker in runs(), "the holding run to start")
    return busy


def test_burst_beyond_the_queue_bound_gets_503_with_retry_after(server, runs):
    port = server.ports["http"]
    rejected_before = metric(server, "unirt_model_dropped_requests_total", model="bounded", reason="rejected")
    assert metric(server, "unirt_model_queue_capacity", model="bounded") == 2
    with ThreadPoolExecutor(12) as pool:
        busy = hold(pool, port, "bounded", runs, HOLD + 0.001)
        burst = [pool.submit(post, port, "bounded", [0.001 * (i + 1), 1.0]) for i in range(10)]
        answers = [f.result(30) for f in burst]  # none hangs
        assert busy.result(30)[0] == 200
    refused = [a for a in answers if a[0] == 503]
    served = [a for a in answers if a[0] == 200]
    assert len(served) == 2 and len(refused) == 8, [a[:1] for a in answers]
    for _status, headers, doc, seconds in refused:
        assert headers.get("retry-after") == "1" and "exceeds the maximum queue size (2" in doc["error"]
        assert seconds < HOLD  # refused at once, not after waiting
    for _status, _headers, doc, _seconds in served:
        assert doc["outputs"][0]["data"][1] == 2.0
    assert (
        metric(server, "unirt_model_dropped_requests_total", model="bounded", reason="rejected") == rejected_before + 8
    )
    assert metric(server, "nv_inference_request_failure", model="bounded", reason="REJECTED") >= 8
    assert post(port, "bounded", [0.0])[0] == 200  # the burst is over: served again


def test_default_queue_bound(server, tmp_path, add_model):
    from unirt.serve.manager import ModelManager
    from unirt.serve.model import default_queue_size
    from unirt.serve.repository import DirectoryRepository

    # no queue policy in the config: 32 batches per instance, at least 64 requests
    assert metric(server, "unirt_model_queue_capacity", model="open") == 64
    assert metric(server, "unirt_model_queue_capacity", model="mlp") == 32 * 4  # max_batch_size 4 (completed)
    assert default_queue_size(2, 8) == 512 and default_queue_size(1, 0) == 64
    add_model(tmp_path, "mlp", models.dynamic_mlp)
    add_model(
        tmp_path,
        "bounded",
        models.dynamic_mlp,
        1,
        "max_batch_size: 2\ndynamic_batching { default_queue_policy { max_queue_size: 3 } }\n",
    )
    for server_bound, expected in ((0, 0), (5, 5)):  # unirt serve --max-queue-size: 0 = unbounded
        manager = ModelManager(DirectoryRepository(tmp_path), max_queue_size=server_bound)
        try:
            manager.load_all()
            assert manager.get("mlp").scheduler.max_queue_size == expected
            assert manager.get("bounded").scheduler.max_queue_size == 3  # the config's own bound wins
        finally:
            manager.close()


def test_request_timeout_drops_queued_work(server, runs):
    port = server.ports["http"]
    with ThreadPoolExecutor(4) as pool:
        busy = hold(pool, port, "open", runs, HOLD + 0.002)
        status, _, doc, seconds = post(port, "open", [0.0125], timeout=200_000)  # 200 ms
        assert status == 503 and "request timeout expired" in doc["error"], doc
        assert 0.15 < seconds < HOLD
        assert busy.result(30)[0] == 200
    time.sleep(0.1)
    assert 0.0125 not in runs()  # dropped, never run
    assert metric(server, "unirt_model_dropped_requests_total", model="open", reason="timeout") >= 1
    ok = post(port, "open", [0.0, 5.0], timeout=5_000_000)  # in time: served
    assert ok[0] == 200 and ok[2]["outputs"][0]["data"] == [0.0, 10.0]
    bad = post(port, "open", [0.0], timeout="soon")
    assert bad[0] == 400 and "parameters.timeout must be a non-negative integer" in bad[2]["error"]


def test_config_default_timeout_and_override(server, runs):
    port = server.ports["http"]
    with ThreadPoolExecutor(4) as pool:
        busy = hold(pool, port, "timed", runs, HOLD + 0.003)
        default = pool.submit(post, port, "timed", [0.0126])  # the config's 300 ms
        longer = pool.submit(post, port, "timed", [0.0127], timeout=10_000_000)  # cannot lengthen the default
        shorter = pool.submit(post, port, "timed", [0.0128], timeout=50_000)  # may shorten it
        for f, lo, hi in ((default, 0.25, HOLD), (longer, 0.25, HOLD), (shorter, 0.03, 0.3)):
            status, _, doc, seconds = f.result(30)
            assert status == 503 and "timeout expired" in doc["error"] and lo < seconds < hi, (doc, seconds)
        assert busy.result(30)[0] == 200
    time.sleep(0.1)
    assert not {0.0126, 0.0127, 0.0128} & set(runs())


def test_disconnected_http_client_work_is_dropped(server, runs):
    port = server.ports["http"]
    cancelled_before = metric(server, "unirt_model_dropped_requests_total", model="open", reason="cancelled")
    with ThreadPoolExecutor(2) as pool:
        busy = hold(pool, port, "open", runs, HOLD + 0.004)
        payload = body([0.0131])
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(
            b"POST /v2/models/open/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(payload) + payload
        )
        wait_for(lambda: metric(server, "nv_inference_pending_request_count", model="open") == 1, "it to queue")
        sock.close()  # the client gives up while its request waits
        wait_for(
            lambda: (
                metric(server, "unirt_model_dropped_requests_total", model="open", reason="cancelled")
                == cancelled_before + 1
            ),
            "the request to be dropped",
        )
        assert metric(server, "nv_inference_pending_request_count", model="open") == 0
        assert busy.result(30)[0] == 200
    time.sleep(0.1)
    assert 0.0131 not in runs()
    assert post(port, "open", [0.0])[0] == 200


def test_grpc_unavailable_timeout_and_cancelled(server, runs):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    port = server.ports["http"]
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")

    def infer(model, values, **kw):
        x = grpcclient.InferInput("x", [len(values)], "FP32")
        x.set_data_from_numpy(np.array(values, np.float32))
        return client.infer(model, [x], **kw)

    try:
        with ThreadPoolExecutor(8) as pool:
            busy = hold(pool, port, "bounded", runs, HOLD + 0.005)
            burst = [pool.submit(infer, "bounded", [0.0141 + i * 1e-4]) for i in range(5)]
            errors = []
            for f in burst:
                try:
                    f.result(30)
                except InferenceServerException as exc:
                    errors.append(exc)
            assert len(errors) == 3 and all(
                e.status() == "StatusCode.UNAVAILABLE" and "maximum queue size" in e.message() for e in errors
            )
            assert busy.result(30)[0] == 200

            busy = hold(pool, port, "open", runs, HOLD + 0.006)
            with pytest.raises(InferenceServerException) as info:
                infer("open", [0.0151], timeout=100_000)  # the v2 timeout parameter, microseconds
            assert info.value.status() == "StatusCode.UNAVAILABLE" and "timeout expired" in info.value.message()
            cancelled_before = metric(server, "unirt_model_dropped_requests_total", model="open", reason="cancelled")
            with pytest.raises(InferenceServerException) as info:
                infer("open", [0.0152], client_timeout=0.2)  # the client gives up (gRPC deadline)
            assert info.value.status() == "StatusCode.DEADLINE_EXCEEDED"
            wait_for(
                lambda: (
                    metric(server, "unirt_model_dropped_requests_total", model="open", reason="cancelled")
                    == cancelled_before + 1
                ),
                "the gRPC request to be dropped",
            )
            assert busy.result(30)[0] == 200
        time.sleep(0.1)
        assert not {0.0151, 0.0152} & set(runs())
        np.testing.assert_array_equal(infer("open", [0.0, 1.0]).as_numpy("y"), [0.0, 2.0])
    finally:
        client.close()


def test_scheduler_forgets_cancelled_requests():
    from unirt.serve.errors import QueueFull
    from unirt.serve.scheduler import Scheduler
    from unirt.serve.stats import ModelStats

    gate, ran = threading.Event(), []

    def run(feeds, names):
        ran.append(float(feeds["x"][0]))
        gate.wait(10)
        return {"y": feeds["x"] * 2}

    stats = ModelStats()
    sched = Scheduler("t", [run], ["y"], stats, max_queue_size=2)
    try:
        first = sched.submit({"x": np.array([1.0], np.float32)}, 1)
        wait_for(lambda: ran == [1.0], "the first run")
        queued = [sched.submit({"x": np.array([v], np.float32)}, 1) for v in (2.0, 3.0)]
        with pytest.raises(QueueFull):
            sched.submit({"x": np.array([4.0], np.float32)}, 1)
        assert queued[0].cancel() and stats.pending == 1  # out of the queue at once: room for another
        fourth = sched.submit({"x": np.array([5.0], np.float32)}, 1)
        gate.set()
        assert first.result(10).outputs["y"][0] == 2.0 and fourth.result(10).outputs["y"][0] == 10.0
        assert queued[1].result(10).outputs["y"][0] == 6.0
        assert ran == [1.0, 3.0, 5.0] and stats.dropped["rejected"] == 1 and stats.pending == 0
    finally:
        gate.set()
        sched.stop(10)


def test_queue_policy_config():
    from unirt.serve.config import ConfigError, QueuePolicy, parse_config_text, queue_policy

    cfg = parse_config_text(
        "max_batch_size: 0\ndynamic_batching { default_queue_policy { max_queue_size: 9 "
        "default_timeout_microseconds: 2500 allow_timeout_override: true } }"
    )
    assert queue_policy(cfg) == QueuePolicy(9, 2500, True)
    assert queue_policy(parse_config_text("max_batch_size: 2")) == QueuePolicy()
    with pytest.raises(ConfigError, match=r"timeout_action: only REJECT is supported"):
        queue_policy(parse_config_text("dynamic_batching { default_queue_policy { timeout_action: DELAY } }"))
    with pytest.raises(ConfigError, match=r"max_queue_size.*Value out of range: -1"):  # uint32 in the proto
        parse_config_text("dynamic_batching { default_queue_policy { max_queue_size: -1 } }")
