"""The precision axis on real-size models: per backend, bf16 / fp16 / int8 speed against that backend's fp32 and
error against the fp32 reference (unirt.tools.bench and compare with --precision fp32,bf16,fp16,int8).

The models are `unirt.testing.realsize`'s (onnx.helper, random He-scaled weights, real sizes: a ResNet-18-like and
a MobileNet-v2-like classifier at 224, a 320x320 single-stage detector, a BERT-small-like transformer encoder),
with a dynamic batch dim. int8 rows run the static Q/DQ model from `unirt quantize`, calibrated on random inputs
held apart from the ones measured. Random weights and inputs say nothing about a trained model's accuracy; they do
measure speed, and the error the reduced precision adds to the same computation.

    python benchmarks/bench_tools_precision.py [--models resnet18,mobilenet,detector,transformer]
                                               [--iterations 20] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from unirt.testing.realsize import build_realsize
from unirt.tools import bench, compare

PRECISIONS = "fp32,bf16,fp16,int8"


# bench name -> unirt.testing.realsize model (the builders the support matrix's precision axis uses too)
MODELS = {
    "resnet18": "resnet_like_224",
    "mobilenet": "mobilenet_like_224",
    "detector": "detector_like_320",
    "transformer": "transformer_like_128",
}


def _batchable(path: Path) -> tuple[Path, tuple[int, ...]]:
    """A copy of a realsize model (batch 1) whose batch dim is "N", so compare runs the accuracy rows in one
    batch; and the input's shape without its batch dim."""
    import onnx

    model = onnx.load(str(path))
    shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:])
    for v in (*model.graph.input, *model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    out = path.with_name(f"{path.stem}.batch.onnx")
    onnx.save(model, str(out))
    return out, shape


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
        path, shape = _batchable(build_realsize(MODELS[name], out))
        rng = np.random.default_rng(100)
        cal = out / f"{name}.calibration.npz"  # 16 samples on a leading axis, apart from the measured inputs
        np.savez(cal, input=rng.standard_normal((16, *shape)).astype(np.float32))
        report = bench(
            path,
            backends,
            precision=PRECISIONS,
            iterations=args.iterations,
            warmup=3,
            threads=args.threads,
            calibration=cal,
        )
        report.write_json(out / f"{name}.bench.json")
        # the models take batch 1: the accuracy rows are that many samples, one run each
        inputs = {"input": rng.standard_normal((args.accuracy_batch, *shape)).astype(np.float32)}
        acc = compare(path, backends, precision=PRECISIONS, inputs=inputs, threads=args.threads, calibration=cal)
        print(f"\n## {name} ({MODELS[name]}, input {shape}), {args.threads} threads, {args.iterations} iterations")
        print(
            f"{'backend':12} {'prec':5} {'computes':8} {'p50 ms':>8} {'vs fp32':>8} {'rel-L2':>9} {'max abs':>9}"
            f" {'top-1':>6}"
        )
        rows = []
        for r in report.results:
            label = f"{r.backend}@{r.precision_asked}"
            w = acc.worst(label) if label in acc.targets and label not in acc.refused else {}
            if r.backend == acc.reference and r.precision_asked == "fp32":
                w = {
                    "rel_l2": 0.0,
                    "max_abs": 0.0,
                    "top1_agreement": 1.0 if any(x.top1_agreement is not None for x in acc.results) else None,
                }
            row = {
                "backend": r.backend,
                "asked": r.precision_asked,
                "computes": r.precision,
                "p50_ms": r.latency_ms.p50 if r.latency_ms else None,
                "speed_vs_fp32": r.speed_vs_fp32,
                "rel_l2": w.get("rel_l2"),
                "max_abs": w.get("max_abs"),
                "top1": w.get("top1_agreement"),
                "refused": r.error,
            }
            rows.append(row)

            def f(v, fmt):
                return "-" if v is None else format(v, fmt)

            print(
                f"{r.backend:12} {r.precision_asked:5} {('refused' if r.error else r.precision):8} "
                f"{f(row['p50_ms'], '8.2f')} {f(row['speed_vs_fp32'], '8.2f')} {f(row['rel_l2'], '9.2e')} "
                f"{f(row['max_abs'], '9.2e')} {f(row['top1'], '6.3f')}"
            )
        for r in report.results:
            if r.error:
                print(f"  refused {r.backend} {r.precision_asked}: {r.error[:160]}")
        summary[name] = rows
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"\nreports in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
