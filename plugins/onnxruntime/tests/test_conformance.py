"""ONNX Runtime against unirt's conformance suite (unirt.testing.conformance): the built models, the onnx wheel's
models against their stored reference outputs, and random-weight copies of the light models."""

from __future__ import annotations

import pytest

import unirt
from unirt.testing import conformance_cases
from unirt.testing.conformance import BackendConformance, wheel_cases


def test_the_onnx_wheel_ships_conformance_models():
    assert len(wheel_cases()) >= 100
    assert sum(c.name.startswith("light_") for c in conformance_cases(("light",))) == 9


def test_a_model_onnxruntime_refuses_is_a_model_load_error():
    """For models onnxruntime cannot load (old opsets, training ops), unirt names the file and carries the reason."""
    refused = [c for c in wheel_cases() if c.name == "simple/test_gradient_of_add"]
    if not refused:
        pytest.skip("this onnx wheel has no test_gradient_of_add model")
    with pytest.raises(unirt.ModelLoadError) as err:
        unirt.Session(refused[0].model, backend="onnxruntime")
    assert str(refused[0].model) in str(err.value) and "onnxruntime could not load" in str(err.value)


class TestOnnxRuntimeConformance(BackendConformance):
    backend = "onnxruntime"
