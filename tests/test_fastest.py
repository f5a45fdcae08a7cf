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


def test_candidates_are_timed_in_interleaved_rounds(model, monkeypatch, caplog):
    """Each candidate's blocks alternate with the others' (round after round, the order rotating), instead of
    each being timed in one stretch of its own. Drops are switched off here so every round has every candidate."""
    import logging

    from unirt import fastest

    path = model("matmul_relu")
    if not {"onnxruntime", "openvino"} <= eligible(path):
        pytest.skip("needs onnxruntime and openvino installed")
    monkeypatch.setattr(fastest, "DROP_ON_SIGHT", 1e9)
    monkeypatch.setattr(fastest, "DROP_MARGIN", 1e9)
    caplog.set_level(logging.DEBUG, logger="unirt.fastest")
    explanation, runner = choose(unirt.open_model(path), "cpu", threads=1)
    runner.close()
    timed = [t.backend for t in explanation.timings if t.error is None]
    blocks = [
        (int(r.args[0]), r.args[1]) for r in caplog.records if r.msg.startswith("fastest: round")
    ]  # (round, backend), in the order they ran
    rounds: dict[int, list[str]] = {}
    for r, name in blocks:
        rounds.setdefault(r, []).append(name)
    assert rounds[0] == timed  # each timed once as it is loaded, in the table's order
    assert len(rounds) >= fastest.MIN_BLOCKS
    for r in range(1, len(rounds)):
        k = r % len(timed)
        assert rounds[r] == timed[k:] + timed[:k]  # every candidate once per round, the order rotated
    ort = [i for i, (_, name) in enumerate(blocks) if name == "onnxruntime"]
    ov = [i for i, (_, name) in enumerate(blocks) if name == "openvino"]
    assert ov[0] < ort[1] and ort[1] < ov[-1]  # interleaved, not one after the other
    for t in explanation.timings:
        if t.error is None:
            assert t.blocks == len(rounds) and t.runs >= t.blocks and t.dropped is None


def test_a_near_tie_goes_to_the_table_order(model):
    """Medians within TIE of the fastest are a tie, decided by the hardware table's order, for `fastest` and
    for `auto` alike, and the explanation says so; beyond TIE, the smallest median wins."""
    from unirt.fastest import TIE, Timing, decide, record

    assert (
        decide(
            [Timing("openvino", "cpu", 1.0, 10), Timing("onnxruntime", "cpu", 1.02, 10)], ["onnxruntime", "openvino"]
        )
        == "onnxruntime"
    )
    slower = 1.0 * (1 + TIE) * 1.01
    assert (
        decide(
            [Timing("openvino", "cpu", 1.0, 10), Timing("onnxruntime", "cpu", slower, 10)], ["onnxruntime", "openvino"]
        )
        == "openvino"
    )
    assert decide([Timing("openvino", "cpu", error="failed")], ["openvino"]) is None

    path = model("matmul_relu")
    table = [c.backend for c in unirt.explain(path, threads=1).candidates if c.eligible]
    if len(table) < 2:
        pytest.skip("needs two backends that run the model")
    first, second = table[0], table[1]
    # as a measurement made elsewhere (`unirt bench`) would store it: the table's second 1% faster than its first
    timings = [Timing(first, "cpu", 1.01, 50, precision="fp32"), Timing(second, "cpu", 1.0, 50, precision="fp32")]
    timings += [Timing(b, "cpu", 5.0, 50, precision="fp32") for b in table[2:]]
    assert record(unirt.open_model(path), timings, threads=1) is not None
    auto = unirt.explain(path, threads=1)
    assert auto.chosen.backend == first and auto.measurement is not None
    assert f"near tie: {first} 1.010 ms is within 3% (the noise of the measurement) of {second} 1.000 ms" in str(auto)
    sess = unirt.Session(path, backend="fastest", threads=1)
    assert sess.selection.cached and sess.backend == first
    assert f"-> near tie: {first} 1.010 ms" in str(sess.selection)


def test_every_loser_is_closed_and_the_winner_returned_open(model, monkeypatch):
    """Real engines: every runner `choose` loads is closed, but the winner's, which it returns."""
    from unirt import fastest

    path = model("matmul_relu")
    loaded: list = []
    closed: list = []
    real_load = fastest.load_runner

    def load_and_watch(backend, model_file, options):
        runner = real_load(backend, model_file, options)
        close = runner.close

        def watched_close():
            closed.append(runner)
            close()

        runner.close = watched_close
        loaded.append(runner)
        return runner

    monkeypatch.setattr(fastest, "load_runner", load_and_watch)
    explanation, winner = choose(unirt.open_model(path), "cpu", threads=1, budget_s=0.1)
    timed = [t for t in explanation.timings if t.error is None]
    assert winner is not None and len(loaded) >= len(timed) >= 1
    assert winner in loaded and winner not in closed
    assert sorted(map(id, closed)) == sorted(id(r) for r in loaded if r is not winner)  # each once
    assert np.isfinite(winner.run(sample_inputs(winner.inputs), [o.name for o in winner.outputs])[0]).all()
    winner.close()
