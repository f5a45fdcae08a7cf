"""Real-size CNNs built with `onnx.helper` (random He-scaled weights), for precision measurements: a ResNet-18-like
classifier and a MobileNet-v2-like classifier at 224x224, and a 320x320 single-stage detector with three heads.
Their compute and memory traffic are those of the real networks (ResNet-18 ~1.8 GFLOPs, MobileNet-v2 ~0.3
GFLOPs), which is what decides whether a reduced precision is faster; their weights are not trained.

`measure_precisions` times a backend's reduced precisions against its own fp32 on such a model (used by
benchmarks/bench_precision.py and scripts/support_matrix.py --precision-axis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "REALSIZE_MODELS",
    "build_realsize",
    "resnet_like",
    "mobilenet_like",
    "detector_like",
    "transformer_like",
    "measure_precisions",
]


class _Graph:
    """A tiny graph builder: conv/relu/add/... append nodes and initializers, `save` writes the model."""

    def __init__(self, seed: int) -> None:
        import onnx
        from onnx import TensorProto, helper, numpy_helper

        self.onnx, self.T, self.h, self.nh = onnx, TensorProto, helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int = 3, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        fan_in = cin // group * k * k  # He scaling before a ReLU, LeCun before a residual add: activations stay O(1)
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt((2.0 if relu else 0.5) / fan_in)).astype(
            np.float32
        )
        b = (self.rng.standard_normal(cout) * 0.05).astype(np.float32)
        name = self._name("conv")
        self.inits += [self.nh.from_array(w, name + "_w"), self.nh.from_array(b, name + "_b")]
        self.nodes.append(
            self.h.make_node(
                "Conv",
                [x, name + "_w", name + "_b"],
                [name],
                kernel_shape=[k, k],
                strides=[stride, stride],
                pads=[k // 2] * 4,
                group=group,
            )
        )
        return self.relu(name) if relu else name

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        name = self._name(kind.lower())
        self.nodes.append(self.h.make_node(kind, inputs, [name], **attrs))
        return name

    def relu(self, x: str) -> str:
        return self.op("Relu", [x])

    def gemm(self, x: str, cin: int, cout: int) -> str:
        w = (self.rng.standard_normal((cout, cin)) * np.sqrt(1.0 / cin)).astype(np.float32)
        b = np.zeros(cout, np.float32)
        name = self._name("fc")
        self.inits += [self.nh.from_array(w, name + "_w"), self.nh.from_array(b, name + "_b")]
        self.nodes.append(self.h.make_node("Gemm", [x, name + "_w", name + "_b"], [name], transB=1))
        return name

    def const(self, value: np.ndarray | float, kind: str = "c") -> str:
        name = self._name(kind)
        self.inits.append(self.nh.from_array(np.asarray(value, np.float32), name))
        return name

    def linear(self, x: str, cin: int, cout: int) -> str:
        """MatMul + bias on the last axis (a transformer's projection), LeCun-scaled weights."""
        w = (self.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin)).astype(np.float32)
        return self.op("Add", [self.op("MatMul", [x, self.const(w, "w")]), self.const(np.zeros(cout), "b")])

    def layernorm(self, x: str, width: int) -> str:
        return self.op(
            "LayerNormalization",
            [x, self.const(np.ones(width), "ln_g"), self.const(np.zeros(width), "ln_b")],
            axis=-1,
            epsilon=1e-5,
        )

    def gelu(self, x: str) -> str:
        """Erf GELU, as exporters write it before opset 20: x * 0.5 * (1 + erf(x / sqrt(2)))."""
        erf = self.op("Erf", [self.op("Div", [x, self.const(np.sqrt(2.0))])])
        return self.op("Mul", [self.op("Mul", [x, self.op("Add", [erf, self.const(1.0)])]), self.const(0.5)])

    def save(
        self,
        path: Path,
        name: str,
        size: int,
        outputs: list[tuple[str, list[int]]],
        input_shape: list[int] | None = None,
    ) -> Path:
        h, T = self.h, self.T
        shape = input_shape or [1, 3, size, size]
        graph = h.make_graph(
            self.nodes,
            name,
            [h.make_tensor_value_info("input", T.FLOAT, shape)],
            [h.make_tensor_value_info(o, T.FLOAT, shape) for o, shape in outputs],
            self.inits,
        )
        model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        self.onnx.save(model, str(path))
        return path


def resnet_like(path: Path, size: int = 224, classes: int = 1000, seed: int = 0) -> Path:
    """ResNet-18's layout (7x7 stem, 4 stages of 2 basic blocks, 64..512 channels), input [1, 3, 224, 224] ->
    logits [1, 1000]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 64, k=7, stride=2)
    x = g.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        for block in range(2):
            stride = 2 if stage > 0 and block == 0 else 1
            y = g.conv(x, cin, cout, stride=stride)
            y = g.conv(y, cout, cout, relu=False)
            short = g.conv(x, cin, cout, k=1, stride=stride, relu=False) if (stride != 1 or cin != cout) else x
            x = g.relu(g.op("Add", [y, short]))
            cin = cout
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.gemm(x, 512, classes)
    g.nodes[-1].output[0] = "logits"
    return g.save(path, "resnet_like", size, [("logits", [1, classes])])


def mobilenet_like(path: Path, size: int = 224, classes: int = 1000, seed: int = 0) -> Path:
    """MobileNet-v2's inverted residual layout (expansion 6, depthwise 3x3), input [1, 3, 224, 224] -> logits
    [1, 1000]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 32, stride=2)
    cin = 32
    # (expansion, channels, repeats, stride) as in MobileNet-v2
    for t, c, n, s in (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ):
        for i in range(n):
            stride = s if i == 0 else 1
            hidden = cin * t
            y = g.conv(x, cin, hidden, k=1) if t != 1 else x
            y = g.conv(y, hidden, hidden, stride=stride, group=hidden)
            y = g.conv(y, hidden, c, k=1, relu=False)
            x = g.op("Add", [x, y]) if stride == 1 and cin == c else y
            cin = c
    x = g.conv(x, cin, 1280, k=1)
    x = g.op("Flatten", [g.op("GlobalAveragePool", [x])])
    g.gemm(x, 1280, classes)
    g.nodes[-1].output[0] = "logits"
    return g.save(path, "mobilenet_like", size, [("logits", [1, classes])])


def detector_like(path: Path, size: int = 320, anchors: int = 3, classes: int = 80, seed: int = 0) -> Path:
    """A YOLO-like single-stage detector: a strided CSP-ish backbone to stride 32 and a prediction head at
    strides 8, 16 and 32, input [1, 3, 320, 320] -> three maps [1, anchors*(5+classes), 40|20|10, ...]."""
    g = _Graph(seed)
    x = g.conv("input", 3, 32, stride=2)  # 160
    x = g.conv(x, 32, 64, stride=2)  # 80
    x = g.conv(g.conv(x, 64, 32, k=1), 32, 64)
    feats = []
    cin = 64
    for cout in (128, 256, 512):  # 40, 20, 10
        x = g.conv(x, cin, cout, stride=2)
        for _ in range(2):
            y = g.conv(g.conv(x, cout, cout // 2, k=1), cout // 2, cout, relu=False)
            x = g.relu(g.op("Add", [x, y]))
        feats.append((x, cout))
        cin = cout
    outputs = []
    per = anchors * (5 + classes)
    for i, (f, c) in enumerate(feats):
        y = g.conv(f, c, c)
        g.conv(y, c, per, k=1, relu=False)
        name = f"head{i}"
        g.nodes[-1].output[0] = name
        hw = size // (8 * 2**i)
        outputs.append((name, [1, per, hw, hw]))
    return g.save(path, "detector_like", size, outputs)


def transformer_like(
    path: Path, tokens: int = 128, width: int = 256, heads: int = 4, layers: int = 4, classes: int = 100, seed: int = 0
) -> Path:
    """A BERT-small-like encoder classifier (pre-LayerNorm blocks of 4-head self-attention and an Erf-GELU MLP of
    4x width, ~0.9 GFLOPs), input embeddings [1, 128, 256] -> logits [1, 100] (mean over tokens, then a linear
    head)."""
    g = _Graph(seed)
    head = width // heads
    # 0: the batch dim is copied from the input (Reshape's default), so a copy with a dynamic batch runs too
    split = g.nh.from_array(np.array([0, tokens, heads, head], np.int64), "split_shape")
    merge = g.nh.from_array(np.array([0, tokens, width], np.int64), "merge_shape")
    g.inits += [split, merge]
    scale = g.const(1.0 / np.sqrt(head))
    x = "input"
    for _ in range(layers):
        h = g.layernorm(x, width)
        q, k, v = (
            g.op("Transpose", [g.op("Reshape", [g.linear(h, width, width), "split_shape"])], perm=perm)
            for perm in ([0, 2, 1, 3], [0, 2, 3, 1], [0, 2, 1, 3])
        )
        att = g.op("Softmax", [g.op("Mul", [g.op("MatMul", [q, k]), scale])], axis=-1)
        o = g.op("Reshape", [g.op("Transpose", [g.op("MatMul", [att, v])], perm=[0, 2, 1, 3]), "merge_shape"])
        x = g.op("Add", [x, g.linear(o, width, width)])
        f = g.linear(g.gelu(g.linear(g.layernorm(x, width), width, 4 * width)), 4 * width, width)
        x = g.op("Add", [x, f])
    pooled = g.op("ReduceMean", [g.layernorm(x, width)], axes=[1], keepdims=0)
    g.gemm(pooled, width, classes)
    g.nodes[-1].output[0] = "logits"
    return g.save(path, "transformer_like", 0, [("logits", [1, classes])], input_shape=[1, tokens, width])


REALSIZE_MODELS: dict[str, Callable[[Path], Path]] = {
    "resnet_like_224": resnet_like,
    "mobilenet_like_224": mobilenet_like,
    "detector_like_320": detector_like,
    "transformer_like_128": transformer_like,
}


def build_realsize(name: str, directory: Path | str) -> Path:
    """Build `name` (a key of REALSIZE_MODELS) as `<directory>/<name>.onnx` once and return its path."""
    path = Path(directory) / f"{name}.onnx"
    if not path.exists():
        REALSIZE_MODELS[name](path)
    return path


#: backend_options that accept a storage-only mode (see unirt.precision)
OPT_IN = {"allow_storage_only_precision": True}


def load(model: Path, backend: str, precision: str, threads: int) -> tuple[Any, str]:
    """(session, note): the note is "" for a mode offered plainly, "storage-only (opt-in)" for one offered only with
    the opt-in option, or the refusal (then the session is None). A conversion that its verification rejects at
    this precision is accepted (the measurement reports the error itself) and the note says so."""
    import unirt
    from unirt.errors import ConversionError, UnsupportedOptionError

    options: dict[str, Any] = {}
    notes: list[str] = []
    for _ in range(3):
        try:
            sess = unirt.Session(model, backend=backend, precision=precision, threads=threads, backend_options=options)
            return sess, "; ".join(notes)
        except UnsupportedOptionError as exc:
            if "allow_storage_only_precision" not in str(exc) or OPT_IN.items() <= options.items():
                return None, f"refused: {exc}"
            options.update(OPT_IN)
            notes.append("storage-only (opt-in)")
        except ConversionError as exc:
            if "disagrees" not in str(exc) or "conversion" in options:  # the converter's refusal, with its reason
                return None, f"refused: {type(exc).__name__}: {exc}"
            options["conversion"] = {"accept": True}
            notes.append("conversion beyond its verification tolerance, accepted to measure")
        except unirt.UnirtError as exc:
            return None, f"failed: {type(exc).__name__}: {exc}"
    return None, "failed: " + "; ".join(notes)


def error(out: dict, ref: dict) -> tuple[float, float]:
    """(max abs diff, rel-L2) over every output, against the fp32 outputs."""
    diff = max(float(np.max(np.abs(out[k].astype(np.float64) - ref[k]))) for k in ref)
    num = sum(float(np.sum((out[k].astype(np.float64) - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(ref[k].astype(np.float64) ** 2)) for k in ref)
    return diff, (num / den) ** 0.5 if den else 0.0


def top1(out: dict, ref: dict) -> float | None:
    """Share of top-1 classes that agree, for classifier outputs ([1, classes], classes >= 10); None otherwise."""
    logits = [k for k, v in ref.items() if v.ndim == 2 and v.shape[0] == 1 and v.shape[1] >= 10]
    if not logits:
        return None
    return float(np.mean([np.argmax(out[k]) == np.argmax(ref[k]) for k in logits]))


def int8_source(model: Path | str, inputs: list, samples: int = 8) -> Path:
    """The int8 model that int8 rows run: `unirt quantize`'s static Q/DQ version of `model`, calibrated on
    `samples` random inputs (apart from the measured ones), written once beside it as `<stem>.int8.onnx`."""
    from unirt.formats import open_model
    from unirt.tools.precision import int8_model

    model = Path(model)
    out = model.with_name(f"{model.stem}.int8.onnx")
    if not out.exists():
        rng = np.random.default_rng(1)
        feeds = [{i.name: rng.standard_normal(i.shape).astype(np.float32) for i in inputs} for _ in range(samples)]
        made = int8_model(open_model(model), model.parent / f"{model.stem}.int8-work", feeds=feeds).model
        Path(made.path).replace(out)
    return out


def measure_precisions(
    model: Path | str,
    backend: str,
    precisions: list[str],
    threads: int = 2,
    rounds: int = 7,
    runs: int = 3,
    samples: int = 4,
) -> list[dict]:
    """One row per precision (fp32 first; int8 runs `int8_source`'s quantized model): "precision", "note", and
    where it loaded "in_force" (Session.precision),
    "info" (Session.precision_info), "max_abs" / "rel_l2" against this backend's fp32 over `samples` random feeds,
    "top1" (classifiers: agreement of the top class), "ms", "ratio" (median round vs fp32) and "best" (best round
    vs fp32's best round)."""
    base, note = load(model, backend, "fp32", threads)
    if base is None:
        return [{"precision": "fp32", "note": note}]
    rng = np.random.default_rng(0)
    feeds = [{i.name: rng.standard_normal(i.shape).astype(np.float32) for i in base.inputs} for _ in range(samples)]
    feed = feeds[0]
    refs = [{k: np.asarray(v, np.float64) for k, v in base.run(f).items()} for f in feeds]
    modes = {"fp32": base}
    rows = {
        "fp32": {
            "precision": "fp32",
            "in_force": base.precision,
            "note": "",
            "info": getattr(base, "precision_info", ""),
        }
    }
    for p in precisions:
        source, made = (
            (int8_source(model, base.inputs), "static Q/DQ from unirt quantize; ") if p == "int8" else (model, "")
        )
        sess, note = load(source, backend, p, threads)
        row = {"precision": p, "note": "; ".join(n for n in (made.rstrip("; "), note) if n)}
        if sess is not None:
            outs = [sess.run(f) for f in feeds]
            errs = [error(o, r) for o, r in zip(outs, refs)]
            row["max_abs"], row["rel_l2"] = max(e[0] for e in errs), max(e[1] for e in errs)
            agree = [top1(o, r) for o, r in zip(outs, refs)]
            row["top1"] = None if agree[0] is None else float(np.mean(agree))
            row["in_force"] = sess.precision
            row["info"] = getattr(sess, "precision_info", "")
            modes[p] = sess
        rows[p] = row
    for s in modes.values():  # warm-up
        for _ in range(2):
            s.run(feed)
    times: dict[str, list[float]] = {p: [] for p in modes}
    for _ in range(rounds):
        for p, s in modes.items():
            t0 = time.perf_counter()
            for _ in range(runs):
                s.run(feed)
            times[p].append((time.perf_counter() - t0) / runs)
    t32, best32 = float(np.median(times["fp32"])), min(times["fp32"])
    for p in modes:
        rows[p]["ms"] = float(np.median(times[p])) * 1e3
        rows[p]["ratio"] = float(np.median(times[p])) / t32
        rows[p]["best"] = min(times[p]) / best32  # the least disturbed round of each: robust on a shared machine
    return list(rows.values())
