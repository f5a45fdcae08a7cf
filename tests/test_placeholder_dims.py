"""Exporters' placeholder dim names ("?", "", "None", "-1", numbers as strings, dim_value -1) are anonymous dynamic
dims, decided in one place (`unirt.tensor.normalize_dim`, run by every `TensorInfo`); only real names tie dims
together. Each test runs real engines on models built with onnx.helper, against ONNX Runtime called by hand."""

from __future__ import annotations

import re

import numpy as np
import pytest

import unirt
from unirt.errors import InputError
from unirt.tensor import TensorInfo, is_placeholder_name, normalize_dim

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper

# Each placeholder form as written in the file: a dim_param string, or an int for dim_value.
PLACEHOLDERS = ["?", "", " ", "None", "none", "null", "-1", "3", -1]


def _available(name: str) -> bool:
    plugin = {b.name: b for b in unirt.backends()}.get(name)
    return plugin is not None and plugin.available


def _save(graph, path) -> str:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    onnx.save(m, str(path))
    return str(path)


def _set_dims(vi, dims) -> None:
    """Write dims exactly as given: int -> dim_value (also -1, which onnx.helper would keep), str -> dim_param
    (also "", which make_tensor_value_info would turn into an unset dim)."""
    shape = vi.type.tensor_type.shape
    shape.ClearField("dim")
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        else:
            dim.dim_param = d


def conv_model(path, ph) -> str:
    """x [ph, 3, ph, ph] -> Conv 3->4 (3x3, pad 1) -> Relu -> y [ph, 4, ph, ph], with the placeholder `ph`."""
    rng = np.random.default_rng(7)
    w = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "b")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 1, 1])
    _set_dims(x, [ph, 3, ph, ph])
    _set_dims(y, [ph, 4, ph, ph])
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "placeholder_conv",
        [x],
        [y],
        [w, b],
    )
    return _save(graph, path)


def reference(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


# -- the one rule ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "dim", ["?", "??", "", "  ", "None", "none", "NULL", "-1", "3", "2.0", "unknown", -1, -7, np.int64(-1), None]
)
def test_placeholders_are_anonymous(dim):
    assert normalize_dim(dim) is None
    assert TensorInfo("x", (dim, 3), np.float32).shape == (None, 3)


@pytest.mark.parametrize(
    "name", ["N", "batch_size", "s0", "M1", "unk__12", "p2o.DynamicDimension.0", "input_dynamic_axes_1", "seq?"]
)
def test_real_names_stay_names(name):
    assert not is_placeholder_name(name)
    assert TensorInfo("x", (name, 3), np.float32).shape == (name, 3)


def test_sizes_are_ints_and_repr_shows_anonymous_dims_as_question_marks():
    info = TensorInfo("x", (np.int64(1), "?", "N", -1, 0), np.float32)
    assert info.shape == (1, None, "N", None, 0) and all(type(d) is int for d in (info.shape[0], info.shape[4]))
    assert info.shape_str() == "[1,?,N,?,0]"
    assert repr(info) == "TensorInfo('x', float32[1,?,N,?,0])"
    with pytest.raises(TypeError):
        TensorInfo("x", (1.5,), np.float32)


# -- Session on every backend that reads ONNX ---------------------------------------------------------------------
@pytest.mark.parametrize("ph", PLACEHOLDERS, ids=repr)
@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_run_with_placeholder_dims_matches_onnxruntime(tmp_path, backend, ph):
    if not _available(backend):
        pytest.skip(f"backend {backend!r} is not available here")
    path = conv_model(tmp_path / "m.onnx", ph)
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    (expected,) = reference(path, {"x": x})
    with unirt.Session(path, backend=backend) as sess:
        assert sess.inputs[0].shape == (None, 3, None, None)
        assert sess.outputs[0].shape == (None, 4, None, None)
        assert not sess.batch.batched  # "?" at dim 0 is no batch name
        np.testing.assert_allclose(sess.run({"x": x})["y"], expected, rtol=1e-4, atol=1e-4)
        # another size on every dynamic dim, H != W: nothing ties them
        x2 = np.random.default_rng(1).standard_normal((2, 3, 20, 36)).astype(np.float32)
        np.testing.assert_allclose(sess.run({"x": x2})["y"], reference(path, {"x": x2})[0], rtol=1e-4, atol=1e-4)
        # out= sized by hand is accepted
        out = np.empty((1, 4, 48, 192), np.float32)
        assert sess.run({"x": x}, out={"y": out})["y"] is out
        np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ph", ["?", -1, ""], ids=repr)
@pytest.mark.parametrize("backend", ["ncnn", "mnn"])
def test_converting_backends_run_placeholder_dims_at_the_shapes_given(tmp_path, backend, ph, monkeypatch):
    """ncnn and MNN convert the ONNX model; at the shapes the conversion is given, they run it like ORT."""
    if not _available(backend):
        pytest.skip(f"backend {backend!r} is not available here")
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    path = conv_model(tmp_path / "m.onnx", ph)
    x = np.random.default_rng(0).standard_normal((1, 3, 48, 192)).astype(np.float32)
    (expected,) = reference(path, {"x": x})
    options = {"conversion": {"input_shapes": {"x": [1, 3, 48, 192]}}}
    try:
        sess = unirt.Session(path, backend=backend, backend_options=options)
    except unirt.UnirtError as exc:  # conversion at given shapes is h2's part of issue 13
        pytest.skip(f"{backend} conversion at the given shapes is not available here: {exc}")
    with sess:
        np.testing.assert_allclose(sess.run({"x": x})["y"], expected, rtol=1e-3, atol=1e-3)


def two_input_model(path, a_dims, b_dims) -> str:
    """y = ReduceSum(a) + ReduceSum(b) over every axis: runs whatever the sizes of a and b."""
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 1])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 1])
    _set_dims(a, a_dims)
    _set_dims(b, b_dims)
    nodes = [
        helper.make_node("ReduceSum", ["a"], ["sa"], keepdims=0),
        helper.make_node("ReduceSum", ["b"], ["sb"], keepdims=0),
        helper.make_node("Add", ["sa", "sb"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "two", [a, b], [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])])
    return _save(graph, path)


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_placeholders_tie_nothing_real_names_tie(tmp_path, backend):
    """Two inputs whose dim 1 is "?": any sizes (ORT runs it). Two inputs sharing a real name ("s0", as torch
    dynamo writes): the sizes must agree, and unirt says so before the engine runs."""
    if not _available(backend):
        pytest.skip(f"backend {backend!r} is not available here")
    feeds = {"a": np.ones((1, 5), np.float32), "b": np.ones((1, 7), np.float32)}
    loose = two_input_model(tmp_path / "loose.onnx", [1, "?"], [1, "?"])
    with unirt.Session(loose, backend=backend) as sess:
        np.testing.assert_allclose(sess.run(feeds)["y"], reference(loose, feeds)[0])
    tied = two_input_model(tmp_path / "tied.onnx", [1, "s0"], [1, "s0"])
    with unirt.Session(tied, backend=backend) as sess:
        assert sess.inputs[0].shape == (1, "s0")
        with pytest.raises(InputError, match="dim 's0' must be the same size everywhere"):
            sess.run(feeds)
        same = {"a": np.ones((1, 5), np.float32), "b": np.full((1, 5), 2, np.float32)}
        np.testing.assert_allclose(sess.run(same)["y"], reference(tied, same)[0])


def test_output_dims_tie_to_inputs_only_by_real_names(tmp_path):
    """Input [1,3,32,"?"], output [1,"?",3]: the output's "?" is not the input's W; out= of the real shape is
    taken, on the engine and in run_many."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 3])
    _set_dims(x, [1, 3, 32, "?"])
    _set_dims(y, [1, "?", 3])
    nodes = [
        helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=0),  # (1, 3, W)
        helper.make_node("Transpose", ["m"], ["t"], perm=[0, 2, 1]),  # (1, W, 3)
        helper.make_node("Slice", ["t", "s", "e", "ax", "st"], ["y"]),
    ]  # (1, ceil(W / 2), 3): not W
    inits = [
        numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("e", 1 << 30), ("ax", 1), ("st", 2))
    ]
    graph = helper.make_graph(nodes, "tie", [x], [y], inits)
    path = _save(graph, tmp_path / "tie.onnx")
    feeds = {"x": np.random.default_rng(3).standard_normal((1, 3, 32, 10)).astype(np.float32)}
    (expected,) = reference(path, feeds)
    assert expected.shape == (1, 5, 3)
    for backend in ("onnxruntime", "openvino"):
        if not _available(backend):
            continue
        with unirt.Session(path, backend=backend, pooled_outputs=True) as sess:
            np.testing.assert_allclose(sess.run(feeds)["y"], expected, rtol=1e-5, atol=1e-6)
            out = np.empty(expected.shape, np.float32)
            assert sess.run(feeds, out={"y": out})["y"] is out
            np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
            many = sess.run_many([feeds, feeds], out=[{"y": np.empty_like(expected)}, None])
            for r in many:
                np.testing.assert_allclose(r["y"], expected, rtol=1e-5, atol=1e-6)


def test_question_mark_batch_dim_is_no_batch_name_but_batched_true_packs(tmp_path):
    path = conv_model(tmp_path / "m.onnx", "?")
    plain = unirt.Session(path, backend="onnxruntime")
    assert plain.batch.kind == "none" and "unnamed" in plain.batch.reason
    sess = unirt.Session(path, backend="onnxruntime", batched=True)
    assert sess.batch.kind == "dynamic" and sess.batch.symbol is None
    rng = np.random.default_rng(5)
    reqs = [{"x": rng.standard_normal((n, 3, 16, 24)).astype(np.float32)} for n in (1, 2, 1)]
    results = sess.run_many(reqs)
    for r, got in zip(reqs, results):
        np.testing.assert_allclose(got["y"], reference(path, r)[0], rtol=1e-4, atol=1e-4)
    stats = sess.batch_stats()
    assert stats.backend_runs == 1 and stats.requests == 3 and stats.unbatched_requests == 0


# -- info --shapes --------------------------------------------------------------------------------------------------
def test_info_shapes_and_every_suggestion_parses(tmp_path):
    from unirt.tools.info import info
    from unirt.tools.shapes import parse_shapes

    path = conv_model(tmp_path / "m.onnx", -1)
    model = onnx.load(path)
    _set_dims(model.graph.input[0], [-1, 3, "?", "?"])  # paddle2onnx's own mix
    onnx.save(model, path)
    report = info(path, "x:1x3x48x192")
    assert report.inputs[0].shape == [None, 3, None, None] and report.inputs[0].resolved == [1, 3, 48, 192]
    assert report.outputs[0].resolved == [1, 4, 48, 192]
    assert report.flops and report.flops > 0
    with pytest.raises(InputError) as missing:
        info(path)
    message = str(missing.value)
    assert "fixes it to -1" not in message
    suggestion = re.search(r"--shapes (\S+)", message).group(1)
    assert parse_shapes(suggestion) == {"x": (1, 3, 1, 1)}
    assert info(path, suggestion).inputs[0].resolved == [1, 3, 1, 1]


def test_info_cli_with_placeholder_dims(tmp_path, capsys):
    from unirt.cli import main

    path = conv_model(tmp_path / "m.onnx", "?")
    assert main(["info", path, "--shapes", "x:1x3x48x192"]) == 0
    text = capsys.readouterr().out
    assert "float32[?,3,?,?] -> 1x3x48x192" in text and "1x4x48x192" in text


def test_cli_run_bench_compare_on_placeholder_dims(tmp_path, capsys):
    """`unirt run`, `bench` and `compare` on paddle2onnx's [-1, 3, "?", "?"] at 1x3x48x192."""
    import json

    from unirt.cli import main

    path = conv_model(tmp_path / "m.onnx", "?")
    model = onnx.load(path)
    _set_dims(model.graph.input[0], [-1, 3, "?", "?"])
    onnx.save(model, path)
    x = np.random.default_rng(2).standard_normal((1, 3, 48, 192)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    saved = tmp_path / "out.npz"
    assert (
        main(
            [
                "run",
                path,
                "--backend",
                "onnxruntime",
                "--input",
                f"x={tmp_path / 'x.npy'}",
                "--iterations",
                "1",
                "--save-outputs",
                str(saved),
            ]
        )
        == 0
    )
    with np.load(saved) as outputs:
        np.testing.assert_allclose(outputs["y"], reference(path, {"x": x})[0], rtol=1e-5, atol=1e-5)
    capsys.readouterr()
    backends = ",".join(b for b in ("onnxruntime", "openvino") if _available(b))
    report = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                path,
                "--shapes",
                "x:1x3x48x192",
                "--backends",
                backends,
                "--iterations",
                "2",
                "--warmup",
                "1",
                "--json",
                str(report),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert all(name in text for name in backends.split(","))
    results = json.loads(report.read_text())["results"]
    assert {r["backend"] for r in results} == set(backends.split(",")) and not any(r.get("error") for r in results)
    assert main(["compare", path, "--shapes", "x:1x3x48x192", "--backends", backends]) == 0
    assert "PASSED" in capsys.readouterr().out
