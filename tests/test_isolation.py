"""isolate=True: the backend in a child process; real crashes (abort, segfault) become BackendCrashedError and the
session restarts its child on the next call."""

from __future__ import annotations

import os
import signal

import numpy as np
import onnxruntime as ort
import pytest
from conftest import install_distribution

import unirt
from unirt import BackendCrashedError, InputError, ModelLoadError, UnsupportedOptionError

pytestmark = pytest.mark.skipif(os.name != "posix", reason="isolate=True needs POSIX shared memory")

ABORT, SEGFAULT = -1234.0, -4321.0  # the values unirt_aborting_plugin crashes on


@pytest.fixture
def aborting(tmp_path, monkeypatch):
    """The test distribution `unirt-aborting-test` (backend "aborting"), registered through its entry point."""
    site = tmp_path / "site"
    site.mkdir()
    install_distribution(
        site, "unirt-aborting-test", "unirt_aborting_plugin", {"aborting": "unirt_aborting_plugin:AbortingBackend"}
    )
    monkeypatch.syspath_prepend(str(site))
    unirt.refresh()
    yield
    unirt.refresh()


def test_isolated_onnxruntime_matches_in_process(conv_model):
    path = conv_model("dynamic")
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32)).astype(np.float32)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    with unirt.Session(path, backend="onnxruntime", isolate=True) as sess:
        runner = sess._runner
        assert sess.isolated and runner.pid not in (None, os.getpid())
        assert [i.name for i in sess.inputs] == ["x"] and sess.batch.kind == "dynamic"
        for _ in range(3):  # the regions are reused call after call
            out = sess.run(x)
            np.testing.assert_allclose(out["features"], ref[0], rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(out["pooled"], ref[1], rtol=1e-5, atol=1e-6)
        small = sess.run(x[:1], output_names=["pooled"])
        assert list(small) == ["pooled"] and small["pooled"].shape == (1, 16, 1, 1)
        big = np.random.default_rng(1).standard_normal((40, 3, 32, 32)).astype(np.float32)  # regions must grow
        np.testing.assert_allclose(
            sess.run(big)["pooled"],
            ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["pooled"], {"x": big})[0],
            rtol=1e-5,
            atol=1e-6,
        )
        many = sess.run_many([x[:1], x[1:]])
        np.testing.assert_allclose(many[1]["pooled"], ref[1][1:], rtol=1e-5, atol=1e-6)
        assert sess.pool.stats().allocations >= 1  # isolated outputs land in the session's pool too
    assert runner.pid is None  # close ended the child


def test_engine_errors_cross_the_process_boundary(model):
    with unirt.Session(model("multi_io"), backend="onnxruntime", isolate=True) as sess:
        good = {
            "a": np.ones((2, 4), np.float32),
            "b": np.ones((2, 4), np.float32),
            "idx": np.array([0, 5]),
            "scale": np.float32(2),
        }
        with pytest.raises(unirt.RunError, match="onnxruntime"):
            sess.run(good)  # index 5 is out of range: the engine's error, raised as unirt's RunError
        good["idx"] = np.array([0, 1])
        assert sess.run(good)["count"] == 2  # the child is still there
        with pytest.raises(InputError, match="expected float32"):
            sess.run({**good, "a": good["a"].astype(np.float64)})  # checked in the parent, as always


def test_a_model_the_engine_refuses_is_a_model_load_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07\x12\x04test" + b"\x3a\x02\x0a\x00")  # parses as ONNX, has no usable graph
    with pytest.raises(ModelLoadError):
        unirt.Session(bad, backend="onnxruntime", isolate=True)


def test_abort_in_native_code_raises_and_the_next_call_restarts(aborting, model):
    sess = unirt.Session(model("dynamic_mlp"), backend="aborting", isolate=True)
    x = np.random.default_rng(2).standard_normal((2, 8)).astype(np.float32)
    expected = sess.run(x)
    first_child = sess._runner.pid
    bad = x.copy()
    bad[0, 0] = ABORT
    with pytest.raises(BackendCrashedError, match=r"crashed in its isolated process .* SIGABRT \(signal 6\)") as info:
        sess.run(bad)
    assert info.value.signal == signal.SIGABRT and info.value.signal_name == "SIGABRT"
    assert isinstance(info.value, unirt.RunError)
    assert sess._runner.pid is None  # the dead child is gone ...
    again = sess.run(x)  # ... and the next call starts a new one
    assert sess._runner.pid not in (None, first_child) and sess._runner.restarts == 1
    np.testing.assert_array_equal(again["probs"], expected["probs"])
    bad[0, 0] = SEGFAULT
    with pytest.raises(BackendCrashedError, match="SIGSEGV") as info:
        sess.run(bad)
    assert info.value.signal == signal.SIGSEGV
    np.testing.assert_array_equal(sess.run(x)["logits"], expected["logits"])
    assert sess._runner.restarts == 2
    sess.close()


def test_segfault_while_loading_a_malformed_model(aborting, tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], doc_string="segfault on load")
    proto.ir_version = 9
    path = tmp_path / "crash_on_load.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(BackendCrashedError, match=r"while loading .*crash_on_load.onnx: killed by SIGSEGV") as info:
        unirt.Session(path, backend="aborting", isolate=True)
    assert info.value.signal == signal.SIGSEGV


def test_crash_with_pooled_outputs_and_out_arrays(aborting, model):
    with unirt.Session(model("dynamic_mlp"), backend="aborting", isolate=True, pooled_outputs=True) as sess:
        x = np.ones((3, 8), np.float32)
        probs = np.empty((3, 3), np.float32)
        assert sess.run(x, out={"probs": probs})["probs"] is probs
        bad = x.copy()
        bad[0, 0] = ABORT
        with pytest.raises(BackendCrashedError):
            sess.run(bad, out={"probs": probs})
        assert sess._runner.pid is None and sess._runner.restarts == 0  # crashed once, not retried
        np.testing.assert_allclose(sess.run(x)["probs"], probs)
        assert sess._runner.restarts == 1


def test_string_models_cannot_be_isolated(model):
    with pytest.raises(UnsupportedOptionError, match="string tensors"):
        unirt.Session(model("strings"), backend="onnxruntime", isolate=True)


@pytest.fixture
def scalar_model(tmp_path):
    """s = ReduceSum(x) float32[] (a 0-d output), y = x * 2 float32[N, 4]."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0), helper.make_node("Add", ["x", "x"], ["y"])],
        "scalar_out",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4]),
        ],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(tmp_path / "scalar_out.onnx"))
    return tmp_path / "scalar_out.onnx"


@pytest.mark.parametrize("pooled", ["auto", True])
def test_scalar_outputs_stay_0_d(scalar_model, pooled):
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    plain = unirt.Session(scalar_model, backend="onnxruntime").run(x)
    assert plain["s"].shape == ()
    with unirt.Session(scalar_model, backend="onnxruntime", isolate=True, pooled_outputs=pooled) as sess:
        got = sess.run(x)
        assert got["s"].shape == () and got["s"] == x.sum()
        assert got["y"].shape == (3, 4)
        s = np.empty((), np.float32)
        into = sess.run(x, out={"s": s})
        assert into["s"] is s and s == x.sum()


def test_a_session_made_in_a_thread_that_ended_still_runs(model):
    """The child must not die with the thread that started it (PR_SET_PDEATHSIG fires on that thread's exit)."""
    import threading
    import time

    made = []
    t = threading.Thread(
        target=lambda: made.append(unirt.Session(model("dynamic_mlp"), backend="onnxruntime", isolate=True))
    )
    t.start()
    t.join()
    with made[0] as sess:
        time.sleep(0.2)
        x = np.ones((2, 8), np.float32)
        np.testing.assert_allclose(
            sess.run(x)["probs"], unirt.Session(model("dynamic_mlp"), backend="onnxruntime").run(x)["probs"], rtol=1e-6
        )
        assert sess._runner.restarts == 0


def test_a_worker_hung_mid_run_ends_when_its_parent_is_killed(aborting, model):
    """kill -9 of the parent while the child is stuck in the engine: the orphaned worker still exits."""
    import subprocess
    import sys
    import textwrap
    import time

    code = textwrap.dedent(f"""
        import sys; del sys.path[0]
        import threading, numpy as np, unirt
        sess = unirt.Session({str(model("dynamic_mlp"))!r}, backend="aborting", isolate=True)
        x = np.ones((1, 8), np.float32)
        x[0, 0] = -5555.0
        threading.Thread(target=sess.run, args=(x,), daemon=True).start()
        print(sess._runner.pid, flush=True)
        input()
    """)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    worker = int(parent.stdout.readline())
    time.sleep(0.5)  # the run is under way in the worker
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait(timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        try:
            with open(f"/proc/{worker}/stat") as f:  # a zombie waiting for its reaper has exited too
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except OSError:
            pass
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the isolated worker outlived its killed parent")
