"""unirt.Session on the real LiteRT interpreter: quantized I/O, precision, XNNPACK, delegates, options. The
conformance suite (test_conformance.py) covers the rest."""

from __future__ import annotations

import numpy as np
import pytest

import unirt
from unirt import ModelLoadError, Quantization, UnsupportedOptionError
from unirt.testing import build
from unirt.testing.conformance import reference_outputs, sample_feeds
from unirt.testing.tflite import QUANTIZED_ADD, build_tflite, quantized_add_reference
from unirt_tflite.options import dims, interpreter_settings, precision_in_force, quantization


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tflite_models")
    return lambda name: build_tflite(name, directory)


@pytest.fixture(scope="module")
def onnx(tmp_path_factory):
    directory = tmp_path_factory.mktemp("onnx_models")
    return lambda name: build(name, directory)


def test_quantized_inputs_and_outputs_expose_scale_and_zero_point(models):
    sess = unirt.Session(models("quantized_add"), backend="tflite", precision="int8")
    info = {i.name: i for i in (*sess.inputs, *sess.outputs)}
    for name, (scale, zero_point) in QUANTIZED_ADD.items():
        q = info[name].quantization
        assert isinstance(q, Quantization) and q.axis is None
        assert q.zero_point == (zero_point,) and q.scale[0] == pytest.approx(scale)
    assert info["sum"].dtype == np.int8 and info["sum_u8"].dtype == np.uint8
    assert "quantization=Quantization(scale=(0.1" in repr(info["a"])
    rng = np.random.default_rng(0)
    a = rng.integers(-128, 128, (5, 4)).astype(np.int8)
    b = rng.integers(-128, 128, (5, 4)).astype(np.int8)
    got, ref = sess.run({"a": a, "b": b}), quantized_add_reference(a, b)
    for name in ref:  # TFLite's fixed-point requantization may round the other way: 1 LSB
        assert np.abs(got[name].astype(int) - ref[name].astype(int)).max() <= 1
    assert sess.precision == "int8"


def test_a_quantized_model_reports_int8_whatever_was_asked(models):
    assert unirt.Session(models("quantized_add"), backend="tflite").precision == "int8"


def test_float_tensors_have_no_quantization(models):
    assert all(i.quantization is None for i in unirt.Session(models("dynamic_mlp"), backend="tflite").inputs)


def test_precision_is_honest(models):
    assert unirt.Session(models("dynamic_mlp"), backend="tflite").precision == "fp32"
    for precision in ("fp16", "bf16"):
        with pytest.raises(UnsupportedOptionError, match=f"tflite cannot run a model in {precision}.*supports fp32"):
            unirt.Session(models("dynamic_mlp"), backend="tflite", precision=precision)
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model"):
        unirt.Session(models("dynamic_mlp"), backend="tflite", precision="int8")


def test_xnnpack_off_gives_the_same_answers(models, onnx):
    feeds = sample_feeds("matmul_relu", seed=2)
    ref = reference_outputs(onnx("matmul_relu"), feeds)["y"]
    for opts in ({"xnnpack": False}, {"op_resolver": "builtin_ref"}, {}):
        sess = unirt.Session(models("matmul_relu"), backend="tflite", threads=2, backend_options=opts)
        np.testing.assert_allclose(sess.run(feeds)["y"], ref, rtol=1e-5, atol=1e-5)


def test_delegates_that_cannot_load_are_option_errors(models, tmp_path):
    with pytest.raises(UnsupportedOptionError, match="cannot load delegate .*nope.so"):
        unirt.Session(
            models("dynamic_mlp"), backend="tflite", backend_options={"delegates": [str(tmp_path / "nope.so")]}
        )
    with pytest.raises(UnsupportedOptionError, match="needs a 'library' key"):
        unirt.Session(models("dynamic_mlp"), backend="tflite", backend_options={"delegates": [{"options": {}}]})


def test_a_library_that_is_not_a_delegate_is_an_option_error(models, monkeypatch):
    """Any other shared library (here numpy's own extension) is refused naming the option, not blamed on the model,
    and leaves no LiteRT Delegate behind to fail again in __del__."""
    import gc
    import importlib
    import sys

    try:
        not_a_delegate = importlib.import_module("numpy._core._multiarray_umath")
    except ImportError:  # numpy 1.x
        not_a_delegate = importlib.import_module("numpy.core._multiarray_umath")
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    library = not_a_delegate.__file__
    with pytest.raises(
        UnsupportedOptionError,
        match=r"tflite: backend_options\['delegates'\]: .* is not a TFLite "
        "external delegate library: it does not export "
        "tflite_plugin_create_delegate",
    ):
        unirt.Session(models("dynamic_mlp"), backend="tflite", backend_options={"delegates": [library]})
    gc.collect()
    assert not unraisable, [str(u.exc_value) for u in unraisable]


def test_a_failed_resize_does_not_leave_a_stale_shape(models):
    """Inputs whose dynamic dims cannot go together fail to re-plan: the same bad feed fails the same way again
    (not with "Tensor is unallocated"), and a good one runs afterwards."""
    sess = unirt.Session(models("multi_io"), backend="tflite", batched=False)
    good = {
        "a": np.ones((2, 4), np.float32),
        "b": np.ones((2, 4), np.float32),
        "idx": np.zeros(2, np.int64),
        "scale": np.float32(1),
    }
    expected = sess.run(good)
    bad = dict(good, b=np.ones((3, 4), np.float32))
    messages = []
    for _ in range(2):
        with pytest.raises(unirt.RunError) as err:
            sess.run(bad)
        messages.append(str(err.value))
    assert "unallocated" not in messages[1] and "failed to prepare" in messages[1], messages
    for name, value in sess.run(good).items():
        np.testing.assert_array_equal(value, expected[name])
    x = dict(good, a=np.ones((5, 4), np.float32), b=np.ones((5, 4), np.float32), idx=np.zeros(5, np.int64))
    assert sess.run(x)["sum"].shape == (5, 4)


def test_model_from_bytes(models):
    sess = unirt.Session(models("dynamic_mlp").read_bytes(), backend="tflite")
    assert sess.run(np.ones((2, 8), np.float32))["probs"].shape == (2, 3)


def test_onnx_is_not_read(onnx):
    with pytest.raises(unirt.ModelFormatError, match="backend 'tflite' does not read onnx models"):
        unirt.Session(onnx("dynamic_mlp"), backend="tflite")


def test_a_model_with_an_unknown_op_is_a_model_load_error(tmp_path):
    from unirt.testing.tflite import TFLiteGraph

    g = TFLiteGraph()
    x = g.tensor("x", [2], np.float32)
    y = g.tensor("y", [2], np.float32)
    g.op("CUSTOM", [x], [y])
    g.opcodes[-1].customCode = "NoSuchCustomOp"
    g.inputs, g.outputs = [x], [y]
    with pytest.raises(ModelLoadError, match="tflite could not load this tflite model"):
        unirt.Session(g.save(tmp_path / "custom.tflite"), backend="tflite")


def test_options_logic():
    assert interpreter_settings({}).op_resolver == "AUTO"
    assert interpreter_settings({"xnnpack": False}).op_resolver == "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
    assert interpreter_settings({"delegates": "libedgetpu.so.1"}).delegates == ("libedgetpu.so.1",)
    for bad, message in (
        ({"xnnpack": "no"}, "xnnpack must be True or False"),
        ({"op_resolver": "fast"}, "op_resolver must be one of"),
        ({"xnnpack": False, "op_resolver": "auto"}, "contradicts xnnpack=False"),
        ({"gpu": True}, "unknown backend option 'gpu'"),
    ):
        with pytest.raises(UnsupportedOptionError, match=message):
            interpreter_settings(bad)
    assert precision_in_force("fp32", False) == "fp32" and precision_in_force("fp32", True) == "int8"
    per_axis = quantization(
        {"scales": np.array([0.1, 0.2]), "zero_points": np.array([0, 0]), "quantized_dimension": 3}, np.dtype(np.int8)
    )
    assert per_axis == Quantization((0.1, 0.2), (0, 0), 3)
    assert quantization({"scales": np.array([]), "zero_points": np.array([])}, np.dtype(np.int8)) is None
    assert quantization({"scales": np.array([0.5])}, np.dtype(np.float32)) is None
    assert dims([-1, 3, 224, 224]) == (None, 3, 224, 224)


def test_convert_to_tflite_points_to_onnx2tf(onnx, capsys):
    """unirt has no ONNX -> TFLite converter: the error says so and names the tool that has one."""
    from unirt.cli import main

    with pytest.raises(
        unirt.ConversionError,
        match=r"backend 'tflite' cannot convert onnx models \(it converts "
        r"from: nothing\)\. unirt has no ONNX -> TFLite converter",
    ):
        unirt.convert(onnx("dynamic_mlp"), to="tflite")
    assert main(["convert", str(onnx("dynamic_mlp")), "--to", "tflite"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ConversionError: ") and "`pip install onnx2tf`" in err
    assert "`onnx2tf -i model.onnx`" in err and "Traceback" not in err
