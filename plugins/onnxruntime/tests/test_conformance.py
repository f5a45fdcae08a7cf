"""The real models shipped inside the onnx wheel, run through unirt on onnxruntime, against their reference
outputs."""

from __future__ import annotations

import onnxruntime as ort
import pytest

import unirt
from unirt.testing import assert_outputs_close, conformance_cases

CASES = conformance_cases()


def test_the_onnx_wheel_ships_conformance_models():
    assert len(CASES) >= 100
    assert sum(c.name.startswith("light_") for c in CASES) == 9


def onnxruntime_refuses(case) -> str | None:
    """onnxruntime's own error for models it cannot load (old opsets, training ops, missing locales)."""
    try:
        ort.InferenceSession(str(case.model), providers=["CPUExecutionProvider"])
    except Exception as exc:
        return str(exc)
    return None


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_conformance(case):
    refused = onnxruntime_refuses(case)
    if refused is not None:
        # What unirt must do then: a ModelLoadError naming the file, carrying the engine's reason.
        with pytest.raises(unirt.ModelLoadError) as err:
            unirt.Session(case.model, backend="onnxruntime")
        assert str(case.model) in str(err.value) and "onnxruntime could not load" in str(err.value)
        return
    with unirt.Session(case.model, backend="onnxruntime", threads=1) as sess:
        assert len(sess.inputs) == len(case.inputs)
        feeds = {info.name: value for info, value in zip(sess.inputs, case.inputs)}
        outputs = sess.run(feeds)
        assert list(outputs) == [o.name for o in sess.outputs]
        for (name, got), expected in zip(outputs.items(), case.outputs):
            assert_outputs_close(got, expected, case.rtol, case.atol, f"{case.name}:{name}")
