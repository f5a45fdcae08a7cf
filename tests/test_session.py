"""Session behaviour that does not depend on the engine, run on the test distribution's reference backend."""

from __future__ import annotations

import numpy as np
import pytest

import unirt
from unirt import InputError, SessionClosedError, UnsupportedOptionError


@pytest.fixture
def mlp(test_plugins, model):
    with unirt.Session(model("dynamic_mlp"), backend="reference") as sess:
        yield sess


class DLPackOnly:
    """A DLPack producer that is not a numpy array (as torch/jax tensors are)."""

    def __init__(self, array):
        self._array = array

    def __dlpack__(self, **kwargs):
        return self._array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._array.__dlpack_device__()


class ArrayProtocol:
    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


class OnGpu(DLPackOnly):
    def __dlpack_device__(self):
        return (2, 0)  # kDLCUDA


def test_run_dict_single_array_and_call(mlp):
    x = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    a = mlp.run({"x": x})
    b = mlp.run(x)
    c = mlp(x)
    d = mlp(x=x)
    assert list(a) == ["logits", "probs"]
    for r in (b, c, d):
        np.testing.assert_array_equal(r["logits"], a["logits"])
    assert a["probs"].shape == (5, 3)
    np.testing.assert_allclose(a["probs"].sum(axis=1), 1.0, rtol=1e-5)
    only = mlp.run(x, output_names=["probs"])
    assert list(only) == ["probs"]
    assert list(mlp.run(x, "logits")) == ["logits"]


def test_introspection_and_repr(mlp):
    assert mlp.backend == "reference" and mlp.device == "cpu"
    assert [i.name for i in mlp.inputs] == ["x"]
    info = mlp.inputs[0]
    assert info.shape == ("N", 8) and info.dtype == np.float32 and info.is_dynamic
    assert [o.name for o in mlp.outputs] == ["logits", "probs"]
    text = repr(mlp)
    for part in ("reference", "cpu", "x: float32[N,8]", "probs: float32[N,3]"):
        assert part in text
    assert mlp.model.format is unirt.ModelFormat.ONNX and mlp.options.precision == "fp32"
    assert mlp.precision == "fp32" and "precision='fp32'" in text


@pytest.mark.parametrize("wrap", [DLPackOnly, ArrayProtocol, list], ids=["dlpack", "__array__", "list"])
def test_array_likes(mlp, wrap):
    x = np.arange(16, dtype=np.float32).reshape(2, 8) / 10
    value = x.tolist() if wrap is list else wrap(x)
    np.testing.assert_array_equal(mlp.run(value)["logits"], mlp.run(x)["logits"])


def test_dlpack_input_is_not_copied(mlp):
    x = np.ones((3, 8), np.float32)
    checked = mlp._check(DLPackOnly(x))
    assert np.shares_memory(checked["x"], x)
    same = mlp._check({"x": x})
    assert same["x"] is x  # contiguous numpy input passes through untouched


def test_torch_tensor_input_without_copy(mlp):
    torch = pytest.importorskip("torch")
    t = torch.arange(24, dtype=torch.float32).reshape(3, 8)
    checked = mlp._check(t)["x"]
    assert checked.__array_interface__["data"][0] == t.data_ptr()
    np.testing.assert_array_equal(mlp.run(t)["logits"], mlp.run(t.numpy())["logits"])
    with pytest.raises(InputError, match=r"input 'x'.*detach"):
        mlp.run(t.clone().requires_grad_(True))  # torch refuses to export it; say so instead of copying


def test_non_contiguous_and_byte_swapped_inputs(mlp):
    base = np.random.default_rng(1).standard_normal((8, 10)).astype(np.float32)
    strided = base[:, ::-1][:, :8].T.T  # a reversed-stride view
    assert not strided.flags.c_contiguous
    expected = mlp.run(np.ascontiguousarray(strided))["logits"]
    np.testing.assert_array_equal(mlp.run(strided)["logits"], expected)
    fortran = np.asfortranarray(base[:, :8])
    np.testing.assert_array_equal(mlp.run(fortran)["logits"], mlp.run(base[:, :8].copy())["logits"])
    swapped = base[:, :8].astype(">f4")
    np.testing.assert_array_equal(mlp.run(swapped)["logits"], mlp.run(base[:, :8].copy())["logits"])


def test_gpu_tensor_is_refused_clearly(mlp):
    with pytest.raises(InputError, match="cuda:0.*host memory"):
        mlp.run(OnGpu(np.ones((1, 8), np.float32)))


def test_input_errors_name_the_input(test_plugins, model):
    sess = unirt.Session(model("multi_io"), backend="reference")
    good = {
        "a": np.ones((2, 4), np.float32),
        "b": np.ones((2, 4), np.float32),
        "idx": np.array([0, 1]),
        "scale": np.float32(2),
    }
    out = sess.run(good)
    assert out["count"] == 2 and out["sum"][0, 0] == 4 and out["mask"].dtype == np.bool_
    cases = [
        ({k: v for k, v in good.items() if k != "b"}, r"missing input 'b'.*inputs are: a, b, idx, scale"),
        ({**good, "c": good["a"]}, r"unexpected input 'c'"),
        ({**good, "a": good["a"].astype(np.float64)}, r"input 'a': expected float32, got float64"),
        ({**good, "idx": np.array([0.0, 1.0])}, r"input 'idx': expected int64, got float64"),
        ({**good, "a": np.ones((2, 4, 1), np.float32)}, r"input 'a': expected rank 2 .*got rank 3"),
        (
            {**good, "a": np.ones((2, 5), np.float32), "b": np.ones((2, 5), np.float32)},
            r"input 'a': expected shape \(N, 4\) \(dim 1 is static\), got \(2, 5\)",
        ),
        ({**good, "b": np.ones((3, 4), np.float32)}, r"dim 'N' must be the same size.*a dim 0 = 2.*b dim 0 = 3"),
        ({**good, "scale": np.ones(1, np.float32)}, r"input 'scale': expected rank 0"),
        ({**good, "idx": [1.5, 2.5]}, r"input 'idx': expected int64, got float64"),
    ]
    for feeds, pattern in cases:
        with pytest.raises(InputError, match=pattern):
            sess.run(feeds)
    with pytest.raises(InputError, match="has 4 inputs"):
        sess.run(good["a"])
    with pytest.raises(InputError, match=r"unknown output 'nope'.*outputs are: sum, picked, count, mask"):
        sess.run(good, output_names=["nope"])
    # Python scalars and lists take the model's dtype when no kind is lost; the caller's dict is left alone
    feeds = {**good, "scale": 2, "idx": [0, 1]}
    out = sess.run(feeds)
    assert out["sum"][0, 0] == 4 and feeds["scale"] == 2 and feeds["idx"] == [0, 1]
    with pytest.raises(InputError, match="do not fit"):
        unirt.Session(model("int_ops"), backend="reference").run({"a": [[2**40] * 3] * 2, "b": [[1] * 3] * 2})
    with pytest.raises(InputError, match="by position or by name"):
        sess(good["a"], b=good["b"])
    positional = sess(good["a"], good["b"], good["idx"], good["scale"])
    np.testing.assert_array_equal(positional["sum"], out["sum"])


def test_out_arrays_are_filled_in_place(mlp):
    x = np.ones((4, 8), np.float32)
    target = np.empty((4, 3), np.float32)
    result = mlp.run(x, out={"probs": target})
    assert result["probs"] is target
    np.testing.assert_array_equal(target, mlp.run(x)["probs"])
    with pytest.raises(InputError, match=r"out\['probs'\]: expected dtype float32"):
        mlp.run(x, out={"probs": np.empty((4, 3), np.float64)})
    with pytest.raises(InputError, match=r"out\['nope'\]"):
        mlp.run(x, out={"nope": target})
    with pytest.raises(InputError, match=r"out\['probs'\]: expected shape \[4, 3\] for these inputs, got \[5, 3\]"):
        mlp.run(x, out={"probs": np.empty((5, 3), np.float32)})  # N is read from x: refused before the run


@pytest.mark.parametrize("backend", ["reference", "onnxruntime"])
def test_a_model_without_inputs(test_plugins, tmp_path, backend):
    import onnx
    from onnx import TensorProto, helper

    value = np.arange(6, dtype=np.float32).reshape(2, 3)
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], value=onnx.numpy_helper.from_array(value))],
        "no_inputs",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    proto.ir_version = 9
    onnx.save(proto, str(tmp_path / "no_inputs.onnx"))
    sess = unirt.Session(tmp_path / "no_inputs.onnx", backend=backend)
    assert sess.inputs == []
    for result in (sess(), sess.run({}), sess.run([]), sess.run(()), sess.run(None)):
        np.testing.assert_array_equal(result["y"], value)
    assert [r["y"].shape for r in sess.run_many([{}, None])] == [(2, 3), (2, 3)]
    with pytest.raises(InputError, match="unexpected input 'x'"):
        sess.run({"x": value})
    with pytest.raises(InputError, match="has 0 inputs"):
        sess.run(value)


def test_empty_output_names_are_refused(mlp):
    x = np.ones((2, 8), np.float32)
    for names in ([], ()):
        with pytest.raises(InputError, match=r"output_names is empty; name at least one output.*logits, probs"):
            mlp.run(x, output_names=names)
    with pytest.raises(InputError, match="output_names is empty"):
        mlp.run_many([x], output_names=[])
    with pytest.raises(InputError, match="output_names must be an output name or a list of them, got int"):
        mlp.run(x, output_names=5)
    with pytest.raises(InputError, match=r"unknown output \[1\]"):
        mlp.run(x, output_names=[[1]])


def test_close_and_context_manager(test_plugins, model):
    with unirt.Session(model("dynamic_mlp"), backend="reference") as sess:
        runner = sess._runner
        assert not sess.closed
    assert sess.closed and runner.closed and "closed" in repr(sess)
    with pytest.raises(SessionClosedError):
        sess.run(np.ones((1, 8), np.float32))
    sess.close()  # idempotent


@pytest.mark.parametrize(
    "kwargs,pattern",
    [
        ({"threads": 0}, "threads must be a positive integer"),
        ({"threads": True}, "threads must be a positive integer"),
        ({"precision": "bf17"}, "precision must be one of fp32, fp16, bf16, int8"),
        ({"backend_options": [1]}, "backend_options must be a dict"),
        ({"device": "tpu"}, "device 'tpu' is not known"),
        ({"device": "cuda"}, "backend 'reference' cannot run on cuda here; it offers cpu"),
    ],
)
def test_option_errors(test_plugins, model, kwargs, pattern):
    with pytest.raises(UnsupportedOptionError, match=pattern):
        unirt.Session(model("dynamic_mlp"), backend="reference", **kwargs)


def test_backend_errors(test_plugins, model, tmp_path, known_fakeengine):
    with pytest.raises(unirt.BackendUnavailableError, match=r"pip install \./plugins/fakeengine \(unirt-fakeengine"):
        unirt.Session(model("dynamic_mlp"), backend="fakeengine")
    with pytest.raises(unirt.BackendUnavailableError, match="fancyengine"):
        unirt.Session(model("dynamic_mlp"), backend="broken")
    from formats_samples import write_ncnn

    with pytest.raises(unirt.ModelFormatError, match="does not read ncnn"):
        unirt.Session(write_ncnn(tmp_path), backend="reference")


def test_engine_failure_at_load_names_file_and_format(test_plugins, model, tmp_path):
    # Valid ONNX framing, but an op the reference evaluator does not know: the engine raises while loading.
    import onnx
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("NoSuchOp", ["x"], ["y"], domain="custom.unknown")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("custom.unknown", 1)])
    path = tmp_path / "custom.onnx"
    onnx.save(m, str(path))
    with pytest.raises(unirt.UnirtError) as err:
        unirt.Session(path, backend="reference").run(np.ones(1, np.float32))
    assert isinstance(err.value, (unirt.ModelLoadError, unirt.RunError))
