"""unirt.Session on the real OpenVINO: honest fp32 on a bf16 CPU, the other precisions, options, reshape, IR,
TFLite, conversion. The conformance suite (test_conformance.py) covers the rest."""

from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

import unirt
from unirt import InputError, ModelLoadError, UnsupportedOptionError, hardware
from unirt.testing.conformance import random_cases, reference_outputs, sample_feeds
from unirt.testing.tflite import build_tflite
from unirt_openvino.backend import OpenVinoBackend


def rel_l2(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / np.linalg.norm(b))


@pytest.fixture(scope="module")
def squeezenet():
    """A real CNN with random weights (squeezenet from the onnx wheel's light models) and its ORT outputs."""
    case = next(c for c in random_cases() if c.name == "light_squeezenet_random")
    feeds = {"data_0": case.inputs[0]}
    return case.model, feeds, reference_outputs(case.model, feeds)


def test_fp32_by_default_even_where_openvino_would_pick_bf16(squeezenet):
    path, feeds, ref = squeezenet
    core = ov.Core()
    default = core.compile_model(str(path), "CPU").get_property("INFERENCE_PRECISION_HINT").get_type_name()
    sess = unirt.Session(path, backend="openvino", threads=1)
    assert sess.precision == "fp32" and "precision='fp32'" in repr(sess)
    assert sess._runner._compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    name = next(iter(ref))
    ours = rel_l2(sess.run(feeds)[name], ref[name])
    assert ours < 1e-5
    if "avx512_bf16" in hardware().cpu_features or "amx_bf16" in hardware().cpu_features:
        # What a user who asked for nothing would have got from OpenVINO itself on this CPU
        assert default == "bf16"
        theirs = rel_l2(core.compile_model(str(path), "CPU")({0: feeds["data_0"]})[0], ref[name])
        assert theirs > 100 * ours, (theirs, ours)


def test_bf16_when_asked_for(squeezenet):
    path, feeds, ref = squeezenet
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "BF16" not in caps:
        with pytest.raises(UnsupportedOptionError, match="no bf16 mode"):
            unirt.Session(path, backend="openvino", precision="bf16")
        return
    sess = unirt.Session(path, backend="openvino", precision="bf16", threads=1)
    assert sess.precision == "bf16"
    name = next(iter(ref))
    assert 1e-5 < rel_l2(sess.run(feeds)[name], ref[name]) < 1e-1


def test_fp16_and_int8_are_refused_where_they_cannot_be_honoured(model):
    caps = ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    if "FP16" not in caps:
        with pytest.raises(UnsupportedOptionError, match="openvino: CPU has no fp16 mode here; it supports fp32"):
            unirt.Session(model("dynamic_mlp"), backend="openvino", precision="fp16")
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", precision="int8")


def test_int8_runs_a_quantized_model(tmp_path, model):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([sample_feeds("matmul_relu", seed=i) for i in range(4)])

        def get_next(self):
            return next(self.data, None)

    q = tmp_path / "matmul_relu_qdq.onnx"
    quantize_static(str(model("matmul_relu")), str(q), Reader(), quant_format=QuantFormat.QDQ)
    sess = unirt.Session(q, backend="openvino", precision="int8")
    assert sess.precision == "int8"
    feeds = sample_feeds("matmul_relu", seed=9)
    ref = reference_outputs(model("matmul_relu"), feeds)["y"]
    assert rel_l2(sess.run(feeds)["y"], ref) < 0.05


def test_threads_hint_streams_and_verbatim_properties(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="openvino", threads=2,
                         backend_options={"performance_hint": "throughput", "num_streams": 2,
                                          "ENABLE_CPU_PINNING": False})
    compiled = sess._runner._compiled
    assert compiled.get_property("INFERENCE_NUM_THREADS") == 2
    assert str(compiled.get_property("PERFORMANCE_HINT")).endswith("THROUGHPUT")
    assert int(compiled.get_property("NUM_STREAMS")) == 2
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


def test_compiled_model_cache(model, tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path))
    unirt.Session(model("matmul_relu"), backend="openvino", backend_options={"cache_dir": True})
    assert any((tmp_path / "openvino").iterdir()), "OpenVINO wrote no compiled model into unirt's cache dir"


def test_reshape_to_static_shapes(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"x": [4, 8]}})
    assert sess.inputs[0].shape == (4, 8)
    feeds = sample_feeds("dynamic_mlp", batch=4)
    np.testing.assert_allclose(sess.run(feeds)["probs"], reference_outputs(model("dynamic_mlp"), feeds)["probs"],
                               rtol=1e-5, atol=1e-6)
    three = sample_feeds("dynamic_mlp", batch=3)  # a static batch of 4: 3 rows are padded to 4
    np.testing.assert_allclose(sess.run(three)["probs"], reference_outputs(model("dynamic_mlp"), three)["probs"],
                               rtol=1e-5, atol=1e-6)
    strict = unirt.Session(model("dynamic_mlp"), backend="openvino", batched=False,
                           backend_options={"shapes": {"x": [4, 8]}})
    with pytest.raises(InputError, match="dim 0 is static"):
        strict.run(np.ones((3, 8), np.float32))
    bounded = unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"x": ["1..8", 8]}})
    assert bounded.inputs[0].shape == (None, 8)
    with pytest.raises(UnsupportedOptionError, match="unknown input 'y'"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", backend_options={"shapes": {"y": [1, 8]}})


def test_convert_to_ir_keeps_fp32_weights(model, tmp_path):
    backend = OpenVinoBackend()
    source = unirt.open_model(model("matmul_relu"))
    ir = backend.convert(source, tmp_path / "fp32", unirt.LoadOptions())
    assert ir.format is unirt.ModelFormat.OPENVINO and ir.companion(".bin") is not None
    assert ir.companion(".bin").stat().st_size >= 64 * 64 * 4  # fp32 weights, not OpenVINO's default fp16
    half = backend.convert(source, tmp_path / "fp16", unirt.LoadOptions(precision="fp16"))
    assert half.companion(".bin").stat().st_size < ir.companion(".bin").stat().st_size
    feeds = sample_feeds("matmul_relu", seed=3)
    ref = reference_outputs(model("matmul_relu"), feeds)["y"]
    with unirt.Session(ir.path, backend="openvino") as sess:
        assert sess.backend == "openvino" and sess.model.format is unirt.ModelFormat.OPENVINO
        np.testing.assert_allclose(sess.run(feeds)["y"], ref, rtol=1e-5, atol=1e-6)
    assert unirt.Session(ir.path).backend == "openvino"  # auto-selection: only OpenVINO reads IR


def test_convert_tflite_to_ir_and_errors(tmp_path):
    backend = OpenVinoBackend()
    ir = backend.convert(unirt.open_model(build_tflite("dynamic_mlp", tmp_path)), tmp_path / "ir", unirt.LoadOptions())
    assert ir.format is unirt.ModelFormat.OPENVINO
    with pytest.raises(unirt.ConversionError, match="converts onnx, tflite models, not openvino"):
        backend.convert(ir, tmp_path / "again", unirt.LoadOptions())


def test_reads_tflite(tmp_path, model):
    sess = unirt.Session(build_tflite("matmul_relu", tmp_path), backend="openvino")
    feeds = sample_feeds("matmul_relu", seed=5)
    np.testing.assert_allclose(sess.run(feeds)["y"], reference_outputs(model("matmul_relu"), feeds)["y"],
                               rtol=1e-5, atol=1e-5)


def test_model_from_bytes(model):
    sess = unirt.Session(model("dynamic_mlp").read_bytes(), backend="openvino")
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


def test_broken_ir_is_a_model_load_error(model, tmp_path):
    ir = OpenVinoBackend().convert(unirt.open_model(model("matmul_relu")), tmp_path, unirt.LoadOptions())
    xml = ir.path.read_text()
    ir.path.write_text(xml.replace('type="MatMul"', 'type="NoSuchOp"'))
    with pytest.raises(ModelLoadError, match="openvino could not read this openvino model"):
        unirt.Session(ir.path, backend="openvino")
    ir.companion(".bin").write_bytes(b"\0" * 16)  # weights too short for the constants the IR declares
    ir.path.write_text(xml)
    with pytest.raises(ModelLoadError, match="openvino could not"):
        unirt.Session(ir.path, backend="openvino")


def test_devices_it_does_not_have_are_refused(model):
    with pytest.raises(UnsupportedOptionError, match="cannot run on cuda here; it offers cpu"):
        unirt.Session(model("dynamic_mlp"), backend="openvino", device="cuda")
