"""Test models and conformance cases shared by unirt's tests and every plugin's tests.

Builders use `onnx.helper` (onnx is a test dependency, imported here lazily, never by `import unirt`).
`conformance_cases()` yields the real models shipped inside the onnx wheel with their reference outputs.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = ["ConformanceCase", "conformance_cases", "build", "MODEL_BUILDERS", "assert_outputs_close"]


def _onnx():
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    return onnx, TensorProto, helper, numpy_helper


def _save(model, path: Path, opset: int = 17) -> Path:
    onnx, _, helper, _ = _onnx()
    model.opset_import[0].version = opset
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def matmul_relu(path: Path, n: int = 64, seed: int = 0) -> Path:
    """y = relu(x @ W): x float32[n, n] (static)."""
    onnx, T, h, nh = _onnx()
    w = (np.random.default_rng(seed).standard_normal((n, n)) / np.sqrt(n)).astype(np.float32)
    graph = h.make_graph([h.make_node("MatMul", ["x", "W"], ["xw"]), h.make_node("Relu", ["xw"], ["y"])],
                         "matmul_relu", [h.make_tensor_value_info("x", T.FLOAT, [n, n])],
                         [h.make_tensor_value_info("y", T.FLOAT, [n, n])], [nh.from_array(w, "W")])
    return _save(h.make_model(graph), path)


def dynamic_mlp(path: Path, features: int = 8, classes: int = 3, seed: int = 0) -> Path:
    """logits = x @ W + b, probs = softmax(logits): x float32[N, features] with a symbolic batch dim 'N'."""
    onnx, T, h, nh = _onnx()
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "b"], ["logits"]), h.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "dynamic_mlp", [h.make_tensor_value_info("x", T.FLOAT, ["N", features])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", classes]),
         h.make_tensor_value_info("probs", T.FLOAT, ["N", classes])],
        [nh.from_array(w, "W"), nh.from_array(b, "b")])
    return _save(h.make_model(graph), path)


def multi_io(path: Path) -> Path:
    """Several inputs of several dtypes, a scalar input and several outputs.

    a float32[N, 4], b float32[N, 4], idx int64[K], scale float32 scalar ->
    sum = (a + b) * scale  float32[N, 4];  picked = Gather(a, idx) float32[K, 4];  count = Size(idx) int64 scalar;
    mask = a > b  bool[N, 4]
    """
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Add", ["a", "b"], ["ab"]), h.make_node("Mul", ["ab", "scale"], ["sum"]),
         h.make_node("Gather", ["a", "idx"], ["picked"], axis=0), h.make_node("Size", ["idx"], ["count"]),
         h.make_node("Greater", ["a", "b"], ["mask"])],
        "multi_io",
        [h.make_tensor_value_info("a", T.FLOAT, ["N", 4]), h.make_tensor_value_info("b", T.FLOAT, ["N", 4]),
         h.make_tensor_value_info("idx", T.INT64, ["K"]), h.make_tensor_value_info("scale", T.FLOAT, [])],
        [h.make_tensor_value_info("sum", T.FLOAT, ["N", 4]), h.make_tensor_value_info("picked", T.FLOAT, ["K", 4]),
         h.make_tensor_value_info("count", T.INT64, []), h.make_tensor_value_info("mask", T.BOOL, ["N", 4])])
    return _save(h.make_model(graph), path)


def int_ops(path: Path) -> Path:
    """Integer inputs: y = (a * b) int32[2, 3] (static); z = Cast(a, float32) float32[2, 3]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Mul", ["a", "b"], ["y"]), h.make_node("Cast", ["a"], ["z"], to=T.FLOAT)],
        "int_ops", [h.make_tensor_value_info("a", T.INT32, [2, 3]), h.make_tensor_value_info("b", T.INT32, [2, 3])],
        [h.make_tensor_value_info("y", T.INT32, [2, 3]), h.make_tensor_value_info("z", T.FLOAT, [2, 3])])
    return _save(h.make_model(graph), path)


def unknown_dims(path: Path) -> Path:
    """A dim with neither a value nor a name (unknown), and a 4-d NCHW input: y = x * 2 float32[?, 3, H, W]."""
    onnx, T, h, nh = _onnx()
    x = h.make_tensor_value_info("x", T.FLOAT, [None, 3, "H", "W"])
    graph = h.make_graph([h.make_node("Mul", ["x", "two"], ["y"])], "unknown_dims", [x],
                         [h.make_tensor_value_info("y", T.FLOAT, [None, 3, "H", "W"])],
                         [nh.from_array(np.array(2.0, np.float32), "two")])
    return _save(h.make_model(graph), path)


def string_concat(path: Path) -> Path:
    """String tensors: y = Identity(s) string[N]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph([h.make_node("Identity", ["s"], ["y"])], "strings",
                         [h.make_tensor_value_info("s", T.STRING, ["N"])],
                         [h.make_tensor_value_info("y", T.STRING, ["N"])])
    return _save(h.make_model(graph), path)


MODEL_BUILDERS = {
    "matmul_relu": matmul_relu,
    "dynamic_mlp": dynamic_mlp,
    "multi_io": multi_io,
    "int_ops": int_ops,
    "unknown_dims": unknown_dims,
    "strings": string_concat,
}


def build(name: str, directory: Path | str) -> Path:
    """Build test model `name` as `<directory>/<name>.onnx` (once) and return its path."""
    path = Path(directory) / f"{name}.onnx"
    if not path.exists():
        MODEL_BUILDERS[name](path)
    return path


# --- the onnx wheel's real models ------------------------------------------------------------------------------


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


def conformance_cases(groups: tuple[str, ...] = ("light", "simple", "pytorch-converted", "pytorch-operator"),
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
