"""The engines' own log lines stay off a CLI user's terminal unless asked for (`-v`, UNIRT_ENGINE_LOGS=1): LiteRT's
"INFO: Created TensorFlow Lite XNNPACK delegate" (printed from C++ to fd 2) and ONNX Runtime's colored warnings."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIRT = shutil.which("unirt", path=os.path.dirname(sys.executable)) or shutil.which("unirt") or "unirt"
TFLITE_MODEL = ROOT / "tests" / "data" / "exporters" / "keras_mlp.tflite"  # made by the TFLite converter
XNNPACK = "INFO: Created TensorFlow Lite XNNPACK delegate"
ORT_WARNING = "[W:onnxruntime"


def unirt(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "UNIRT_ENGINE_LOGS"} | env
    done = subprocess.run([UNIRT, *args], cwd=cwd, capture_output=True, text=True, timeout=240, env=environ)
    assert done.returncode == 0, f"unirt {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture
def unused_initializer_model(tmp_path) -> Path:
    """A model ONNX Runtime warns about when it loads it ("Removing initializer 'unused'")."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    w = numpy_helper.from_array(np.linspace(-1, 1, 16, dtype=np.float32).reshape(4, 4), "w")
    unused = numpy_helper.from_array(np.ones(3, np.float32), "unused")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g", [x], [y], [w, unused])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "unused.onnx"
    onnx.save(model, path)
    return path


def test_tflite_xnnpack_line_only_when_asked(tmp_path):
    pytest.importorskip("ai_edge_litert")
    for command in (
        ["run", str(TFLITE_MODEL), "--backend", "tflite"],
        ["bench", str(TFLITE_MODEL), "--backends", "tflite", "--iterations", "3", "--no-progress"],
    ):
        quiet = unirt(*command, cwd=tmp_path)
        assert XNNPACK not in quiet.stderr, quiet.stderr
        assert "tflite" in quiet.stdout
    assert XNNPACK in unirt("-v", "run", str(TFLITE_MODEL), "--backend", "tflite", cwd=tmp_path).stderr
    assert XNNPACK in unirt("run", str(TFLITE_MODEL), "--backend", "tflite", cwd=tmp_path, UNIRT_ENGINE_LOGS="1").stderr


def test_onnxruntime_warnings_only_when_asked(unused_initializer_model, tmp_path):
    pytest.importorskip("onnxruntime.quantization")
    model = str(unused_initializer_model)
    ran = unirt("run", model, "--backend", "onnxruntime", cwd=tmp_path)
    assert ORT_WARNING not in ran.stderr and "onnxruntime" in ran.stdout
    # quantization makes ONNX Runtime sessions of its own, outside the plugin
    quantize = ["quantize", model, "-o", str(tmp_path / "q.onnx"), "--int8", "--no-measure"]
    quiet = unirt(*quantize, cwd=tmp_path)
    assert ORT_WARNING not in quiet.stderr and "Removing initializer" not in quiet.stderr, quiet.stderr
    assert "Removing initializer 'unused'" in unirt(*quantize, cwd=tmp_path, UNIRT_ENGINE_LOGS="1").stderr


def test_filtered_stderr_keeps_what_is_not_an_engine_info_line(tmp_path):
    """Only "INFO: " lines are dropped: an engine's errors and warnings printed at load still reach the user."""
    code = (
        "import os, sys\n"
        "from unirt import engine_logs\n"
        "with engine_logs.filtered_stderr():\n"
        "    os.write(2, b'INFO: before quiet\\n')\n"
        "engine_logs.quiet()\n"
        "with engine_logs.filtered_stderr():\n"
        "    os.write(2, b'INFO: Created a delegate\\nERROR: Didn\\'t find op\\n')\n"
        "    print('python warning', file=sys.stderr)\n"
        "os.write(2, b'INFO: after\\n')\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "UNIRT_ENGINE_LOGS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=environ
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == ["INFO: before quiet", "ERROR: Didn't find op", "python warning", "INFO: after"]


def serve_and_infer(tmp_path: Path, **env: str) -> str:
    """`unirt serve` a TFLite model (isolated in a child process by default), one gRPC inference, SIGINT: stderr."""
    import signal
    import socket
    import time

    grpcclient = pytest.importorskip("tritonclient.grpc")
    ports = []
    for _ in range(3):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(str(s.getsockname()[1]))
    environ = {k: v for k, v in os.environ.items() if k != "UNIRT_ENGINE_LOGS"} | env
    server = subprocess.Popen(
        [
            UNIRT,
            "serve",
            str(TFLITE_MODEL),
            "--http-port",
            ports[0],
            "--grpc-port",
            ports[1],
            "--metrics-port",
            ports[2],
        ],
        cwd=tmp_path,
        env=environ,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{ports[1]}")
        deadline = time.monotonic() + 120
        while True:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            assert server.poll() is None and time.monotonic() < deadline, "unirt serve did not become ready"
            time.sleep(0.3)
        spec = client.get_model_metadata("keras_mlp", as_json=True)["inputs"][0]
        shape = [max(int(d), 1) for d in spec["shape"]]
        x = grpcclient.InferInput(spec["name"], shape, spec["datatype"])
        x.set_data_from_numpy(np.ones(shape, np.float32))
        assert client.infer("keras_mlp", [x]).get_response().outputs
        client.close()
    finally:
        server.send_signal(signal.SIGINT)
        _, err = server.communicate(timeout=60)
    return err


def test_serve_keeps_grpc_and_isolated_engines_quiet(tmp_path):
    """gRPC's fork notice (the isolated model's child is started while gRPC threads run) and LiteRT's line in that
    child: neither by default, both with UNIRT_ENGINE_LOGS=1."""
    pytest.importorskip("ai_edge_litert")
    quiet = serve_and_infer(tmp_path)
    assert XNNPACK not in quiet and "fork_posix" not in quiet, quiet
    loud = serve_and_infer(tmp_path, UNIRT_ENGINE_LOGS="1")
    assert XNNPACK in loud, loud
