"""Test models built with `onnx.helper` (onnx is a test dependency, imported lazily, never by `import unirt`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = [
    "MODEL_BUILDERS",
    "build",
    "matmul_relu",
    "dynamic_mlp",
    "multi_io",
    "int_ops",
    "unknown_dims",
    "string_concat",
    "byte_transformer",
    "batchnorm_default_epsilon",
    "softmax_coerced",
    "batched_cnn",
    "with_external_data",
]


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
    graph = h.make_graph(
        [h.make_node("MatMul", ["x", "W"], ["xw"]), h.make_node("Relu", ["xw"], ["y"])],
        "matmul_relu",
        [h.make_tensor_value_info("x", T.FLOAT, [n, n])],
        [h.make_tensor_value_info("y", T.FLOAT, [n, n])],
        [nh.from_array(w, "W")],
    )
    return _save(h.make_model(graph), path)


def dynamic_mlp(path: Path, features: int = 8, classes: int = 3, seed: int = 0) -> Path:
    """logits = x @ W + b, probs = softmax(logits): x float32[N, features] with a symbolic batch dim 'N'."""
    onnx, T, h, nh = _onnx()
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((features, classes)).astype(np.float32)
    b = rng.standard_normal(classes).astype(np.float32)
    graph = h.make_graph(
        [h.make_node("Gemm", ["x", "W", "b"], ["logits"]), h.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "dynamic_mlp",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", features])],
        [
            h.make_tensor_value_info("logits", T.FLOAT, ["N", classes]),
            h.make_tensor_value_info("probs", T.FLOAT, ["N", classes]),
        ],
        [nh.from_array(w, "W"), nh.from_array(b, "b")],
    )
    return _save(h.make_model(graph), path)


def multi_io(path: Path) -> Path:
    """Several inputs of several dtypes, a scalar input and several outputs.

    a float32[N, 4], b float32[N, 4], idx int64[K], scale float32 scalar ->
    sum = (a + b) * scale  float32[N, 4];  picked = Gather(a, idx) float32[K, 4];  count = Size(idx) int64 scalar;
    mask = a > b  bool[N, 4]
    """
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [
            h.make_node("Add", ["a", "b"], ["ab"]),
            h.make_node("Mul", ["ab", "scale"], ["sum"]),
            h.make_node("Gather", ["a", "idx"], ["picked"], axis=0),
            h.make_node("Size", ["idx"], ["count"]),
            h.make_node("Greater", ["a", "b"], ["mask"]),
        ],
        "multi_io",
        [
            h.make_tensor_value_info("a", T.FLOAT, ["N", 4]),
            h.make_tensor_value_info("b", T.FLOAT, ["N", 4]),
            h.make_tensor_value_info("idx", T.INT64, ["K"]),
            h.make_tensor_value_info("scale", T.FLOAT, []),
        ],
        [
            h.make_tensor_value_info("sum", T.FLOAT, ["N", 4]),
            h.make_tensor_value_info("picked", T.FLOAT, ["K", 4]),
            h.make_tensor_value_info("count", T.INT64, []),
            h.make_tensor_value_info("mask", T.BOOL, ["N", 4]),
        ],
    )
    return _save(h.make_model(graph), path)


def int_ops(path: Path) -> Path:
    """Integer inputs: y = (a * b) int32[2, 3] (static); z = Cast(a, float32) float32[2, 3]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Mul", ["a", "b"], ["y"]), h.make_node("Cast", ["a"], ["z"], to=T.FLOAT)],
        "int_ops",
        [h.make_tensor_value_info("a", T.INT32, [2, 3]), h.make_tensor_value_info("b", T.INT32, [2, 3])],
        [h.make_tensor_value_info("y", T.INT32, [2, 3]), h.make_tensor_value_info("z", T.FLOAT, [2, 3])],
    )
    return _save(h.make_model(graph), path)


def unknown_dims(path: Path) -> Path:
    """A dim with neither a value nor a name (unknown), and a 4-d NCHW input: y = x * 2 float32[?, 3, H, W]."""
    onnx, T, h, nh = _onnx()
    x = h.make_tensor_value_info("x", T.FLOAT, [None, 3, "H", "W"])
    graph = h.make_graph(
        [h.make_node("Mul", ["x", "two"], ["y"])],
        "unknown_dims",
        [x],
        [h.make_tensor_value_info("y", T.FLOAT, [None, 3, "H", "W"])],
        [nh.from_array(np.array(2.0, np.float32), "two")],
    )
    return _save(h.make_model(graph), path)


def string_concat(path: Path) -> Path:
    """String tensors: y = Identity(s) string[N]."""
    onnx, T, h, nh = _onnx()
    graph = h.make_graph(
        [h.make_node("Identity", ["s"], ["y"])],
        "strings",
        [h.make_tensor_value_info("s", T.STRING, ["N"])],
        [h.make_tensor_value_info("y", T.STRING, ["N"])],
    )
    return _save(h.make_model(graph), path)


def batched_cnn(path: Path, batch: int | str = "N", channels: int = 16, size: int | None = 32, seed: int = 0) -> Path:
    """A small CNN whose rows are independent: x float32[batch, 3, size, size] ->
    features = relu(conv3x3(x)) float32[batch, channels, size, size], pooled = GlobalAveragePool float32[batch,
    channels, 1, 1]. `batch` is a fixed size (a static-batch model) or a dim name (a dynamic one); `size=None`
    makes the spatial dims dynamic ("H", "W")."""
    onnx, T, h, nh = _onnx()
    hw = [size, size] if size is not None else ["H", "W"]
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((channels, 3, 3, 3)) / 5).astype(np.float32)
    b = rng.standard_normal(channels).astype(np.float32) / 10
    graph = h.make_graph(
        [
            h.make_node("Conv", ["x", "W", "B"], ["conv"], pads=[1, 1, 1, 1]),
            h.make_node("Relu", ["conv"], ["features"]),
            h.make_node("GlobalAveragePool", ["features"], ["pooled"]),
        ],
        "batched_cnn",
        [h.make_tensor_value_info("x", T.FLOAT, [batch, 3, *hw])],
        [
            h.make_tensor_value_info("features", T.FLOAT, [batch, channels, *hw]),
            h.make_tensor_value_info("pooled", T.FLOAT, [batch, channels, 1, 1]),
        ],
        [nh.from_array(w, "W"), nh.from_array(b, "B")],
    )
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


def byte_transformer(
    path: Path, seq: int = 16, dim: int = 32, heads: int = 2, classes: int = 4, seed: int = 0, opset: int = 17
) -> Path:
    """A one-block transformer classifying byte strings: tokens int64[N, seq] -> logits float32[N, classes].

    Embedding (Gather) + positions, LayerNormalization, multi-head self-attention (MatMul, Softmax), GELU written
    with Erf as exporters write it, mean pooling, a linear head: the shape of the byte classifiers that
    converters get subtly wrong.
    """
    onnx, T, h, nh = _onnx()
    rng = np.random.default_rng(seed)
    hd = dim // heads

    def w(*shape, scale=None):
        return (rng.standard_normal(shape) * (scale or 1 / np.sqrt(shape[0]))).astype(np.float32)

    inits = {
        "emb": w(256, dim, scale=0.5),
        "pos": w(seq, dim, scale=0.1),
        "ln1_g": 1 + w(dim, scale=0.1),
        "ln1_b": w(dim, scale=0.1),
        "wq": w(dim, dim),
        "wk": w(dim, dim),
        "wv": w(dim, dim),
        "wo": w(dim, dim),
        "ln2_g": 1 + w(dim, scale=0.1),
        "ln2_b": w(dim, scale=0.1),
        "w1": w(dim, 4 * dim),
        "b1": w(4 * dim, scale=0.1),
        "w2": w(4 * dim, dim),
        "b2": w(dim, scale=0.1),
        "wc": w(dim, classes),
        "bc": w(classes, scale=0.1),
        "heads_shape": np.array([0, seq, heads, hd], np.int64),
        "merge_shape": np.array([0, seq, dim], np.int64),
        "scale": np.array(1 / np.sqrt(hd), np.float32),
        "sqrt2": np.array(np.sqrt(2.0), np.float32),
        "one": np.array(1.0, np.float32),
        "half": np.array(0.5, np.float32),
    }
    n = h.make_node
    nodes = [
        n("Gather", ["emb", "tokens"], ["e"], axis=0),
        n("Add", ["e", "pos"], ["x0"]),
        n("LayerNormalization", ["x0", "ln1_g", "ln1_b"], ["x1"], axis=-1, epsilon=1e-5),
    ]
    for name in ("q", "k", "v"):
        nodes += [
            n("MatMul", ["x1", f"w{name}"], [f"{name}2"]),
            n("Reshape", [f"{name}2", "heads_shape"], [f"{name}4"]),
            n("Transpose", [f"{name}4"], [f"{name}h"], perm=[0, 2, 1, 3]),
        ]
    nodes += [
        n("Transpose", ["kh"], ["kt"], perm=[0, 1, 3, 2]),
        n("MatMul", ["qh", "kt"], ["s0"]),
        n("Mul", ["s0", "scale"], ["s1"]),
        n("Softmax", ["s1"], ["p"], axis=-1),
        n("MatMul", ["p", "vh"], ["a0"]),
        n("Transpose", ["a0"], ["a1"], perm=[0, 2, 1, 3]),
        n("Reshape", ["a1", "merge_shape"], ["a2"]),
        n("MatMul", ["a2", "wo"], ["a3"]),
        n("Add", ["x0", "a3"], ["r1"]),
        n("LayerNormalization", ["r1", "ln2_g", "ln2_b"], ["x2"], axis=-1, epsilon=1e-5),
        n("MatMul", ["x2", "w1"], ["f0"]),
        n("Add", ["f0", "b1"], ["f1"]),
        # GELU as torch exports it: 0.5 * x * (1 + erf(x / sqrt(2)))
        n("Div", ["f1", "sqrt2"], ["g0"]),
        n("Erf", ["g0"], ["g1"]),
        n("Add", ["g1", "one"], ["g2"]),
        n("Mul", ["f1", "g2"], ["g3"]),
        n("Mul", ["g3", "half"], ["g4"]),
        n("MatMul", ["g4", "w2"], ["f2"]),
        n("Add", ["f2", "b2"], ["f3"]),
        n("Add", ["r1", "f3"], ["r2"]),
        n("ReduceMean", ["r2"], ["pooled"], axes=[1], keepdims=0),
        n("MatMul", ["pooled", "wc"], ["c0"]),
        n("Add", ["c0", "bc"], ["logits"]),
    ]
    graph = h.make_graph(
        nodes,
        "byte_transformer",
        [h.make_tensor_value_info("tokens", T.INT64, ["N", seq])],
        [h.make_tensor_value_info("logits", T.FLOAT, ["N", classes])],
        [nh.from_array(v, k) for k, v in inits.items()],
    )
    return _save(h.make_model(graph), path, opset=opset)


def batchnorm_default_epsilon(path: Path, channels: int = 8, seed: int = 0) -> Path:
    """y = BatchNormalization(x) with no epsilon attribute (ONNX default 1e-5) and variances near 1e-5, so a
    converter that drops the default epsilon is far off: x float32[N, C, 4, 4]."""
    onnx, T, h, nh = _onnx()
    rng = np.random.default_rng(seed)
    c = channels
    inits = [
        nh.from_array((rng.random(c) + 0.5).astype(np.float32), "scale"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), "bias"),
        nh.from_array(rng.standard_normal(c).astype(np.float32), "mean"),
        nh.from_array((rng.random(c) * 1e-5).astype(np.float32), "var"),
    ]
    graph = h.make_graph(
        [h.make_node("BatchNormalization", ["x", "scale", "bias", "mean", "var"], ["y"])],
        "bn",
        [h.make_tensor_value_info("x", T.FLOAT, ["N", c, 4, 4])],
        [h.make_tensor_value_info("y", T.FLOAT, ["N", c, 4, 4])],
        inits,
    )
    return _save(h.make_model(graph), path, opset=13)


def softmax_coerced(path: Path, axis: int | None = None, seed: int = 0) -> Path:
    """Opset-11 Softmax on a 4-D tensor, `axis` left out (default 1) or given: ONNX coerces the input to 2-D at
    `axis`, which converters that apply it on one axis get wrong. x float32[1, 3, 4, 5] -> y = softmax(conv(x))."""
    onnx, T, h, nh = _onnx()
    w = (np.random.default_rng(seed).standard_normal((6, 3, 1, 1))).astype(np.float32)
    attrs = {} if axis is None else {"axis": axis}
    graph = h.make_graph(
        [h.make_node("Conv", ["x", "w"], ["c"]), h.make_node("Softmax", ["c"], ["y"], **attrs)],
        "softmax_coerced",
        [h.make_tensor_value_info("x", T.FLOAT, [1, 3, 4, 5])],
        [h.make_tensor_value_info("y", T.FLOAT, [1, 6, 4, 5])],
        [nh.from_array(w, "w")],
    )
    return _save(h.make_model(graph), path, opset=11)


MODEL_BUILDERS.update(
    byte_transformer=byte_transformer,
    batchnorm_default_epsilon=batchnorm_default_epsilon,
    softmax_coerced=softmax_coerced,
)


def with_external_data(source: Path, path: Path, location: str | None = None, seed: int | None = None) -> Path:
    """Save ONNX model `source` as `path` with every initializer in one external data file `location` (relative
    to `path`'s folder; default `<path name>.data`), as exporters do for large models. `seed` replaces the
    weights with other random values (the graph file stays byte-identical: only the data file changes)."""
    onnx, _, _, nh = _onnx()
    model = onnx.load(str(source))
    if seed is not None:
        rng = np.random.default_rng(seed)
        for init in model.graph.initializer:
            arr = nh.to_array(init)
            init.CopyFrom(nh.from_array(rng.standard_normal(arr.shape).astype(arr.dtype), init.name))
    location = location or Path(path).name + ".data"
    data = Path(path).parent / location
    data.parent.mkdir(parents=True, exist_ok=True)
    data.unlink(missing_ok=True)  # onnx appends to an existing data file
    onnx.save_model(
        model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0
    )
    return Path(path)
