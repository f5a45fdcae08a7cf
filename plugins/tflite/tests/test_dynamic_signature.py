"""A TFLite model whose signature is dynamic (`shape_signature [-1, -1]`, file shape `[1, 1]`) and that does not
prepare at that placeholder shape (a VALID convolution 5 samples wide, as an audio front end has): LiteRT runs it
after a resize, so unirt must too, planning it at the first run's shapes instead of refusing it on load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from ai_edge_litert.interpreter import Interpreter

import unirt
from unirt import ModelLoadError, RunError
from unirt.testing.tflite import TFLiteGraph, _options, _schema

TAPS, CHANNELS = 5, 8


def frame_scorer(path: Path, length: int | None = None, seed: int = 0) -> Path:
    """audio float32[batch, length] -> score float32[batch, 8]: EXPAND_DIMS twice to [B, 1, T, 1], a VALID
    1x5 CONV_2D + RELU, MEAN over time. `length` None: batch and length dynamic (file shape [1, 1])."""
    s, rng = _schema(), np.random.default_rng(seed)
    g = TFLiteGraph()
    batch = None if length is None else 1
    x = g.tensor("audio", [batch, length], np.float32)
    a1 = g.tensor("axis1", [], np.int32, np.array(1, np.int32))
    a3 = g.tensor("axis3", [], np.int32, np.array(3, np.int32))
    e1 = g.tensor("e1", [batch, 1, length], np.float32)
    e2 = g.tensor("e2", [batch, 1, length, 1], np.float32)
    g.op("EXPAND_DIMS", [x, a1], [e1], _options("ExpandDimsOptionsT"))
    g.op("EXPAND_DIMS", [e1, a3], [e2], _options("ExpandDimsOptionsT"))
    w = g.tensor(
        "w", [CHANNELS, 1, TAPS, 1], np.float32, rng.standard_normal((CHANNELS, 1, TAPS, 1)).astype(np.float32)
    )
    b = g.tensor("b", [CHANNELS], np.float32, rng.standard_normal(CHANNELS).astype(np.float32))
    frames = None if length is None else max(length - TAPS + 1, 1)
    conv = g.tensor("conv", [batch, 1, frames, CHANNELS], np.float32)
    g.op(
        "CONV_2D",
        [e2, w, b],
        [conv],
        _options(
            "Conv2DOptionsT",
            padding=s.Padding.VALID,
            strideW=1,
            strideH=1,
            fusedActivationFunction=s.ActivationFunctionType.RELU,
        ),
    )
    axes = g.tensor("axes", [2], np.int32, np.array([1, 2], np.int32))
    y = g.tensor("score", [batch, CHANNELS], np.float32)
    g.op("MEAN", [conv, axes], [y], _options("ReducerOptionsT", keepDims=False))
    g.inputs, g.outputs = [x], [y]
    return g.save(path)


def by_hand(path: Path, x: np.ndarray) -> np.ndarray:
    """LiteRT's own way: resize the input to the real shape, allocate, invoke."""
    it = Interpreter(model_path=str(path))
    it.resize_tensor_input(it.get_input_details()[0]["index"], list(x.shape))
    it.allocate_tensors()
    it.set_tensor(it.get_input_details()[0]["index"], x)
    it.invoke()
    return it.get_tensor(it.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return frame_scorer(tmp_path_factory.mktemp("tflite_dynamic") / "frame_scorer.tflite")


def test_litert_itself_does_not_prepare_it_at_the_placeholder_shape(model):
    it = Interpreter(model_path=str(model))
    detail = it.get_input_details()[0]
    assert list(detail["shape"]) == [1, 1] and list(detail["shape_signature"]) == [-1, -1]
    with pytest.raises(RuntimeError):
        it.allocate_tensors()


def test_loads_and_runs_at_the_real_shapes_like_litert_by_hand(model):
    sess = unirt.Session(model, backend="tflite")
    assert sess.inputs[0].rank == 2 and sess.inputs[0].is_dynamic
    rng = np.random.default_rng(1)
    for shape in ((2, 400), (1, 160), (3, 400)):  # a first shape, another length, another batch
        x = rng.standard_normal(shape).astype(np.float32)
        got = sess.run({"audio": x})["score"]
        want = by_hand(model, x)
        assert got.shape == (shape[0], CHANNELS)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        out = {"score": np.empty((shape[0], CHANNELS), np.float32)}
        assert sess.run({"audio": x}, out=out)["score"] is out["score"]
        np.testing.assert_allclose(out["score"], want, rtol=1e-5, atol=1e-6)


def test_a_shape_the_model_cannot_run_is_a_run_error_and_the_session_recovers(model):
    sess = unirt.Session(model, backend="tflite")
    with pytest.raises(RunError, match=r"does not prepare at input shapes 'audio' \[1, 3\]"):
        sess.run({"audio": np.zeros((1, 3), np.float32)})  # shorter than the 5-sample kernel
    x = np.random.default_rng(2).standard_normal((1, 64)).astype(np.float32)
    np.testing.assert_allclose(sess.run({"audio": x})["score"], by_hand(model, x), rtol=1e-5, atol=1e-6)


def test_a_static_model_that_does_not_prepare_is_still_refused_on_load(tmp_path):
    path = frame_scorer(tmp_path / "static_too_short.tflite", length=3)  # fixed at 3 samples, kernel 5
    with pytest.raises(ModelLoadError, match="tflite could not load this tflite model"):
        unirt.Session(path, backend="tflite")


def test_a_dynamic_model_with_an_op_litert_lacks_is_still_refused_on_load(tmp_path):
    g = TFLiteGraph()
    x = g.tensor("x", [None, 2], np.float32)
    y = g.tensor("y", [None, 2], np.float32)
    g.op("CUSTOM", [x], [y])
    g.opcodes[-1].customCode = "NoSuchCustomOp"
    g.inputs, g.outputs = [x], [y]
    with pytest.raises(ModelLoadError, match="NoSuchCustomOp"):
        unirt.Session(g.save(tmp_path / "custom_dynamic.tflite"), backend="tflite")
