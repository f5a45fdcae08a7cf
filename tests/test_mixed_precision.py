"""fp16 conversion of ONNX models (`unirt.conversion.mixed_precision`: what a strongly typed TensorRT 11 engine is
built from at precision fp16), on real-size models: converted by ONNX Runtime's float16 tool, verified against the fp32
model on ONNX Runtime's CPU provider, cached in the conversion store, and refused where fp16 breaks the model."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from unirt import ConversionError, UnsupportedOptionError, open_model, testing
from unirt.conversion import TOLERANCES, store
from unirt.conversion.mixed_precision import fp16_converter, onnx_to_fp16
from unirt.testing.realsize import detector_like, mobilenet_like

FLOAT, HALF = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))


def _io_types(path):
    proto = onnx.load(str(path), load_external_data=False)
    return (
        [i.type.tensor_type.elem_type for i in proto.graph.input],
        [o.type.tensor_type.elem_type for o in proto.graph.output],
        {i.data_type for i in proto.graph.initializer},
    )


def _ort(path, feeds):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds), strict=True))


@pytest.mark.parametrize("build", [mobilenet_like, detector_like], ids=["mobilenet_like", "detector_like"])
def test_fp16_conversion_of_real_size_models_is_verified_and_cached(tmp_path, build):
    src = build(tmp_path / "model.onnx")
    conv = onnx_to_fp16(src)
    assert not conv.cached and conv.verified and conv.within_tolerance and conv.reference == "onnxruntime"
    assert conv.converter == fp16_converter() and conv.converter.startswith("onnxruntime ")
    assert conv.tolerance == TOLERANCES["fp16"] and 0 < conv.max_error < TOLERANCES["fp16"]
    assert conv.verified_on.startswith("random inputs at input: 1x3x")
    # the weights are fp16, the inputs and outputs still float32: fed and read like the fp32 model
    ins, outs, weights = _io_types(conv.path)
    assert set(ins) == {FLOAT} and set(outs) == {FLOAT} and HALF in weights and FLOAT not in weights
    assert conv.path.stat().st_size < 0.6 * src.stat().st_size
    # its own check, independent of the conversion layer: the fp16 model against the fp32 one on fresh inputs
    x = np.random.default_rng(42).standard_normal(_shape(src)).astype(np.float32)
    got, ref = _ort(conv.path, {"input": x}), _ort(src, {"input": x})
    for name, r in ref.items():
        assert np.linalg.norm(got[name] - r) / np.linalg.norm(r) < TOLERANCES["fp16"], name
    # a second call is a cache hit on the same entry, keyed by the source's content
    again = onnx_to_fp16(src)
    assert again.cached and again.path == conv.path and again.errors == conv.errors
    assert onnx_to_fp16(src, cache=False).path == conv.path  # converted afresh into the same entry


def _shape(path):
    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    return [d.dim_value or 1 for d in dims]


def test_fp16_conversion_of_a_dynamic_batch_model_is_verified_at_two_batch_sizes(tmp_path):
    # x float32[N, 3, 32, 32]; the graph output `features` also feeds GlobalAveragePool (onnxconverter-common 1.16's
    # float16 writes an fp16 Cast output that a float32 consumer reads there: ONNX Runtime refuses to load it)
    src = testing.batched_cnn(tmp_path / "cnn.onnx")
    conv = onnx_to_fp16(src)
    assert conv.within_tolerance and "x: 1x3x32x32; x: 2x3x32x32" in conv.verified_on
    assert {e.name for e in conv.errors} == {"features", "pooled"}
    x = np.random.default_rng(1).standard_normal((5, 3, 32, 32)).astype(np.float32)
    assert _ort(conv.path, {"x": x})["pooled"].shape == (5, 16, 1, 1)  # the batch dim stays dynamic


def test_fp16_conversion_that_breaks_the_model_is_refused_with_the_measured_error(tmp_path):
    """Constants beyond fp16's range are clamped by the converter: the result is wrong, and verification says so."""
    from onnx import helper, numpy_helper

    scale = numpy_helper.from_array(np.full((1, 8), 3e5, np.float32), "scale")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "scale"], ["y"])],
        "big",
        [helper.make_tensor_value_info("x", FLOAT, ["N", 8])],
        [helper.make_tensor_value_info("y", FLOAT, ["N", 8])],
        [scale],
    )
    path = tmp_path / "big.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    with pytest.raises(
        ConversionError,
        match=r"big.onnx: its fp16 conversion \(onnxruntime .*\) disagrees "
        r"with the fp32 model on onnxruntime beyond the fp16 tolerance 0.01: "
        r"y: rel-L2 0.[0-9]+.*precision='fp32'",
    ):
        onnx_to_fp16(path)
    kept = onnx_to_fp16(path, accept=True)  # the entry was cached with its errors; accepted, it is returned
    assert kept.cached and not kept.within_tolerance and kept.max_error > 0.5
    assert any("clamped" in note for note in kept.fixups)


def test_fp16_conversion_refuses_what_it_cannot_take(tmp_path):
    src = testing.batched_cnn(tmp_path / "cnn.onnx")
    conv = onnx_to_fp16(src)
    with pytest.raises(UnsupportedOptionError, match="already has fp16 tensors.*precision='fp32'"):
        onnx_to_fp16(conv.path)
    not_onnx = tmp_path / "model.engine"
    not_onnx.write_bytes(b"ftrt" + bytes(60))
    with pytest.raises(ConversionError, match="fp16 conversion takes ONNX models, not tensorrt"):
        onnx_to_fp16(not_onnx)


def test_fp16_cache_entry_is_keyed_by_the_source_content(tmp_path):
    a = testing.batched_cnn(tmp_path / "a.onnx", seed=0)
    b = testing.batched_cnn(tmp_path / "b.onnx", seed=1)
    ca, cb = onnx_to_fp16(a), onnx_to_fp16(b)
    assert ca.path != cb.path and ca.path.parent.name != store.content_hash(open_model(a))
    # a damaged entry is converted again rather than loaded
    ca.path.write_bytes(b"damaged")
    again = onnx_to_fp16(a)
    assert not again.cached and again.within_tolerance and onnx.load(str(again.path)).graph.node
