"""backend="auto" follows a stored measurement of the model (made by backend="fastest", `unirt explain --fastest`
or `unirt bench`) when one exists for these contents, machine and options; else the hardware table, and the
explanation says which."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import unirt
from unirt import fastest, model_hash
from unirt.cli import main
from unirt.selection import DEFAULT_ORDER, rank
from unirt.testing import models
from unirt.tools.bench import bench


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("UNIRT_BACKEND_ORDER", raising=False)
    return tmp_path / "cache" / "fastest"


@pytest.fixture
def mlp(model, tmp_path):
    """A private copy of matmul_relu (tests below rewrite it)."""
    path = tmp_path / "mlp.onnx"
    shutil.copy(model("matmul_relu"), path)
    return path


def honest_order(sel) -> list[str]:
    """The order auto follows: fastest first, but a near tie (`fastest.TIE`) goes to the table's first."""
    ok = [t for t in sel.timings if t.error is None and t.median_ms is not None and t.precision == "fp32"]
    first = fastest.decide(ok, [c.backend for c in sel.candidates])  # a FastestExplanation's are the table's order
    return [t.backend for t in sorted(ok, key=lambda t: (t.backend != first, t.median_ms))]


def test_auto_follows_the_measurement_fastest_stored(mlp):
    timed = unirt.Session(mlp, backend="fastest", threads=1).selection
    assert not timed.cached
    order = honest_order(timed)
    assert len(order) >= 1
    sess = unirt.Session(mlp, threads=1)  # backend="auto"
    sel = sess.selection
    assert sess.backend == order[0] == timed.chosen.backend
    assert [c.backend for c in sel.candidates][: len(order)] == order  # measured backends first, fastest first
    assert sel.measurement is not None and sel.measurement.source == "backend='fastest'"
    text = str(sel)
    assert "order: measured (backend='fastest')" in text and "order measured: measured by backend='fastest' at" in text
    for t in timed.timings:
        if t.median_ms is not None:
            assert f"{t.backend} {t.median_ms:.3f} ms" in text
    x = np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)
    ref = unirt.Session(mlp, backend="onnxruntime").run(x)["y"]
    np.testing.assert_allclose(sess.run(x)["y"], ref, rtol=1e-4, atol=1e-5)
    # unirt.explain and `unirt explain` say the same for the same options
    assert unirt.explain(mlp, threads=1).chosen.backend == order[0]


def test_explain_cli_says_where_the_order_came_from(mlp, capsys):
    assert main(["explain", str(mlp), "--threads", "1"]) == 0
    assert "no measurement of this model" in capsys.readouterr().out
    assert main(["explain", str(mlp), "--threads", "1", "--fastest"]) == 0
    capsys.readouterr()
    assert main(["explain", str(mlp), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "order: measured (backend='fastest')" in out and "order measured:" in out


def test_no_measurement_means_the_table_order_and_says_so(mlp):
    sel = unirt.Session(mlp).selection
    assert sel.measurement is None
    assert sel.order_source.startswith(f"default for {sel.hardware_class}") and "no measurement" in sel.order_source
    eligible = [c.backend for c in sel.candidates if c.eligible]
    table = [b for b in DEFAULT_ORDER[sel.hardware_class] if b in eligible]
    assert sel.chosen.backend == table[0]
    assert "no measurement of this model" in str(sel)


def test_a_measurement_for_other_threads_precision_or_shapes_does_not_apply(mlp, model):
    unirt.Session(mlp, backend="fastest", threads=1)
    assert unirt.explain(mlp, threads=1).measurement is not None
    for other in (
        unirt.explain(mlp, threads=2),
        unirt.explain(mlp),
        unirt.explain(mlp, threads=1, precision="fp16"),
        unirt.Session(mlp, threads=2).selection,
    ):
        assert other.measurement is None and "no measurement" in other.order_source
    dyn = model("dynamic_mlp")
    unirt.Session(dyn, backend="fastest", threads=1, input_shapes={"x": [32, 8]})
    assert unirt.Session(dyn, threads=1).selection.measurement is None  # measured at batch 32, not the default


def test_a_stale_measurement_is_ignored(mlp):
    unirt.Session(mlp, backend="fastest", threads=1)
    assert unirt.explain(mlp, threads=1).measurement is not None
    models.matmul_relu(mlp, seed=1)  # same path and shapes, other weights: another model
    sel = unirt.Session(mlp, threads=1).selection
    assert sel.measurement is None and "no measurement" in sel.order_source


def test_a_backend_that_failed_or_ran_in_another_precision_never_wins(mlp, cache):
    timed = unirt.Session(mlp, backend="fastest", threads=1).selection
    order = honest_order(timed)
    if len(order) < 3:
        pytest.skip("needs three backends that run the model")
    path = next(cache.glob("*.json"))
    data = json.loads(path.read_text())
    by_name = {t["backend"]: t for t in data["timings"]}
    # as if the fastest one's conversion had failed verification, and the second had run in fp16
    by_name[order[0]].update(median_ms=None, runs=0, error="ncnn: conversion failed verification")
    by_name[order[1]]["precision"] = "fp16"
    path.write_text(json.dumps(data))
    sel = unirt.Session(mlp, threads=1).selection
    assert sel.chosen.backend == order[2]
    assert sel.measurement is not None
    names = [c.backend for c in sel.candidates]
    assert names.index(order[2]) < names.index(order[0]) and names.index(order[2]) < names.index(order[1])


def test_unirt_bench_stores_its_timings_for_auto_and_fastest(mlp):
    partial = bench(mlp, ["onnxruntime"], threads=1, duration=0.2, warmup=1)
    assert not partial.failed and unirt.explain(mlp, threads=1).measurement is None  # some backends: no answer
    report = bench(mlp, threads=1, duration=0.2, warmup=1)
    sel = unirt.explain(mlp, threads=1)
    assert sel.measurement is not None and sel.measurement.source == "unirt bench"
    p50 = {r.backend: round(r.latency_ms.p50, 4) for r in report.results if r.latency_ms is not None}
    near = [b for b in p50 if p50[b] <= min(p50.values()) * (1 + fastest.TIE)]  # a near tie: the table's first
    table = [c.backend for c in rank(unirt.open_model(mlp)).candidates]
    assert sel.chosen.backend == min(near, key=table.index)
    # backend="fastest" reuses it rather than timing again
    again = unirt.Session(mlp, backend="fastest", threads=1)
    assert again.selection.cached and again.backend == sel.chosen.backend
    # a bench at another batch or concurrency is another question
    fastest.clear_cache()
    bench(mlp, threads=1, duration=0.1, warmup=1, concurrency=2)
    assert unirt.explain(mlp, threads=1).measurement is None


def test_unirt_backend_order_still_wins_over_a_measurement(mlp, monkeypatch):
    unirt.Session(mlp, backend="fastest", threads=1)
    eligible = [c.backend for c in unirt.explain(mlp, threads=1).candidates if c.eligible]
    last = eligible[-1]
    monkeypatch.setenv("UNIRT_BACKEND_ORDER", last)
    sel = unirt.explain(mlp, threads=1)
    assert sel.chosen.backend == last and sel.measurement is None


def test_a_large_models_hash_is_kept_on_disk_and_follows_its_content(tmp_path, cache):
    path = models.matmul_relu(tmp_path / "big.onnx", n=1500)  # 9 MB: its hash is kept for the next process
    first = unirt.open_model(path).content_hash
    assert first == model_hash.hash_content(unirt.open_model(path))
    model_hash._memo.clear()  # as a new process
    assert len(list((cache.parent / "hashes").glob("*.txt"))) == 1
    assert unirt.open_model(path).content_hash == first
    models.matmul_relu(path, n=1500, seed=1)  # same size, new content
    model_hash._memo.clear()
    second = unirt.open_model(path).content_hash
    assert second != first and second == model_hash.hash_content(unirt.open_model(path))
