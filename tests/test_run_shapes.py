"""Conversions at the shapes a model really runs at (issue 13 item 2, and verification on a run's inputs from item
3): the user's shapes wherever given (Session, fastest, every CLI command, a serve config), else the first run's,
cached per shape signature; never a guess that then refuses the real inputs. Real engines, real conversions."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shape_models import detector, recognizer, sequence_model

import unirt
from unirt import registry
from unirt import tensor as _tensor
from unirt.cli import main
from unirt.fastest import clear_cache

ort = pytest.importorskip("onnxruntime")


def _available(name: str) -> bool:
    try:
        return registry.availability(name).available
    except unirt.UnirtError:
        return False


CONVERTERS = [b for b in ("ncnn", "mnn") if _available(b)]
# `[-1, 3, "?", "?"]`: "?" is an anonymous dynamic dim once unirt.tensor normalizes placeholders (issue 13 item 1)
placeholders = pytest.mark.skipif(
    not hasattr(_tensor, "normalize_dim"),
    reason="needs placeholder dims as anonymous dynamic dims (unirt.tensor.normalize_dim)",
)


def _reference(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": x})[0]


def _rel(a, b):
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def _save(directory, array):
    path = directory / "x.npy"
    np.save(path, array)
    return path


def _image(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.fixture(scope="module")
def shape_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("shape_models")
    return {
        "detector": detector(d / "detector.onnx"),
        "recognizer": recognizer(d / "recognizer.onnx"),
        "sequence": sequence_model(d / "vad.onnx"),
    }


@pytest.mark.parametrize("backend", CONVERTERS)
def test_detector_converts_at_the_first_runs_shape_then_runs_another(shape_models, backend):
    path = shape_models["detector"]
    with unirt.Session(path, backend=backend) as sess:
        assert sess.conversion is None and sess.inputs[0].shape[2:] == (None, None)  # nothing guessed at load
        assert "first run's input shapes" in repr(sess)
        x = _image(1, 3, 320, 320)
        assert _rel(sess.run(x)["heat"], _reference(path, x)) < 1e-5
        conv = sess.conversion
        assert conv.verified and conv.shapes == {"x": (1, 3, 320, 320)}
        assert conv.verified_on.startswith("the first run's inputs (x: 1x3x320x320)")
        assert conv.dynamic_axes == {"x": (2, 3)} and "x: 1x3x640x640" in conv.verified_on  # verified at 2 sizes
        y = _image(1, 3, 256, 192, seed=1)
        assert _rel(sess.run(y)["heat"], _reference(path, y)) < 1e-5
        assert len(sess._lazy.conversions) == 1 and sess._lazy.reconversions == 0  # one dynamic-size conversion
        assert "x:1x3x320x320 (dynamic: x dims 2, 3)" in repr(sess)
    with unirt.Session(path, backend=backend) as again:  # a new Session at the same shapes: the cached conversion
        again.run(x)
        assert again.conversion.cached


@pytest.mark.parametrize("backend", CONVERTERS)
def test_given_shapes_convert_at_load(shape_models, backend):
    path = shape_models["detector"]
    with unirt.Session(path, backend=backend, input_shapes={"x": (1, 3, 320, 320)}) as sess:
        assert sess.conversion is not None and sess.conversion.shapes == {"x": (1, 3, 320, 320)}
        assert "random inputs at x: 1x3x320x320" in sess.conversion.verified_on
        x = _image(1, 3, 320, 320)
        assert _rel(sess.run(x)["heat"], _reference(path, x)) < 1e-5


def test_input_shapes_are_checked(shape_models):
    backend = CONVERTERS[0] if CONVERTERS else pytest.skip("needs ncnn or mnn")
    with pytest.raises(unirt.InputError, match="input_shapes names unknown input 'y'; the model's inputs are: x"):
        unirt.Session(shape_models["detector"], backend=backend, input_shapes={"y": (1, 3, 8, 8)})
    with pytest.raises(unirt.UnsupportedOptionError, match="input_shapes must be a dict"):
        unirt.Session(shape_models["detector"], backend=backend, input_shapes=[(1, 3, 8, 8)])


def test_a_guess_is_kept_for_explicit_convert_only_and_said(shape_models):
    backend = CONVERTERS[0] if CONVERTERS else pytest.skip("needs ncnn or mnn")
    conv = unirt.convert(shape_models["detector"], to=backend)
    assert conv.shapes == {"x": (1, 3, 224, 224)} and "converted at x:1x3x224x224" in str(conv)


@placeholders
@pytest.mark.parametrize("backend", CONVERTERS)
def test_recognizer_fixed_at_h48_converts_at_the_first_runs_shape(shape_models, backend):
    path = shape_models["recognizer"]
    with pytest.raises(unirt.ConversionError, match="at the shapes unirt chose"):  # a 224 guess cannot work
        unirt.convert(path, to=backend)
    with unirt.Session(path, backend=backend) as sess:
        x = _image(1, 3, 48, 192)
        assert _rel(sess.run(x)["logits"], _reference(path, x)) < 1e-5
        assert sess.conversion.shapes["x"][2:] == (48, 192) and sess.conversion.dynamic_axes.get("x") == (3,)
        y = _image(2, 3, 48, 96, seed=1)  # another width and batch: the width stayed dynamic (H could not)
        assert _rel(sess.run(y)["logits"], _reference(path, y)) < 1e-5
        assert sess._lazy.reconversions == 0
        with pytest.raises(unirt.ConversionError, match="fails on"):  # H=64: the model itself cannot, as said
            sess.run(_image(1, 3, 64, 96))


@pytest.mark.parametrize("backend", CONVERTERS)
def test_batch_sequence_model(shape_models, backend):
    path = shape_models["sequence"]
    with unirt.Session(path, backend=backend) as sess:
        assert sess.inputs[0].shape == ("batch", "sequence")
        for shape in ((1, 16000), (3, 8000)):
            x = _image(*shape)
            assert _rel(sess.run(x)["score"], _reference(path, x)) < 1e-5
        assert sess.conversion.shapes == {"x": (1, 16000)} and sess._lazy.reconversions == 0


def test_fastest_with_the_readme_input_shapes(shape_models):
    if not CONVERTERS:
        pytest.skip("needs ncnn or mnn")
    path = shape_models["detector"]
    clear_cache()
    sess = unirt.Session(path, backend="fastest", input_shapes={"x": (1, 3, 320, 320)})
    timed = {t.backend: t for t in sess.selection.timings}
    assert all(timed[b].median_ms is not None for b in CONVERTERS if b in timed), sess.selection
    x = _image(1, 3, 320, 320)
    assert _rel(sess.run(x)["heat"], _reference(path, x)) < 1e-5
    other = _image(1, 3, 160, 224, seed=2)
    assert _rel(sess.run(other)["heat"], _reference(path, other)) < 1e-5
    again = unirt.Session(path, backend="fastest", input_shapes={"x": (1, 3, 320, 320)})
    assert again.selection.cached and again.backend == sess.backend  # the choice, cached with its shapes
    different = unirt.Session(path, backend="fastest", input_shapes={"x": (1, 3, 160, 160)})
    assert not different.selection.cached  # other shapes: another key
    for s in (sess, again, different):
        s.close()


def test_fastest_without_shapes_chooses_at_the_first_run(shape_models):
    if not CONVERTERS:
        pytest.skip("needs ncnn or mnn")
    path = shape_models["detector"]
    clear_cache()
    with unirt.Session(path, backend="fastest") as sess:
        assert sess.backend == "fastest" and sess.selection is None  # nothing timed on a 1x1 guess
        x = _image(1, 3, 320, 320)
        assert _rel(sess.run(x)["heat"], _reference(path, x)) < 1e-5
        assert _available(sess.backend) and sess.selection is not None
        timed = {t.backend: t for t in sess.selection.timings}
        assert all(t.median_ms is not None for t in timed.values()), sess.selection  # every backend ran 320x320
        y = _image(1, 3, 96, 128, seed=3)
        assert _rel(sess.run(y)["heat"], _reference(path, y)) < 1e-5
    with unirt.Session(path, backend="fastest") as cached:  # the first run's shapes are in the cache key
        cached.run(x)
        assert cached.selection.cached


def test_cli_run_bench_compare_take_shape(shape_models, capsys, tmp_path):
    backend = CONVERTERS[0] if CONVERTERS else pytest.skip("needs ncnn or mnn")
    path = str(shape_models["detector"])
    assert main(["run", path, "--backend", backend, "--shape", "x:1x3x320x320", "--json", "--iterations", "1"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["outputs"][0]["shape"] == [1, 2, 320, 320]
    assert report["format"].startswith(f"onnx, converted to {backend}")
    assert (
        main(
            [
                "run",
                path,
                "--backend",
                backend,
                "--json",
                "--iterations",
                "0",  # no shape: the first run's
                "--input",
                f"x={_save(tmp_path, _image(1, 3, 96, 64))}",
            ]
        )
        == 0
    )
    assert json.loads(capsys.readouterr().out)["outputs"][0]["shape"] == [1, 2, 96, 64]
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                path,
                "--backends",
                f"onnxruntime,{backend}",
                "--shapes",
                "x:1x3x320x320",
                "--iterations",
                "2",
                "--warmup",
                "1",
                "--no-progress",
                "--json",
                str(out),
            ]
        )
        == 0
    )
    rows = json.loads(out.read_text())["results"]
    assert {r["backend"] for r in rows if not r.get("error")} == {"onnxruntime", backend}
    assert all(r["shapes"] == {"x": [1, 3, 320, 320]} for r in rows)
    capsys.readouterr()
    assert main(["compare", path, "--backends", backend, "--shape", "x=1x3x64x96", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["shapes"] == {"x": [1, 3, 64, 96]}
    assert main(["explain", path, "--fastest", "--shape", "x:1x3x64x64"]) == 0


def test_bench_reports_a_failing_backend_as_a_row(model, capsys):
    if not _available("ncnn"):
        pytest.skip("needs ncnn")
    path = str(model("int_ops"))  # int64 inputs: ncnn takes float32 only, so its conversion fails
    assert (
        main(["bench", path, "--backends", "onnxruntime,ncnn", "--iterations", "2", "--warmup", "1", "--no-progress"])
        == 1
    )
    out = capsys.readouterr().out
    assert "onnxruntime" in out and "ConversionError" in out and "float32 inputs only" in out


def test_serve_config_dims_reach_the_conversion(shape_models, tmp_path):
    backend = CONVERTERS[0] if CONVERTERS else pytest.skip("needs ncnn or mnn")
    pytest.importorskip("tritonclient")
    from unirt.serve.config import parse_config_text
    from unirt.serve.model import LoadedModel
    from unirt.serve.repository import DirectoryRepository

    (tmp_path / "det" / "1").mkdir(parents=True)
    (tmp_path / "det" / "1" / "model.onnx").write_bytes(shape_models["detector"].read_bytes())
    config = parse_config_text(f"""
backend: "{backend}"
max_batch_size: 0
input [ {{ name: "x" data_type: TYPE_FP32 dims: [ 1, 3, 128, 160 ] }} ]
output [ {{ name: "heat" data_type: TYPE_FP32 dims: [ 1, 2, 128, 160 ] }} ]
""")
    loaded = LoadedModel.load(DirectoryRepository(tmp_path).source("det"), 1, config)
    try:
        (sess,) = loaded.sessions
        assert sess.conversion is not None and sess.conversion.shapes == {"x": (1, 3, 128, 160)}
        x = _image(1, 3, 128, 160)
        got = loaded.submit({"x": x}, 1).result(60).outputs["heat"]
        assert _rel(got, _reference(shape_models["detector"], x)) < 1e-5
    finally:
        loaded.close()


def test_fastest_winner_that_converts_takes_other_shapes(shape_models):
    if not CONVERTERS:
        pytest.skip("needs ncnn or mnn")
    path = shape_models["detector"]
    clear_cache()
    # every backend that reads ONNX as it is fails on an unknown option: the winner is one that converts
    failing = {b: {"no_such_option": 1} for b in ("onnxruntime", "openvino", "tflite", "tensorrt")}
    with unirt.Session(path, backend="fastest", input_shapes={"x": (1, 3, 320, 320)}, backend_options=failing) as sess:
        assert sess.backend in CONVERTERS and sess.conversion.shapes == {"x": (1, 3, 320, 320)}
        assert sess.inputs[0].shape[2:] == (None, None)  # the source's signature: other sizes reach the backend
        for shape in ((1, 3, 320, 320), (1, 3, 64, 96)):
            x = _image(*shape)
            assert _rel(sess.run(x)["heat"], _reference(path, x)) < 1e-5
