"""The real models shipped inside the onnx wheel, with inputs and reference outputs."""

from __future__ import annotations

import glob
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .models import _onnx

__all__ = ["ConformanceCase", "conformance_cases", "assert_outputs_close"]


@dataclass
class ConformanceCase:
    """A model from the onnx wheel with inputs and reference outputs, in graph input/output order."""

    name: str
    model: Path
    inputs: list[np.ndarray] = field(repr=False)
    outputs: list[np.ndarray] = field(repr=False)
    rtol: float = 1e-3
    atol: float = 1e-5


def _load_tensor(path: str) -> np.ndarray:
    onnx, _, _, nh = _onnx()
    tensor = onnx.TensorProto()
    with open(path, "rb") as fh:
        tensor.ParseFromString(fh.read())
    return nh.to_array(tensor)


def _data_root() -> Path:
    onnx, *_ = _onnx()
    return Path(os.path.dirname(onnx.__file__)) / "backend" / "test" / "data"


def _light_cases(root: Path) -> Iterator[ConformanceCase]:
    onnx, T, _, _ = _onnx()
    for model_path in sorted(glob.glob(str(root / "light" / "*.onnx"))):
        model = onnx.load(model_path, load_external_data=False)
        inits = {i.name for i in model.graph.initializer}
        inputs = []
        for vi in model.graph.input:
            if vi.name in inits:
                continue
            # The onnx runner's own recipe for these models' reference outputs: arange / n, float32.
            shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
            n = int(np.prod(shape))
            inputs.append((np.arange(n).reshape(shape) / n).astype(np.float32))
        prefix = model_path[: -len(".onnx")]
        outputs = [_load_tensor(f"{prefix}_output_{i}.pb") for i in range(len(model.graph.output))]
        yield ConformanceCase(os.path.basename(prefix), Path(model_path), inputs, outputs, rtol=1e-3, atol=1e-5)


def _dir_cases(root: Path, group: str) -> Iterator[ConformanceCase]:
    for model_dir in sorted((root / group).glob("*/")):
        model_path = model_dir / "model.onnx"
        data = model_dir / "test_data_set_0"
        if not model_path.exists() or not data.is_dir():
            continue
        inputs = [_load_tensor(str(p)) for p in sorted(data.glob("input_*.pb"), key=_index)]
        outputs = [_load_tensor(str(p)) for p in sorted(data.glob("output_*.pb"), key=_index)]
        yield ConformanceCase(f"{group}/{model_dir.name}", model_path, inputs, outputs)


def _index(path: Path) -> int:
    return int(path.stem.rsplit("_", 1)[1])


def conformance_cases(
    groups: tuple[str, ...] = ("light", "simple", "pytorch-converted", "pytorch-operator"),
) -> list[ConformanceCase]:
    """Every model in the onnx wheel's test data that has inputs and reference outputs."""
    root = _data_root()
    cases: list[ConformanceCase] = []
    for group in groups:
        cases += list(_light_cases(root)) if group == "light" else list(_dir_cases(root, group))
    return cases


def assert_outputs_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str = "") -> None:
    """Shapes and dtypes equal, values within tolerance (exact for non-float types)."""
    actual = np.asarray(actual)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != expected {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != expected {expected.dtype}"
    if expected.dtype.kind in "fc":
        np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, err_msg=what)
    else:
        np.testing.assert_array_equal(actual, expected, err_msg=what)
