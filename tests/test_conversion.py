"""The conversion layer's parts that need no converter: fixups (checked against onnxruntime), verification
arithmetic, the cache, sidecars, the throwaway-process first load, and the errors of `unirt.convert`.
Conversions with real converters are tested in plugins/ncnn and plugins/mnn."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import unirt
from unirt import ConversionError, LoadOptions, ModelLoadError, TensorInfo, open_model, testing
from unirt.canary import check_loads
from unirt.conversion import fixups, store, verify
from unirt.conversion.signature import concrete_shape, read_sidecar, sidecar_path, write_sidecar
from unirt.conversion.verify import compare, feed_sets


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))


def ort_run(model, feeds):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else open(model, "rb").read()
    sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def light(name):
    return next(c for c in testing.conformance_cases(("light",)) if c.name == name)


@pytest.mark.parametrize("name", ["light_squeezenet", "light_bvlc_alexnet", "light_zfnet512"])
def test_fixups_keep_the_meaning_of_real_ir3_models(name):
    case = light(name)
    proto = onnx.load(str(case.model))
    notes = fixups.apply_fixups(proto)
    assert any("initializers listed as graph inputs" in n for n in notes)
    assert any("Softmax" in n for n in notes)  # opset 9, no axis: coerced at axis 1
    inits = {i.name for i in proto.graph.initializer}
    assert not [i.name for i in proto.graph.input if i.name in inits]
    onnx.checker.check_model(proto)
    feeds = {proto.graph.input[0].name: case.inputs[0]}
    np.testing.assert_allclose(ort_run(proto, feeds)[0], case.outputs[0], rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("axis, rewritten", [(None, True), (1, True), (2, True), (3, False), (-1, False)])
def test_softmax_fixup_rewrites_only_when_the_axis_is_not_the_last(tmp_path, axis, rewritten):
    path = testing.softmax_coerced(tmp_path / "s.onnx", axis=axis)
    proto = onnx.load(str(path))
    notes = fixups.coerced_softmax_axis(proto)
    types = [n.op_type for n in proto.graph.node]
    assert ("Flatten" in types) is rewritten
    if axis is None and not rewritten:
        assert notes
    x = np.random.default_rng(0).standard_normal((1, 3, 4, 5)).astype(np.float32)
    np.testing.assert_allclose(ort_run(proto, {"x": x})[0], ort_run(path, {"x": x})[0], rtol=1e-6, atol=1e-7)
    # What converters do without the fixup: softmax over the last axis only, which differs from ONNX's.
    if rewritten:
        c = ort_run(onnx.load(str(path)), {"x": x})[0]
        last_axis = np.exp(c - c.max(-1, keepdims=True))
        last_axis /= last_axis.sum(-1, keepdims=True)
        assert not np.allclose(last_axis, c, atol=1e-3)


def test_softmax_fixup_leaves_opset_13_alone(tmp_path):
    proto = onnx.load(str(testing.softmax_coerced(tmp_path / "s.onnx")))
    proto.opset_import[0].version = 13
    assert fixups.coerced_softmax_axis(proto) == []


def test_batchnorm_fixup_writes_the_default_epsilon(tmp_path):
    path = testing.batchnorm_default_epsilon(tmp_path / "bn.onnx")
    proto = onnx.load(str(path))
    assert fixups.batchnorm_epsilon(proto) and fixups.batchnorm_epsilon(proto) == []  # idempotent
    eps = [a.f for a in proto.graph.node[0].attribute if a.name == "epsilon"]
    assert eps == [pytest.approx(1e-5)]
    x = np.random.default_rng(1).standard_normal((2, 8, 4, 4)).astype(np.float32)
    np.testing.assert_array_equal(ort_run(proto, {"x": x})[0], ort_run(path, {"x": x})[0])


def test_compare_measures_relative_l2_and_exact_ints():
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 5)).astype(np.float32)
    got = ref + np.float32(1e-3) * rng.standard_normal((4, 5)).astype(np.float32)
    (err,) = compare([{"y": got}], [{"y": ref}])
    expected = np.linalg.norm(got.astype(np.float64) - ref) / np.linalg.norm(ref.astype(np.float64))
    assert err.rel_l2 == pytest.approx(expected) and err.max_abs == pytest.approx(np.abs(got - ref).max())
    ints = np.arange(10)
    flipped = ints.copy()
    flipped[3] = 99
    (e_int,) = compare([{"i": flipped}], [{"i": ints}])
    assert e_int.rel_l2 == pytest.approx(0.1) and "differ" in e_int.note
    (e_shape,) = compare([{"y": ref[:2]}], [{"y": ref}])
    assert e_shape.rel_l2 == float("inf") and "shape" in e_shape.note
    (e_missing,) = compare([{}], [{"y": ref}])
    assert "missing" in e_missing.note
    nan = np.array([np.nan, 1.0], np.float32)
    assert compare([{"y": nan}], [{"y": nan}])[0].rel_l2 == 0.0
    # the worst of several input sets is kept
    worse = compare([{"y": ref}, {"y": got}], [{"y": ref}, {"y": ref}])
    assert worse[0].rel_l2 == pytest.approx(expected)


def test_integer_outputs_must_match_exactly(tmp_path):
    """4 wrong labels in 5000 is a fraction of 8e-4, under the fp32 tolerance of 1e-3: it used to pass."""
    from unirt.conversion import Conversion

    labels = np.random.default_rng(0).integers(0, 10, 5000)
    wrong = labels.copy()
    wrong[:4] += 1
    scores = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    near = scores + np.float32(1e-5)

    def conv(got):
        errors = compare([got], [{"labels": labels, "scores": scores}])
        return Conversion(
            source="m.onnx",
            backend="mnn",
            path=tmp_path / "m.mnn",
            files=(),
            cached=False,
            seconds=0.0,
            converter="",
            errors=tuple(errors),
            tolerance=1e-3,
            verified=True,
            reference="onnxruntime",
        )

    assert conv({"labels": labels, "scores": near}).within_tolerance  # floats: within the tolerance
    off = conv({"labels": wrong, "scores": scores})
    assert off.max_error == pytest.approx(8e-4) and not off.within_tolerance
    assert "must match exactly" in off.describe_errors() and "EXCEEDS" in str(off)
    kept = type(off.errors[0]).from_dict(off.errors[0].as_dict())  # the cache record keeps the flag
    assert kept == off.errors[0] and kept.exact


def test_random_indices_cover_the_embedding_table():
    """Integer inputs used as Gather indices into a table are drawn over its rows (they were all 0 or 1: two
    embedding rows checked); other integer inputs keep the safe 0/1."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    emb = numpy_helper.from_array(rng.standard_normal((50, 4)).astype(np.float32), "emb")
    cols = numpy_helper.from_array(rng.standard_normal((3, 20)).astype(np.float32), "cols")
    nodes = [
        helper.make_node("Gather", ["emb", "ids"], ["e"]),
        helper.make_node("Gather", ["cols", "pick"], ["c"], axis=-1),
        helper.make_node("Gather", ["e", "other"], ["o"], axis=1),
    ]  # indexes no initializer: no bound
    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["N", 6]) for n in ("ids", "pick", "other")]
    g = helper.make_graph(
        nodes,
        "emb",
        ints,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("e", "c", "o")],
        [emb, cols],
    )
    proto = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    bounds = verify.index_bounds(proto)
    assert bounds == {"ids": 50, "pick": 20}
    infos = [TensorInfo(n, ("N", 6), np.int64) for n in ("ids", "pick", "other")]
    sets = feed_sets(infos, None, bounds=bounds)
    ids = np.concatenate([s["ids"].ravel() for s in sets])
    assert ids.min() >= 0 and ids.max() < 50 and len(np.unique(ids)) > 5
    assert np.concatenate([s["pick"].ravel() for s in sets]).max() < 20
    assert set(np.concatenate([s["other"].ravel() for s in sets])) <= {0, 1}
    ort_run(proto, sets[0])  # valid indices for the real model


def test_feed_sets_add_a_batch_of_two_for_dynamic_batches():
    dyn = [TensorInfo("x", ("N", 8), np.float32), TensorInfo("t", ("N", 3), np.int64)]
    sets = feed_sets(dyn, None)
    assert [s["x"].shape for s in sets] == [(1, 8), (1, 8), (2, 8)]
    assert sets[2]["t"].dtype == np.int64 and sets[0]["x"].dtype == np.float32
    assert len(feed_sets([TensorInfo("x", (1, 8), np.float32)], None)) == 2
    assert [s["x"].shape for s in feed_sets(dyn[:1], {"x": (4, 8)})] == [(4, 8), (4, 8)]
    with pytest.raises(ConversionError, match=r"input_shapes\['x'\] = \[4, 9\] does not fit"):
        concrete_shape(dyn[0], {"x": (4, 9)})


def test_dynamic_image_dims_default_to_an_image_size():
    """1x1 is no image (a 3x3 convolution refuses it): dynamic spatial dims of a float [N, C, ...] input with
    static channels get SPATIAL_DEFAULT; other dynamic dims (a batch, a sequence, an int input's) stay 1."""
    f32 = np.float32
    assert concrete_shape(TensorInfo("x", ("N", 3, "H", "W"), f32), None) == (1, 3, 224, 224)
    assert concrete_shape(TensorInfo("x", ("N", 3, "H", 64), f32), None) == (1, 3, 224, 64)
    assert concrete_shape(TensorInfo("x", ("N", 2, "L"), f32), None) == (1, 2, 224)
    assert concrete_shape(TensorInfo("x", ("N", 1, "D", "H", "W"), f32), None) == (1, 1, 32, 32, 32)
    assert concrete_shape(TensorInfo("x", ("N", "T", 768), f32), None) == (1, 1, 768)
    assert concrete_shape(TensorInfo("t", ("N", 4, "T"), np.int64), None) == (1, 4, 1)
    assert concrete_shape(TensorInfo("x", ("N",), f32), None) == (1,)
    assert concrete_shape(TensorInfo("x", ("N", 3, "H", "W"), f32), {"x": [2, 3, 8, 9]}) == (2, 3, 8, 9)


def test_sidecar_round_trip_and_damage(tmp_path):
    main = tmp_path / "model.param"
    main.write_text("x")
    infos = [TensorInfo("images", ("N", 3, 224, 224), np.float32)]
    write_sidecar(main, infos, [TensorInfo("logits", ("N", 10), np.float32)], shapes={"images": [1, 3, 224, 224]})
    side = read_sidecar(main)
    assert side["inputs"] == infos and side["shapes"] == {"images": [1, 3, 224, 224]}
    assert sidecar_path(main).name == "model.unirt.json"
    sidecar_path(main).write_text("{not json")
    assert read_sidecar(main) is None
    assert read_sidecar(tmp_path / "other.param") is None


def test_cache_keys_and_entries(tmp_path, model):
    a = open_model(model("dynamic_mlp"))
    b = open_model(model("matmul_relu"))
    assert store.content_hash(a) != store.content_hash(b)
    assert store.content_hash(a) == store.content_hash(open_model(a.read_bytes()))
    k1 = store.cache_key(store.content_hash(a), {"backend": "mnn", "precision": "fp32"})
    assert k1 != store.cache_key(store.content_hash(a), {"backend": "mnn", "precision": "fp16"})
    assert k1 == store.cache_key(store.content_hash(a), {"precision": "fp32", "backend": "mnn"})
    work = store.new_work_dir(k1)
    (work / "out").mkdir()
    (work / "out" / "model.mnn").write_bytes(b"converted")
    assert store.read_record(k1) is None
    final = store.publish(k1, work, {"main": "out/model.mnn", "files": ["out/model.mnn"]})
    assert final.parent == tmp_path / "cache" / "conversions" and not work.exists()
    assert store.read_record(k1)["main"] == "out/model.mnn"
    # a second process finishing the same conversion later leaves the entry alone (and its own work dir goes)
    late = store.new_work_dir(k1)
    (late / "out").mkdir()
    (late / "out" / "model.mnn").write_bytes(b"converted")
    assert store.publish(k1, late, {"main": "out/model.mnn", "files": ["out/model.mnn"], "note": "late"}) == final
    assert "note" not in store.read_record(k1) and not late.exists()
    assert store.read_record(k1)["checks"] == {
        "out/model.mnn": {"size": 9, "sha256": store._sha256(final / "out" / "model.mnn")}
    }
    # a damaged entry is a miss (converted again), not a model that fails to load until someone clears the cache
    (final / "out" / "model.mnn").write_bytes(b"convert")  # truncated
    assert store.read_record(k1) is None
    (final / "out" / "model.mnn").write_bytes(b"converteD")  # same size, other bytes
    assert store.read_record(k1) is None
    (final / "out" / "model.mnn").write_bytes(b"converted")
    assert store.read_record(k1) is not None
    (final / "out" / "model.mnn").unlink()  # a half-gone entry is a miss, not a broken model
    assert store.read_record(k1) is None


def test_convert_refuses_what_it_cannot_do(model):
    path = model("dynamic_mlp")
    with pytest.raises(ConversionError, match="reads onnx models as they are; there is nothing to convert"):
        unirt.convert(path, to="onnxruntime")
    with pytest.raises(unirt.BackendUnavailableError, match="backend 'nosuch' is not installed"):
        unirt.convert(path, to="nosuch")
    with pytest.raises(unirt.UnsupportedOptionError, match="precision must be one of"):
        unirt.convert(path, to="onnxruntime", precision="fp64")


def test_cli_convert_reports_errors(model, capsys):
    from unirt.cli import main

    assert main(["convert", str(model("dynamic_mlp")), "--to", "onnxruntime"]) == 2  # bad input: exit 2
    assert "nothing to convert" in capsys.readouterr().err


def test_first_load_in_a_throwaway_process(tmp_path, model, monkeypatch):
    good = open_model(model("dynamic_mlp"))
    opts = LoadOptions()
    check_loads(good, "onnxruntime", ort.__version__, opts)
    markers = list((tmp_path / "cache" / "canary").iterdir())
    assert len(markers) == 1  # remembered: the next load starts no process
    check_loads(good, "onnxruntime", ort.__version__, opts)
    assert list((tmp_path / "cache" / "canary").iterdir()) == markers
    # A model the engine refuses is refused with the engine's reason, and not remembered.
    proto = onnx.load(str(model("dynamic_mlp")))
    proto.graph.node[0].op_type = "NoSuchOp"
    bad = tmp_path / "bad.onnx"
    onnx.save(proto, str(bad))
    with pytest.raises(ModelLoadError, match="NoSuchOp"):
        check_loads(open_model(bad), "onnxruntime", ort.__version__, opts)
    assert len(list((tmp_path / "cache" / "canary").iterdir())) == 1
    monkeypatch.setenv("UNIRT_CANARY", "0")
    check_loads(open_model(bad), "onnxruntime", ort.__version__, opts)  # turned off: nothing runs


def test_sidecar_json_is_plain(tmp_path):
    main = tmp_path / "m.mnn"
    main.write_bytes(b"")
    path = write_sidecar(main, [TensorInfo("x", (None, 2), np.int64)], [])
    assert json.loads(path.read_text())["inputs"] == [{"name": "x", "shape": [None, 2], "dtype": "int64"}]


@pytest.mark.parametrize(
    "name", ["test_Conv1d", "test_Conv1d_dilated", "test_Conv1d_groups", "test_Conv1d_pad2", "test_Conv1d_stride"]
)
def test_conv1d_fixup_keeps_the_meaning(name):
    """MNN leaves a trailing dim of 1 on a 1-D convolution's output; the rewrite as a 2-D one answers the same."""
    case = next(c for c in testing.conformance_cases(("pytorch-converted",)) if c.name.endswith("/" + name))
    proto = onnx.load(str(case.model))
    notes = fixups.conv1d_as_conv2d(proto)
    assert notes and "1-D Conv" in notes[0] and fixups.conv1d_as_conv2d(proto) == []  # idempotent
    assert "Squeeze" in [n.op_type for n in proto.graph.node]
    onnx.checker.check_model(proto)
    feeds = {i.name: x for i, x in zip(proto.graph.input, case.inputs)}
    np.testing.assert_allclose(ort_run(proto, feeds)[0], case.outputs[0], rtol=1e-5, atol=1e-6)


def test_conv1d_fixup_at_opset_13_and_leaves_2d_alone(tmp_path):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((5, 4, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((2, 5, 1, 1)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], strides=[2], pads=[1, 1]),  # no kernel_shape: from w1
        helper.make_node("Unsqueeze", ["h", "ax"], ["h4"]),
        helper.make_node("Conv", ["h4", "w2"], ["y"], kernel_shape=[1, 1]),
    ]
    ax = numpy_helper.from_array(np.array([3], np.int64), "ax")
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 10])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 5, 1])],
        [w1, w2, ax],
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    original = proto.SerializeToString()
    notes = fixups.conv1d_as_conv2d(proto)
    assert len(notes) == 1 and notes[0].startswith("rewrote 1 1-D Conv nodes")
    kernels = [
        list(a.ints) for n in proto.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "kernel_shape"
    ]
    assert kernels == [[1, 1]]  # the 2-D one as it was; the rewritten one takes its kernel from the weight
    onnx.checker.check_model(proto)
    x = rng.standard_normal((3, 4, 10)).astype(np.float32)
    np.testing.assert_allclose(
        ort_run(proto, {"x": x})[0], ort_run(onnx.load_from_string(original), {"x": x})[0], rtol=1e-5, atol=1e-6
    )


def test_ir_version_fixup_lowers_only_what_converters_cannot_read(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    def model(elem_type):
        g = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "g",
            [helper.make_tensor_value_info("x", elem_type, [2])],
            [helper.make_tensor_value_info("y", elem_type, [2])],
        )
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
        m.ir_version = 14
        return m

    plain = model(TensorProto.FLOAT)
    notes = fixups.ir_version_for_converters(plain)
    assert notes and plain.ir_version == 13 and fixups.ir_version_for_converters(plain) == []
    onnx.checker.check_model(plain)
    newer = model(TensorProto.FLOAT6E2M3)  # a type IR 13 does not have: left alone
    assert fixups.ir_version_for_converters(newer) == [] and newer.ir_version == 14


@pytest.mark.parametrize(
    "name",
    [
        "pytorch-converted/test_AvgPool2d",
        "pytorch-converted/test_BatchNorm2d_eval",
        "pytorch-converted/test_Linear",
        "pytorch-converted/test_PReLU_2d_multiparam",
        "pytorch-converted/test_PReLU_3d_multiparam",
        "pytorch-operator/test_operator_add_broadcast",
    ],
)
def test_opset6_fixup_keeps_the_meaning(name):
    """ONNX Runtime (and pnnx, which loads models with it) has no opset-6 AveragePool, BatchNormalization, Gemm,
    PRelu, Add: the fixup upgrades the model to opset 7, per-channel PRelu slopes included, meaning unchanged."""
    case = next(c for c in testing.conformance_cases(("pytorch-converted", "pytorch-operator")) if c.name == name)
    proto = onnx.load(str(case.model))
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        ort_run(proto, {i.name: x for i, x in zip(proto.graph.input, case.inputs)})
    notes = fixups.opset_for_converters(proto)
    assert notes[-1].startswith("upgraded opset 6 to 7") and fixups.opset_for_converters(proto) == []
    assert ("PRelu slopes" in notes[0]) is ("multiparam" in name)
    onnx.checker.check_model(proto)
    feeds = {i.name: x for i, x in zip(proto.graph.input, case.inputs)}
    for got, expected in zip(ort_run(proto, feeds), case.outputs):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_opset_fixup_leaves_newer_models_alone(tmp_path):
    proto = onnx.load(str(testing.softmax_coerced(tmp_path / "s.onnx")))  # opset 11
    before = proto.SerializeToString()
    assert fixups.opset_for_converters(proto) == [] and proto.SerializeToString() == before


def test_new_external_weights_are_a_new_conversion(tmp_path, model):
    """An ONNX model's external data file is part of its content: retrained weights behind a byte-identical graph
    file are converted afresh, never served from the old conversion."""
    if not unirt.registry.availability("ncnn").available:
        pytest.skip("needs ncnn")
    path = testing.with_external_data(model("dynamic_mlp"), tmp_path / "m" / "mlp.onnx")
    first = unirt.convert(path, to="ncnn")
    graph, before = path.read_bytes(), store.content_hash(open_model(path))
    model_before = open_model(path).content_hash
    testing.with_external_data(model("dynamic_mlp"), path, seed=1)  # new weights, same graph file
    assert path.read_bytes() == graph
    assert store.content_hash(open_model(path)) != before and open_model(path).content_hash != model_before
    second = unirt.convert(path, to="ncnn")
    assert not second.cached and second.path != first.path
    x = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    expected = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(["probs"], {"x": x})[0]
    with unirt.Session(second, backend="ncnn") as sess:
        np.testing.assert_allclose(sess.run(x)["probs"], expected, rtol=1e-4, atol=1e-5)
    assert unirt.convert(path, to="ncnn").cached


def test_the_conversion_key_follows_the_plugins_code(tmp_path):
    """A fix to a plugin's code converts afresh (no stale cached failure survives it), version bump or not."""
    import shutil
    import sys
    from pathlib import Path

    from unirt.conversion.build import code_hash, conversion_parts, plugin_code_hash

    package = Path(sys.modules[type(unirt.registry.get_backend("mnn")).__module__].__file__).parent
    assert plugin_code_hash("mnn") == code_hash(package) != plugin_code_hash("ncnn")
    assert conversion_parts("mnn", LoadOptions(), None, {})["plugin_code"] == plugin_code_hash("mnn")
    copy = tmp_path / "pkg"
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert code_hash(copy) == code_hash(package)
    (copy / "backend.py").write_text((copy / "backend.py").read_text() + "\n# a fix\n")
    assert code_hash(copy) != code_hash(package)
