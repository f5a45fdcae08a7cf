"""The `unirt` command line, run as a user runs it (the installed console script)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from unirt.cli import main


def test_console_script_is_installed(tmp_path):
    exe = shutil.which("unirt")
    assert exe is not None
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.startswith("unirt ")


def test_backends_table_and_json(test_plugins, capsys):
    assert main(["backends", "--all"]) == 0
    out = capsys.readouterr().out
    assert "hardware:" in out and "reference" in out and "available" in out
    assert "fancyengine" in out  # the broken plugin shows its import error
    assert "pip install ./plugins/openvino" in out or "openvino" in out
    assert main(["backends", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in data["backends"]}
    assert rows["reference"]["available"] and not rows["broken"]["available"]


def test_backends_formats_column_shows_what_is_converted():
    from unirt import BackendInfo
    from unirt.cli.backends_cmd import formats_cell

    converting = BackendInfo("mnn", True, True, "", formats=("mnn",), converts_from=("onnx",))
    assert formats_cell(converting) == "mnn, onnx (converted)"
    assert formats_cell(BackendInfo("onnxruntime", True, True, "", formats=("onnx",))) == "onnx"
    # read as it is on load, and convertible with `unirt convert --to openvino`: not "(converted)"
    reads_too = BackendInfo("openvino", True, True, "", formats=("onnx", "openvino"), converts_from=("onnx",))
    assert formats_cell(reads_too) == "onnx, openvino"
    assert formats_cell(BackendInfo("missing", False, False, "not installed")) == "-"


def test_run_with_random_inputs(test_plugins, model, capsys):
    assert (
        main(["run", str(model("dynamic_mlp")), "--backend", "reference", "--shape", "x=3x8", "--iterations", "2"]) == 0
    )
    out = capsys.readouterr().out
    assert "backend:  reference on cpu" in out
    assert "input:    x  float32[3, 8]  (random)" in out
    assert "output:   probs  float32[3, 3]" in out and "latency:" in out and "median" in out


def test_run_names_the_source_format_of_a_converted_model(model, capsys, tmp_path, monkeypatch):
    pytest.importorskip("MNN")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["run", str(model("dynamic_mlp")), "--backend", "mnn", "--iterations", "1"]) == 0
    assert "(onnx, converted to mnn)" in capsys.readouterr().out
    assert main(["run", str(model("dynamic_mlp")), "--backend", "mnn", "--iterations", "1"]) == 0
    assert "(onnx, converted to mnn (cached))" in capsys.readouterr().out


def test_run_batched_pads_a_static_batch(tmp_path, capsys):
    """A model fixed at 3 rows: 2 rows are refused (the error names --batched); --batched pads them."""
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "static3",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(tmp_path / "static3.onnx"))
    argv = ["run", str(tmp_path / "static3.onnx"), "--backend", "onnxruntime", "--shape", "x=2x4", "--iterations", "1"]
    assert main(argv) == 2
    assert "unirt run --batched" in capsys.readouterr().err
    assert main([*argv, "--batched"]) == 0
    assert "output:   y  float32[2, 4]" in capsys.readouterr().out


def test_run_with_input_files_json_and_saved_outputs(test_plugins, model, tmp_path, capsys):
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    saved = tmp_path / "out.npz"
    assert (
        main(
            [
                "run",
                str(model("dynamic_mlp")),
                "--backend",
                "reference",
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--json",
                "--save-outputs",
                str(saved),
                "--iterations",
                "1",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["backend"] == "reference" and report["inputs"][0]["source"] == "file"
    probs = next(o for o in report["outputs"] if o["name"] == "probs")
    assert probs["shape"] == [2, 3] and 0 <= probs["min"] <= probs["max"] <= 1
    with np.load(saved) as archive:
        assert archive["probs"].shape == (2, 3)


@pytest.fixture
def shared_dims(tmp_path):
    """y = a + b with a, b float32[N, 3]: a dim name shared by two inputs."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "mix",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(tmp_path / "mix.onnx"))
    return tmp_path / "mix.onnx"


def test_run_sizes_random_inputs_from_shared_dims(shared_dims, tmp_path, capsys):
    """--shape a=4x3 (or a 2-row --input a) sizes the random b too: both carry N."""
    assert main(["run", str(shared_dims), "--backend", "onnxruntime", "--shape", "a=4x3", "--iterations", "0"]) == 0
    out = capsys.readouterr().out
    assert "input:    b  float32[4, 3]  (random)" in out and "output:   y  float32[4, 3]" in out
    np.save(tmp_path / "a.npy", np.ones((2, 3), np.float32))
    assert (
        main(
            [
                "run",
                str(shared_dims),
                "--backend",
                "onnxruntime",
                "--input",
                f"a={tmp_path / 'a.npy'}",
                "--iterations",
                "0",
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert {i["name"]: i["shape"] for i in report["inputs"]} == {"a": [2, 3], "b": [2, 3]}
    assert main(["run", str(shared_dims), "--backend", "onnxruntime", "--shape", "a=4x3", "--shape", "b=5x3"]) == 2
    assert "dim 'N' is 4 in one input and 5 in 'b'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,message",
    [
        (["run", "missing.onnx"], "no such model file"),
        (["run", "{model}", "--backend", "reference", "--shape", "x=abc"], "expected NAME:DIMS"),
        (["run", "{model}", "--backend", "reference", "--shape", "y=1x8"], "unknown input"),
        (["run", "{model}", "--backend", "reference", "--input", "x=nope.npy"], "no such file"),
        (["run", "{model}", "--backend", "nosuch"], "not installed"),
    ],
)
def test_run_errors_are_clear(test_plugins, model, capsys, argv, message):
    argv = [a.replace("{model}", str(model("dynamic_mlp"))) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err


def test_explain(test_plugins, model, capsys, monkeypatch):
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", "reference")
    assert main(["explain", str(model("dynamic_mlp"))]) == 0
    assert "reference" in capsys.readouterr().out


def test_python_dash_m(tmp_path, model):
    proc = subprocess.run([sys.executable, "-m", "unirt", "backends"], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0 and "backend" in proc.stdout


def test_a_closed_pipe_ends_quietly():
    """`unirt backends | head -0`: the reader is gone; no traceback, the SIGPIPE-style exit code."""
    import subprocess
    import sys

    proc = subprocess.Popen(
        [sys.executable, "-m", "unirt", "backends"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd="/"
    )
    proc.stdout.close()
    err = proc.stderr.read().decode()
    proc.stderr.close()
    assert proc.wait(timeout=60) == 141 and "Traceback" not in err and "Broken pipe" not in err, err
