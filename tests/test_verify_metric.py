"""The verification metric (`unirt.conversion.verify`): relative to the reference's own scale, absolute below
SCALE_FLOOR, integers exact; a good conversion of a near-zero-output model passes, wrong ones still fail; the
report says what it verified on."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import unirt
from unirt import ConversionError, registry
from unirt.conversion.verify import SCALE_FLOOR, TOLERANCES, compare, describe_sets


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UNIRT_CACHE_DIR", str(tmp_path / "cache"))


def near_zero_detector(path, bias: float = -16.0):
    """A score map like a text detector's on random data: sigmoid(conv(x) - 16), ~1e-7 everywhere."""
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((8, 3, 3, 3)) / 3).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1]), h.make_node("Sigmoid", ["c"], ["y"])],
        "near_zero",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 32, 32])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 8, 32, 32])],
        [nh.from_array(w, "W"), nh.from_array(np.full(8, bias, np.float32), "B")],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def test_near_zero_output_is_judged_on_absolute_error():
    rng = np.random.default_rng(1)
    ref = np.abs(rng.standard_normal(4096)) * 1e-7
    good = ref * (1 + 2e-3 * rng.standard_normal(4096))  # relative noise 2e-3: what engines give on such tails
    (e,) = compare([{"y": good}], [{"y": ref}])
    assert e.rel_l2 > TOLERANCES["fp32"]  # the plain relative L2 rejects it
    assert e.near_zero and e.error < 1e-6 and e.within(TOLERANCES["fp32"])
    assert "near-zero output" in e.describe()
    # a wrong answer on a near-zero output still fails: off by its own size, or by an offset above the floor
    for bad in (np.zeros_like(ref) + 1e-4, ref + 1e-5 * rng.standard_normal(4096)):
        (e,) = compare([{"y": bad}], [{"y": ref}])
        assert not e.within(TOLERANCES["fp32"]), e


def test_ordinary_outputs_keep_the_relative_l2_and_integers_stay_exact():
    rng = np.random.default_rng(2)
    ref = rng.standard_normal(1000).astype(np.float32)
    (e,) = compare([{"y": ref * 1.002}], [{"y": ref}])  # rms 1 >> floor: error is the relative L2
    assert not e.near_zero and e.error == pytest.approx(e.rel_l2) == pytest.approx(2e-3, rel=1e-3)
    assert not e.within(1e-3) and e.within(1e-2)
    labels = np.arange(100, dtype=np.int64)
    off = labels.copy()
    off[7] += 1
    (e,) = compare([{"l": off}], [{"l": labels}])
    assert e.exact and not e.within(1.0)
    (e,) = compare([{"l": labels}], [{"l": labels}])
    assert e.within(0.0)
    # worst over the sets; a shape mismatch is infinitely wrong
    (e,) = compare([{"y": ref}, {"y": ref[:10]}], [{"y": ref}, {"y": ref[:11]}])
    assert e.error == float("inf") and "shape" in e.note


def test_scale_floor_boundary_is_continuous():
    ref = np.full(100, SCALE_FLOOR)
    (e,) = compare([{"y": ref * 1.0005}], [{"y": ref}])
    assert e.error == pytest.approx(e.rel_l2) == pytest.approx(5e-4)


def test_describe_sets_says_what_data():
    sets = [{"x": np.zeros((1, 3, 224, 224))}] * 2 + [{"x": np.zeros((2, 3, 224, 224))}]
    assert describe_sets(sets) == "random inputs at x: 1x3x224x224; x: 2x3x224x224, 3 sets"


def _usable(name):
    return name in registry.installed_names() and registry.availability(name).available


@pytest.mark.skipif(not _usable("mnn"), reason="needs the mnn backend")
def test_a_good_conversion_of_a_near_zero_model_passes_and_says_what_it_ran_on(tmp_path):
    """ONNX Runtime and MNN differ by 1.8e-2 relative L2 on this sigmoid tail (1e-7 in value): that used to be a
    ConversionError at fp32."""
    src = near_zero_detector(tmp_path / "nz.onnx")
    conv = unirt.convert(src, to="mnn")
    (e,) = conv.errors
    assert e.near_zero and conv.within_tolerance and conv.max_error == e.error < TOLERANCES["fp32"]
    assert conv.verified_on == "random inputs at x: 1x3x32x32, 2 sets"
    assert "on random inputs at x: 1x3x32x32, 2 sets" in str(conv) and "near-zero output" in str(conv)
    again = unirt.convert(src, to="mnn")  # the cached record keeps it
    assert again.cached and again.verified_on == conv.verified_on and again.errors == conv.errors


@pytest.mark.skipif(not _usable("mnn"), reason="needs the mnn backend")
def test_a_wrong_conversion_still_fails(tmp_path):
    """fp16 weights and arithmetic asked of MNN with an fp32 tolerance: a real error, reported as such."""
    src = tmp_path / "cnn.onnx"
    unirt.testing.models.batched_cnn(src, batch=1)
    with pytest.raises(
        ConversionError, match="beyond the fp16 tolerance 1e-09: .*; verified on random inputs at x: 1x3x32x32, 2 sets"
    ):
        unirt.convert(src, to="mnn", precision="fp16", tolerance=1e-9)
