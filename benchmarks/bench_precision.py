"""Each backend's reduced precisions against its own fp32, on real-size CNNs: time ratio and error.

    python benchmarks/bench_precision.py [--backends openvino,mnn,ncnn,onnxruntime]
                                         [--models resnet_like_224,mobilenet_like_224,detector_like_320]
                                         [--precisions bf16,fp16] [--threads 2] [--rounds 7] [--runs 5]

For each (model, backend): the fp32 session and every reduced-precision session are loaded side by side in one
process, then timed interleaved (`rounds` rounds of `runs` runs of each mode, the median of each mode's per-round
means), so the machine's load affects every mode alike. Reported per mode: time / fp32 time (below 1 is faster),
max abs diff and rel-L2 against that backend's fp32 output, and the precision the session says it computes; or the
refusal with its reason. A mode that unirt offers only with backend_options={'allow_storage_only_precision': True}
is loaded with it and marked "storage-only (opt-in)". These figures are what the plugins' precision rules rest on
(see each plugin's README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from unirt.testing.realsize import REALSIZE_MODELS, build_realsize, measure_precisions


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="openvino,mnn,ncnn,onnxruntime")
    ap.add_argument("--models", default=",".join(REALSIZE_MODELS))
    ap.add_argument("--precisions", default="bf16,fp16")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--model-dir", type=Path, default=None, help="where the built models are kept (default: temp)")
    args = ap.parse_args()
    from unirt.hardware import hardware

    hw = hardware()
    print(f"# {hw.describe()}; CPU features: {' '.join(sorted(hw.cpu_features))}")
    print(
        f"# threads={args.threads} rounds={args.rounds} runs={args.runs}; vs fp32 = mode time / fp32 time, of the "
        "median round and of the best round"
    )
    print(
        "| model | backend | precision | Session.precision | time ms | vs fp32 (median / best) | max abs vs fp32 "
        "| rel-L2 vs fp32 | top-1 agree | note |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):  # one model at a time; every backend's modes side by side
            model = build_realsize(name, folder)
            for backend in args.backends.split(","):
                for r in measure_precisions(
                    model, backend, args.precisions.split(","), args.threads, args.rounds, args.runs
                ):
                    ms = f"{r['ms']:.1f}" if "ms" in r else ""
                    ratio = f"{r['ratio']:.2f} / {r['best']:.2f}" if "ratio" in r else ""
                    mx = f"{r['max_abs']:.3g}" if "max_abs" in r else ""
                    l2 = f"{r['rel_l2']:.2g}" if "rel_l2" in r else ""
                    top = f"{r['top1']:.2f}" if r.get("top1") is not None else ""
                    note = " ".join(str(r.get("note", "")).split()).replace("|", "/")
                    print(
                        f"| {name} | {backend} | {r['precision']} | {r.get('in_force', '')} | {ms} | {ratio} | "
                        f"{mx} | {l2} | {top} | {note[:200]} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
