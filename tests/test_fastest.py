"""backend="fastest": every installed backend that can run the model is timed on it, the fastest kept, the
choice cached per model, machine and options, and explained with the timings."""

from __future__ import annotations

import json

import numpy as np
import pytest

import unirt
from unirt import InputError, UnsupportedOptionError
from unirt.fastest import FastestExplanation, choose, clear_cache, options_for, sample_inputs


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "fastest"


def eligible(path) -> set[str]:
    return {c.backend for c in unirt.explain(path).candidates if c.eligible}


def test_times_every_eligible_backend_and_keeps_the_fastest(model, cache):
    path = model("matmul_relu")
    sess = unirt.Session(path, backend="fastest", threads=1)
    sel = sess.selection
    assert isinstance(sel, FastestExplanation) and not sel.cached
    timed = {t.backend: t for t in sel.timings}
    assert set(timed) == eligible(path)
    ok = {t.backend: t.median_ms for t in sel.timings if t.median_ms is not None}
    assert sess.backend == min(ok, key=ok.get) == sel.chosen.backend
    assert all(t.runs >= 5 for t in sel.timings if t.error is None)
    text = str(sel)
    assert "timed just now" in text and "ms median of" in text and f"{sess.backend}" in text
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    ref = unirt.Session(path, backend="onnxruntime").run(x)["y"]
    np.testing.assert_allclose(sess.run(x)["y"], ref, rtol=1e-5, atol=1e-6)
    files = list(cache.glob("*.json"))
    assert len(files) == 1 and json.loads(files[0].read_text())["winner"] == sess.backend


def test_the_next_load_reuses_the_cached_choice(model):
    path = model("matmul_relu")
    first = unirt.Session(path, backend="fastest", threads=1)
    second = unirt.Session(path, backend="fastest", threads=1)
    assert second.selection.cached and second.backend == first.backend
    assert second.selection.timings == first.selection.timings
    assert "choice from the cache" in str(second.selection)
    # other options are another question
    assert not unirt.Session(path, backend="fastest", threads=2).selection.cached
    assert clear_cache() == 2
    assert not unirt.Session(path, backend="fastest", threads=1).selection.cached


def test_caller_shapes_are_used_for_dynamic_dims(model):
    sess = unirt.Session(model("dynamic_mlp"), backend="fastest", input_shapes={"x": [32, 8]})
    assert sess.run(np.ones((32, 8), np.float32))["probs"].shape == (32, 3)
    feeds = sample_inputs(sess.inputs, {"x": [32, 8]})
    assert feeds["x"].shape == (32, 8) and feeds["x"].dtype == np.float32
    with pytest.raises(InputError, match="input_shapes names unknown input 'y'"):
        unirt.Session(model("dynamic_mlp"), backend="fastest", input_shapes={"y": [1, 8]})
    with pytest.raises(InputError, match="expected rank 2"):
        unirt.Session(model("dynamic_mlp"), backend="fastest", input_shapes={"x": [1]})
    # input_shapes is a Session option of its own (the shapes a converting backend converts at): checked, then
    # harmless on a backend that converts nothing
    with unirt.Session(model("dynamic_mlp"), backend="onnxruntime", input_shapes={"x": [1, 8]}) as plain:
        assert plain.run(np.ones((5, 8), np.float32))["probs"].shape == (5, 3)
    with pytest.raises(UnsupportedOptionError, match=r"input_shapes\['x'\] must be a sequence of sizes"):
        unirt.Session(model("dynamic_mlp"), backend="onnxruntime", input_shapes={"x": "1x8"})


def test_a_backend_that_fails_is_reported_not_chosen(model):
    path = model("dynamic_mlp")
    if not {"onnxruntime", "openvino"} <= eligible(path):
        pytest.skip("needs onnxruntime and openvino installed")
    sess = unirt.Session(
        path,
        backend="fastest",
        backend_options={"openvino": {"no_such_option": 1}, "onnxruntime": {"enable_mem_pattern": False}},
    )
    assert sess.backend == "onnxruntime"
    assert sess.options.backend_options == {"enable_mem_pattern": False}  # the winner's own options
    failed = {t.backend: t for t in sess.selection.timings}["openvino"]
    assert failed.median_ms is None and "unknown backend option 'no_such_option'" in failed.error
    assert "failed: openvino: unknown backend option" in str(sess.selection)


def test_per_backend_options():
    assert options_for({"openvino": {"a": 1}, "onnxruntime": {"b": 2}}, "openvino") == {"a": 1}
    assert options_for({"openvino": {"a": 1}}, "onnxruntime") == {}
    assert options_for({"enable_mem_pattern": False}, "onnxruntime") == {"enable_mem_pattern": False}


def test_third_party_backends_are_timed_too(model, test_plugins):
    path = model("matmul_relu")
    explanation, runner = choose(unirt.open_model(path), "cpu", threads=1, budget_s=0.05)
    try:
        timed = {t.backend for t in explanation.timings}
        assert "reference" in timed and "broken" not in timed  # broken cannot import: skipped with its reason
        assert {c.backend: c for c in explanation.candidates}["broken"].eligible is False
        assert runner is not None and explanation.chosen.backend != "reference"  # a Python evaluator loses
    finally:
        if runner is not None:
            runner.close()


def test_nothing_can_run_it(tmp_path):
    import unirt.registry as registry
    from unirt.testing.tflite import build_tflite

    path = build_tflite("dynamic_mlp", tmp_path)
    readers = {c.backend for c in unirt.explain(path).candidates if c.eligible}
    if readers:
        explanation, runner = choose(unirt.open_model(path), "cuda")
        assert explanation.chosen is None and runner is None
        with pytest.raises(unirt.BackendUnavailableError, match="no installed backend can run this tflite model"):
            unirt.Session(path, backend="fastest", device="cuda")
    assert registry.installed_names()


def test_cli_explain_fastest(model, capsys):
    from unirt.cli import main

    path = str(model("dynamic_mlp"))
    assert main(["explain", path, "--fastest", "--threads", "1", "--shape", "x=4x8"]) == 0
    out = capsys.readouterr().out
    assert "backend='fastest': timed just now" in out and "ms median of" in out
    assert main(["explain", path, "--fastest", "--threads", "1", "--shape", "x=4x8"]) == 0
    assert "choice from the cache" in capsys.readouterr().out


def test_backends_that_convert_onnx_are_converted_and_timed(conv_model):
    """ncnn and MNN read their own formats: fastest converts the ONNX model for them (cached), as Session does."""
    path = conv_model("dynamic")
    converters = {"ncnn", "mnn"} & eligible(path)
    if not converters:
        pytest.skip("needs ncnn or mnn installed")
    sel = unirt.Session(path, backend="fastest", threads=1).selection
    timed = {t.backend: t for t in sel.timings}
    for name in converters:
        assert timed[name].error is None and timed[name].median_ms is not None, timed[name]
        assert timed[name].converted.startswith(f"converted to {name} first")
        assert f"(converted to {name} first" in str(sel)
    # a converting backend that wins runs the converted model, and says so
    winner = sorted(converters)[-1]
    others = {c.backend: {"no_such_option": 1} for c in sel.candidates if c.eligible and c.backend != winner}
    sess = unirt.Session(path, backend="fastest", threads=1, backend_options={winner: {}, **others})
    assert sess.backend == winner and sess.conversion is not None and sess.conversion.backend == winner
    assert sess.model.format.value == winner and sess.options.backend_options == {}
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    ref = unirt.Session(path, backend="onnxruntime").run(x)
    np.testing.assert_allclose(sess.run(x)["pooled"], ref["pooled"], rtol=1e-3, atol=1e-4)
    again = unirt.Session(path, backend="fastest", threads=1, backend_options={winner: {}, **others})
    assert again.selection.cached and again.backend == winner and again.conversion.cached


def test_explanation_states_the_precision(model):
    path = model("matmul_relu")
    assert "precision requested: fp16" in str(unirt.explain(path, precision="fp16"))
    assert "in force" not in str(unirt.explain(path))  # nothing loaded: only what was asked
    with pytest.raises(UnsupportedOptionError, match="precision must be one of"):
        unirt.explain(path, precision="fp8")
    sess = unirt.Session(path, backend="fastest", threads=1)
    assert all(t.precision == "fp32" for t in sess.selection.timings if t.error is None)
    assert f"in force on {sess.backend}: fp32" in str(sess.selection) and " in fp32" in str(sess.selection)
    auto = unirt.Session(path)
    assert auto.selection.precision_in_force == auto.precision == "fp32"
    assert f"precision requested: fp32; in force on {auto.backend}: fp32" in str(auto.selection)


def test_cli_explain_shows_the_precision(model, capsys):
    from unirt.cli import main

    assert main(["explain", str(model("matmul_relu")), "--precision", "fp16"]) == 0
    assert "precision requested: fp16" in capsys.readouterr().out
