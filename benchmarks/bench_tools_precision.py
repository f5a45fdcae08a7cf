"""The precision axis on real-size models: per backend, bf16 / fp16 / int8 speed against that backend's fp32 and
error against the fp32 reference (unirt.tools.bench and compare with --precision fp32,bf16,fp16,int8).

The models are built here with onnx.helper and random (He-scaled) weights, at real sizes: a ResNet-18-shaped
classifier at 224, a MobileNet-v1-shaped classifier at 224 and a 320x320 single-stage detector (backbone to stride
32, two heads). int8 rows run the static Q/DQ model from `unirt quantize`, calibrated on random inputs held apart
from the ones measured. Random weights and inputs say nothing about a trained model's accuracy; they do measure
speed, and the error the reduced precision adds to the same computation.

    python benchmarks/bench_tools_precision.py [--models resnet18,mobilenet,detector] [--iterations 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from unirt.tools import bench, compare

PRECISIONS = "fp32,bf16,fp16,int8"


class _Builder:
    def __init__(self, seed: int = 0) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx, self.h, self.nh = onnx, helper, numpy_helper
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.inits: list = []
        self.n = 0

    def _name(self, kind: str) -> str:
        self.n += 1
        return f"{kind}{self.n}"

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int = 1, group: int = 1, relu: bool = True) -> str:
        w = (self.rng.standard_normal((cout, cin // group, k, k)) * np.sqrt(2.0 / (cin // group * k * k)))
        b = self.rng.standard_normal(cout) * 0.01
        wn, bn, y = self._name("W"), self._name("B"), self._name("conv")
        self.inits += [self.nh.from_array(w.astype(np.float32), wn), self.nh.from_array(b.astype(np.float32), bn)]
        self.nodes.append(self.h.make_node("Conv", [x, wn, bn], [y], kernel_shape=[k, k], strides=[stride, stride],
                                           pads=[k // 2] * 4, group=group))
        if not relu:
            return y
        r = self._name("relu")
        self.nodes.append(self.h.make_node("Relu", [y], [r]))
        return r

    def op(self, kind: str, inputs: list[str], **attrs) -> str:
        y = self._name(kind.lower())
        self.nodes.append(self.h.make_node(kind, inputs, [y], **attrs))
        return y

    def fc(self, x: str, cin: int, cout: int) -> str:
        w = self.rng.standard_normal((cin, cout)) * np.sqrt(1.0 / cin)
        wn, bn = self._name("W"), self._name("B")
        self.inits += [self.nh.from_array(w.astype(np.float32), wn),
                       self.nh.from_array(np.zeros(cout, np.float32), bn)]
        return self.op("Gemm", [x, wn, bn])

    def rename(self, old: str, new: str) -> None:
        """Name a graph output after its producer's output (not through Identity, which backends may fold)."""
        for node in self.nodes:
            node.output[:] = [new if o == old else o for o in node.output]
            node.input[:] = [new if i == old else i for i in node.input]

    def save(self, path: Path, name: str, size: int, outputs: list[tuple[str, list]]) -> Path:
        T = self.onnx.TensorProto
        graph = self.h.make_graph(self.nodes, name, [self.h.make_tensor_value_info("x", T.FLOAT, ["N", 3, size, size])],
                                  [self.h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs], self.inits)
        model = self.h.make_model(graph, opset_imports=[self.h.make_opsetid("", 17)])
        model.ir_version = 8
        self.onnx.checker.check_model(model)
        self.onnx.save(model, str(path))
        return path


def _classifier_head(b: _Builder, x: str, channels: int) -> None:
    pooled = b.op("GlobalAveragePool", [x])
    flat = b.op("Flatten", [pooled], axis=1)
    b.rename(b.fc(flat, channels, 1000), "logits")


def resnet18(path: Path) -> Path:
    """ResNet-18's shape (1.8 GFLOPs at 224): stem, four stages of two basic blocks, 1000 classes."""
    b = _Builder(1)
    x = b.conv("x", 3, 64, 7, 2)
    x = b.op("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        for i in range(2):
            s = stride if i == 0 else 1
            y = b.conv(x, cin, cout, 3, s)
            y = b.conv(y, cout, cout, 3, 1, relu=False)
            short = x if (s == 1 and cin == cout) else b.conv(x, cin, cout, 1, s, relu=False)
            x = b.op("Relu", [b.op("Add", [y, short])])
            cin = cout
    _classifier_head(b, x, 512)
    return b.save(path, "resnet18_random", 224, [("logits", ["N", 1000])])


def mobilenet(path: Path) -> Path:
    """MobileNet-v1's shape (0.57 GFLOPs at 224): depthwise-separable blocks, 1000 classes."""
    b = _Builder(2)
    x = b.conv("x", 3, 32, 3, 2)
    cin = 32
    for cout, stride in ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1), (512, 1),
                         (512, 1), (512, 1), (1024, 2), (1024, 1)):
        x = b.conv(x, cin, cin, 3, stride, group=cin)
        x = b.conv(x, cin, cout, 1)
        cin = cout
    _classifier_head(b, x, 1024)
    return b.save(path, "mobilenet_v1_random", 224, [("logits", ["N", 1000])])


def detector(path: Path) -> Path:
    """A 320x320 single-stage detector: a strided conv backbone to stride 32, and two heads (stride 16 and 32) of
    85 channels per anchor x 3 anchors (YOLO-style box/objectness/class maps)."""
    b = _Builder(3)
    x, cin = "x", 3
    feats = {}
    for cout, stride in ((32, 2), (64, 2), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1)):
        x = b.conv(x, cin, cout, 3, stride)
        cin = cout
        feats[cout] = x
    p5 = b.conv(feats[512], 512, 255, 1, relu=False)
    p4 = b.conv(feats[256], 256, 255, 1, relu=False)
    b.rename(p4, "boxes_s16")
    b.rename(p5, "boxes_s32")
    return b.save(path, "detector320_random", 320, [("boxes_s16", ["N", 255, 20, 20]),
                                                    ("boxes_s32", ["N", 255, 10, 10])])


MODELS = {"resnet18": (resnet18, 224), "mobilenet": (mobilenet, 224), "detector": (detector, 320)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--backends", default="onnxruntime,openvino,ncnn,mnn")
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--accuracy-batch", type=int, default=16, help="rows compared (top-1 over them)")
    ap.add_argument("--out", default=None, help="folder for the models and JSON reports (default: a temp dir)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="unirt-precision-"))
    out.mkdir(parents=True, exist_ok=True)
    backends = args.backends.split(",")
    summary = {}
    for name in args.models.split(","):
        build, size = MODELS[name]
        path = build(out / f"{name}.onnx")
        rng = np.random.default_rng(100)
        cal = out / f"{name}.calibration.npz"  # 16 samples on a leading axis, apart from the measured inputs
        np.savez(cal, x=rng.standard_normal((16, 1, 3, size, size)).astype(np.float32))
        report = bench(path, backends, precision=PRECISIONS, iterations=args.iterations, warmup=3,
                       threads=args.threads, calibration=cal, shapes=f"x:1x3x{size}x{size}")
        report.write_json(out / f"{name}.bench.json")
        inputs = {"x": rng.standard_normal((args.accuracy_batch, 3, size, size)).astype(np.float32)}
        acc = compare(path, backends, precision=PRECISIONS, inputs=inputs, threads=args.threads, calibration=cal)
        print(f"\n## {name} ({size}x{size}), {args.threads} threads, {args.iterations} iterations")
        print(f"{'backend':12} {'prec':5} {'computes':8} {'p50 ms':>8} {'vs fp32':>8} {'rel-L2':>9} {'max abs':>9}"
              f" {'top-1':>6}")
        rows = []
        for r in report.results:
            label = f"{r.backend}@{r.precision_asked}"
            w = acc.worst(label) if label in acc.targets and label not in acc.refused else {}
            if r.backend == acc.reference and r.precision_asked == "fp32":
                w = {"rel_l2": 0.0, "max_abs": 0.0,
                     "top1_agreement": 1.0 if any(x.top1_agreement is not None for x in acc.results) else None}
            row = {"backend": r.backend, "asked": r.precision_asked, "computes": r.precision,
                   "p50_ms": r.latency_ms.p50 if r.latency_ms else None, "speed_vs_fp32": r.speed_vs_fp32,
                   "rel_l2": w.get("rel_l2"), "max_abs": w.get("max_abs"), "top1": w.get("top1_agreement"),
                   "refused": r.error}
            rows.append(row)

            def f(v, fmt):
                return "-" if v is None else format(v, fmt)
            print(f"{r.backend:12} {r.precision_asked:5} {('refused' if r.error else r.precision):8} "
                  f"{f(row['p50_ms'], '8.2f')} {f(row['speed_vs_fp32'], '8.2f')} {f(row['rel_l2'], '9.2e')} "
                  f"{f(row['max_abs'], '9.2e')} {f(row['top1'], '6.3f')}")
        for r in report.results:
            if r.error:
                print(f"  refused {r.backend} {r.precision_asked}: {r.error[:160]}")
        summary[name] = rows
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nreports in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
