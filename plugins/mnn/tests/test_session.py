"""unirt.Session on the real MNN, with models converted from ONNX by MNN's own converter (through unirt.convert)."""

from __future__ import annotations

import shutil

import numpy as np
import onnxruntime as ort
import pytest

import unirt
from unirt import InputError, ModelLoadError, RunError, UnsupportedOptionError
from unirt.testing.threads import run_concurrently


def ort_run(path, feeds):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, feeds)


def rel_l2(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(np.asarray(b, np.float64)))


def test_converted_squeezenet_matches_the_conformance_outputs(converted, squeezenet):
    sess = unirt.Session(converted("squeezenet"), backend="mnn", device="cpu")
    assert [(i.name, i.shape, i.dtype) for i in sess.inputs] == [("data_0", (1, 3, 224, 224), np.float32)]
    got = sess.run(squeezenet.inputs[0])["softmaxout_1"]
    np.testing.assert_allclose(got, squeezenet.outputs[0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_dynamic_batch_resizes(converted, model, batch):
    sess = unirt.Session(converted("dynamic_mlp"), backend="mnn")
    assert sess.inputs[0].shape == ("N", 8)
    x = np.random.default_rng(batch).standard_normal((batch, 8)).astype(np.float32)
    got = sess.run(x)
    logits, probs = ort_run(model("dynamic_mlp"), {"x": x})
    np.testing.assert_allclose(got["logits"], logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["probs"], probs, rtol=1e-5, atol=1e-6)


def test_a_wrong_batch_is_split_not_resized(converted):
    """MNN silently resizes a static-batch model to whatever batch it is given (and may truncate); unirt knows
    the batch is static: 3 images run as 3 batches of 1, or are refused with batched=False."""
    sess = unirt.Session(converted("squeezenet"), backend="mnn")
    assert sess.batch.kind == "static" and sess.batch.size == 1
    x = np.random.default_rng(5).standard_normal((3, 3, 224, 224)).astype(np.float32)
    got = sess.run(x)
    for i in range(3):
        for name, value in sess.run(x[i : i + 1]).items():
            np.testing.assert_allclose(got[name][i : i + 1], value, rtol=1e-5, atol=1e-6)
    assert sess.batch_stats().backend_runs == 3
    strict = unirt.Session(converted("squeezenet"), backend="mnn", batched=False)
    with pytest.raises(InputError, match=r"dim 0 is static"):
        strict.run(x)


def test_a_plain_mnn_file_reads_its_dims_from_the_file(converted, model, tmp_path):
    shutil.copy(converted("dynamic_mlp").path, tmp_path / "mlp.mnn")  # no sidecar: what the .mnn says
    sess = unirt.Session(tmp_path / "mlp.mnn", backend="mnn")
    assert [(i.name, i.shape) for i in sess.inputs] == [("x", (1, 8))]  # MNN's converter stores the batch as 1
    assert [(o.name, o.shape) for o in sess.outputs] == [("logits", (1, 3)), ("probs", (1, 3))]
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    # a static batch of 1: three rows run one at a time
    np.testing.assert_allclose(sess.run(x)["probs"], ort_run(model("dynamic_mlp"), {"x": x})[1], rtol=1e-5, atol=1e-6)
    with pytest.raises(InputError, match="dim 0 is static"):
        unirt.Session(tmp_path / "mlp.mnn", backend="mnn", batched=False).run(x)
    free = unirt.Session(tmp_path / "mlp.mnn", backend="mnn", backend_options={"input_shapes": {"x": ["N", 8]}})
    np.testing.assert_allclose(free.run(x)["probs"], ort_run(model("dynamic_mlp"), {"x": x})[1], rtol=1e-5, atol=1e-6)


def test_float64_and_raw_arrays_never_reach_mnn(converted):
    """Module.forward(ndarray) segfaults and float64 is read as float32 garbage: unirt checks, then wraps."""
    sess = unirt.Session(converted("dynamic_mlp"), backend="mnn")
    x = np.random.default_rng(1).standard_normal((2, 8))
    with pytest.raises(InputError, match="expected float32, got float64"):
        sess.run(x)
    view = np.random.default_rng(2).standard_normal((4, 16)).astype(np.float32)[::2, ::2]
    np.testing.assert_array_equal(sess.run(view)["logits"], sess.run(np.ascontiguousarray(view))["logits"])


def test_outputs_survive_the_next_forward(converted):
    """Var.read() maps memory that the next forward overwrites; unirt copies it out."""
    sess = unirt.Session(converted("dynamic_mlp"), backend="mnn")
    first = sess.run(np.ones((2, 8), np.float32))
    kept = {k: v.copy() for k, v in first.items()}
    sess.run(np.full((2, 8), 5, np.float32))
    for k in kept:
        np.testing.assert_array_equal(first[k], kept[k])


def test_integer_inputs_keep_the_source_dtype(converted, model):
    """The byte transformer takes int64 tokens; MNN stores them as int32. unirt takes int64 like the ONNX model."""
    sess = unirt.Session(converted("byte_transformer"), backend="mnn")
    assert sess.inputs[0].dtype == np.int64 and sess.inputs[0].shape == ("N", 16)
    tokens = np.random.default_rng(3).integers(0, 256, size=(3, 16))
    got = sess.run(tokens)["logits"]
    (ref,) = ort_run(model("byte_transformer"), {"tokens": tokens})
    assert rel_l2(got, ref) < 1e-5


@pytest.mark.slow
def test_precision_modes(converted):
    """A reduced mode runs where the probe finds MNN computing it (its answers differ from fp32); where MNN would
    compute fp32 under its name, bf16 is refused and fp16 is storage only, refused unless opted into."""
    from unirt_mnn.precision import _probe
    from unirt_mnn.session import mnn_version

    path = converted("squeezenet").path
    x = np.random.default_rng(4).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ref = unirt.Session(path, backend="mnn").run(x)["softmaxout_1"]
    probe = _probe(mnn_version())
    for precision, tol in (("fp16", 1e-2), ("bf16", 5e-2)):
        if probe[precision] > 0:
            sess = unirt.Session(path, backend="mnn", precision=precision)
            assert sess.precision == precision and "differ from fp32" in sess.precision_info
            assert 0 < rel_l2(sess.run(x)["softmaxout_1"], ref) < tol
            continue
        with pytest.raises(
            UnsupportedOptionError, match="bit-identical to fp32 on a probe model.*measured: [0-9.-]+x the fp32 time"
        ):
            unirt.Session(path, backend="mnn", precision=precision)
    if probe["bf16"] == 0:  # storage-only does not apply to bf16: it is refused even with the opt-in
        with pytest.raises(UnsupportedOptionError, match="would compute fp32 here"):
            unirt.Session(path, backend="mnn", precision="bf16", backend_options={"allow_storage_only_precision": True})
    if probe["fp16"] == 0:
        # fp16 weights (unirt's conversion at fp16) computed in fp32: "storage only", different answers
        # (squeezenet's weights from the onnx wheel survive fp16 rounding bit for bit: matmul_relu's do not)
        mm = np.random.default_rng(5).standard_normal((64, 64)).astype(np.float32)
        exact = unirt.Session(converted("matmul_relu").path, backend="mnn").run(mm)["y"]
        half = converted("matmul_relu", precision="fp16").path
        sess = unirt.Session(
            half, backend="mnn", precision="fp16", backend_options={"allow_storage_only_precision": True}
        )
        assert sess.precision == "fp16"
        assert sess.precision_info.startswith("fp16 storage only (weights converted with mnnconvert --fp16")
        assert 0 < rel_l2(sess.run(mm)["y"], exact) < 1e-2
        # fp32 weights computed in fp32 are fp32, whatever was asked: Session.precision says so
        plain = unirt.Session(
            path, backend="mnn", precision="fp16", backend_options={"allow_storage_only_precision": True}
        )
        assert plain.precision == "fp32" and "converted with fp32 weights" in plain.precision_info
        assert np.array_equal(plain.run(x)["softmaxout_1"], ref)
    with pytest.raises(UnsupportedOptionError, match="allow_storage_only_precision must be True or False"):
        unirt.Session(path, backend="mnn", precision="fp16", backend_options={"allow_storage_only_precision": "yes"})
    with pytest.raises(UnsupportedOptionError, match="int8"):
        unirt.Session(path, backend="mnn", precision="int8")


def test_the_precision_probe_is_cached_per_version_and_compares_real_runs(monkeypatch):
    import json

    from unirt_mnn import precision as mnn_precision

    calls = []
    real = mnn_precision.probe_reduced_modes

    def counted():
        calls.append(1)
        return real()

    monkeypatch.setattr(mnn_precision, "probe_reduced_modes", counted)
    first = mnn_precision._probe("test-version-a")
    assert mnn_precision._probe("test-version-a") == first and len(calls) == 1
    mnn_precision._probe("test-version-b")  # another MNN version probes again
    assert len(calls) == 2
    files = list(unirt.cache_dir("precision-probes").glob("mnn-test-version-a-*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text()) == first
    assert set(first) == {"fp16", "bf16"} and all(v >= 0 for v in first.values())
    files[0].write_text("not json")  # a damaged cache file is measured again
    assert mnn_precision._probe("test-version-a") == first and len(calls) == 3


@pytest.mark.slow
def test_options(converted):
    path = converted("dynamic_mlp").path
    sess = unirt.Session(path, backend="mnn", threads=2, backend_options={"memory_mode": "low"})
    assert sess.run(np.ones((1, 8), np.float32))["probs"].shape == (1, 3)
    with pytest.raises(UnsupportedOptionError, match="unknown backend option"):
        unirt.Session(path, backend="mnn", backend_options={"nope": 1})
    with pytest.raises(UnsupportedOptionError, match="backend_type must be one of"):
        unirt.Session(path, backend="mnn", backend_options={"backend_type": "tpu"})
    sess = unirt.Session(path, backend="mnn", backend_options={"memory_mode": "High", "power_mode": "normal"})
    assert sess.run(np.ones((1, 8), np.float32))["probs"].shape == (1, 3)
    # A typo was a ModelLoadError blaming the model (MNN's enum has no such member): it is an option error.
    for key in ("memory_mode", "power_mode"):
        with pytest.raises(UnsupportedOptionError, match=f"{key} must be one of low, normal, high, got 'fast'"):
            unirt.Session(path, backend="mnn", backend_options={key: "fast"})
    with pytest.raises(UnsupportedOptionError, match="cannot run on cuda"):
        unirt.Session(path, backend="mnn", device="cuda")


@pytest.mark.parametrize("kind", ["opencl", "vulkan", "cuda", "metal"])
def test_a_gpu_backend_type_mnn_lacks_is_refused(converted, kind):
    """MNN runs on its CPU backend when the one asked for is missing (it prints "Can't Find type=3 backend, use 0
    instead"); unirt reported device='gpu:0'. Where MNN has it, it is used and reported."""
    path = converted("dynamic_mlp").path
    try:
        sess = unirt.Session(path, backend="mnn", backend_options={"backend_type": kind})
    except UnsupportedOptionError as exc:
        assert f"backend_type={kind!r} is not available in this MNN build" in str(exc) and "Can't Find" in str(exc)
    else:
        assert sess.device == "gpu:0"
        assert sess.run(np.ones((1, 8), np.float32))["probs"].shape == (1, 3)


def test_damaged_files_are_refused(converted, tmp_path):
    data = converted("dynamic_mlp").path.read_bytes()
    (tmp_path / "cut.mnn").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError):
        unirt.Session(tmp_path / "cut.mnn", backend="mnn")


def test_concurrent_runs(converted):
    sess = unirt.Session(converted("dynamic_mlp"), backend="mnn")
    rng = np.random.default_rng(5)
    xs = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    expected = [sess.run(x)["probs"] for x in xs]

    def worker(i):
        for _ in range(30):
            np.testing.assert_array_equal(sess.run(xs[i])["probs"], expected[i])

    run_concurrently(worker, 4)


def test_dynamic_nchw_shapes_resize(converted):
    sess = unirt.Session(converted("unknown_dims"), backend="mnn")
    assert sess.inputs[0].shape == (None, 3, "H", "W")
    for shape in [(1, 3, 1, 1), (3, 3, 5, 7), (2, 3, 8, 2)]:
        x = np.random.default_rng(sum(shape)).standard_normal(shape).astype(np.float32)
        np.testing.assert_array_equal(sess.run(x)["y"], x * 2)


def test_a_relative_path_loads_on_first_sight(converted, model, tmp_path, monkeypatch):
    """The first load of a file runs in a throwaway process in the canary folder: a relative path (and a relative
    UNIRT_CACHE_DIR) must still name the caller's file there."""
    shutil.copy(converted("dynamic_mlp").path, tmp_path / "fresh.mnn")  # no sidecar, never loaded with this cache
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("UNIRT_CACHE_DIR", "relcache")
    sess = unirt.Session("fresh.mnn", backend="mnn")
    assert len(list((tmp_path / "relcache" / "canary").iterdir())) == 1  # the child loaded it, and it is remembered
    x = np.random.default_rng(6).standard_normal((1, 8)).astype(np.float32)
    np.testing.assert_allclose(sess.run(x)["probs"], ort_run(model("dynamic_mlp"), {"x": x})[1], rtol=1e-5, atol=1e-6)


def test_a_failed_forward_says_why_and_threads_default_to_every_cpu(tmp_path):
    """MNN prints why a forward failed ("Broad cast error") and returns no outputs: the RunError says it."""
    import os

    from onnx import TensorProto, helper, numpy_helper, save

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((4, 4)).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["a", "W"], ["am"]),
        helper.make_node("MatMul", ["b", "W"], ["bm"]),
        helper.make_node("Add", ["am", "bm"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "two",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["M", 4]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [w],
    )
    path = tmp_path / "two.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    sess = unirt.Session(path, backend="mnn")
    a, b = np.ones((2, 4), np.float32), np.ones((3, 4), np.float32)
    with pytest.raises(RunError, match=r"returned 0 outputs, expected 1 \(MNN: Broad cast error"):
        sess.run({"a": a, "b": b})
    np.testing.assert_allclose(
        sess.run({"a": a, "b": b[:1]})["y"], ort_run(path, {"a": a, "b": b[:1]})[0], rtol=1e-5
    )  # ONNX broadcasting of a batch of 1: MNN does it too
    assert sess._runner.threads == len(os.sched_getaffinity(0))
    assert unirt.Session(path, backend="mnn", threads=1)._runner.threads == 1


def test_int64_values_outside_int32_are_refused_not_wrapped(tmp_path):
    """MNN stores int64 inputs as int32: 2**33 + 1 came back as 1, silently. Such values are refused (InputError),
    values in range still run exactly."""
    from onnx import TensorProto, helper, save

    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["y"])],
        "add64",
        [
            helper.make_tensor_value_info("a", TensorProto.INT64, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.INT64, ["N", 3]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.INT64, ["N", 3])],
    )
    path = tmp_path / "add64.onnx"
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    sess = unirt.Session(path, backend="mnn")
    assert [i.dtype for i in sess.inputs] == [np.int64, np.int64]
    a = np.array([[1, -2, 2**31 - 2]], np.int64)
    b = np.ones((1, 3), np.int64)
    np.testing.assert_array_equal(sess.run({"a": a, "b": b})["y"], a + b)
    for big in (2**33 + 1, -(2**40)):
        with pytest.raises(InputError, match=r"input 'a': MNN stores this int64 input as int32.*would wrap"):
            sess.run({"a": np.array([[1, 2, big]], np.int64), "b": b})
    with pytest.raises(InputError, match="would wrap"):
        sess.run_many([{"a": a, "b": b}, {"a": np.full((1, 3), 2**32, np.int64), "b": b}])


def test_float64_models_are_refused_unless_float32_is_accepted(tmp_path):
    """MNN computes doubles in float32: 1e10 + 1 - 1e10 came back 0 where onnxruntime gives 1."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper

    g = helper.make_graph(
        [helper.make_node("Add", ["x", "y"], ["s"]), helper.make_node("Sub", ["s", "x"], ["z"])],
        "f64",
        [helper.make_tensor_value_info("x", T.DOUBLE, [3]), helper.make_tensor_value_info("y", T.DOUBLE, [3])],
        [helper.make_tensor_value_info("z", T.DOUBLE, [3])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 9
    path = tmp_path / "f64.onnx"
    onnx.save(m, str(path))
    with pytest.raises(
        unirt.UnsupportedOptionError,
        match=r"MNN computes float64 in float32.*\(x, y, z\).*"
        "allow_float64_as_float32",
    ):
        unirt.Session(path, backend="mnn")
    sess = unirt.Session(path, backend="mnn", backend_options={"allow_float64_as_float32": True})
    x, y = np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.25, 1.0])
    np.testing.assert_allclose(sess.run({"x": x, "y": y})["z"], y, rtol=1e-6)
    with pytest.raises(unirt.UnsupportedOptionError, match="must be True or False"):
        unirt.Session(path, backend="mnn", backend_options={"allow_float64_as_float32": "yes"})
