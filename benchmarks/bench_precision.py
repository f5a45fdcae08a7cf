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
import time
from pathlib import Path

import numpy as np

import unirt
from unirt.errors import UnsupportedOptionError
from unirt.testing.realsize import REALSIZE_MODELS, build_realsize

OPT_IN = {"allow_storage_only_precision": True}


def load(model: Path, backend: str, precision: str, threads: int) -> tuple[unirt.Session | None, str]:
    """(session, note): the note is "" for a mode offered plainly, "storage-only (opt-in)" for one offered only with
    the opt-in option, or the refusal (then the session is None)."""
    try:
        return unirt.Session(model, backend=backend, precision=precision, threads=threads), ""
    except UnsupportedOptionError as exc:
        if "allow_storage_only_precision" not in str(exc):
            return None, f"refused: {exc}"
        try:
            return unirt.Session(model, backend=backend, precision=precision, threads=threads,
                                 backend_options=OPT_IN), "storage-only (opt-in)"
        except unirt.UnirtError as exc2:
            return None, f"refused: {exc2}"
    except unirt.UnirtError as exc:
        return None, f"failed: {type(exc).__name__}: {exc}"


def error(out: dict, ref: dict) -> tuple[float, float]:
    """(max abs diff, rel-L2) over every output, against the fp32 outputs."""
    diff = max(float(np.max(np.abs(out[k].astype(np.float64) - ref[k]))) for k in ref)
    num = sum(float(np.sum((out[k].astype(np.float64) - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(ref[k].astype(np.float64) ** 2)) for k in ref)
    return diff, (num / den) ** 0.5 if den else 0.0


def measure(model: Path, backend: str, precisions: list[str], threads: int, rounds: int, runs: int) -> list[dict]:
    base, note = load(model, backend, "fp32", threads)
    if base is None:
        return [{"precision": "fp32", "note": note}]
    feed = {i.name: np.random.default_rng(0).standard_normal(i.shape).astype(np.float32) for i in base.inputs}
    ref = {k: np.asarray(v, np.float64) for k, v in base.run(feed).items()}
    modes = {"fp32": base}
    rows = {"fp32": {"precision": "fp32", "in_force": base.precision, "note": "",
                     "info": getattr(base, "precision_info", "")}}
    for p in precisions:
        sess, note = load(model, backend, p, threads)
        row = {"precision": p, "note": note}
        if sess is not None:
            out = sess.run(feed)
            row["max_abs"], row["rel_l2"] = error(out, ref)
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
    t32 = float(np.median(times["fp32"]))
    for p in modes:
        rows[p]["ms"] = float(np.median(times[p])) * 1e3
        rows[p]["ratio"] = float(np.median(times[p])) / t32
    return list(rows.values())


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
    print(f"# threads={args.threads} rounds={args.rounds} runs={args.runs}; ratio = mode time / fp32 time")
    print("| model | backend | precision | Session.precision | time ms | vs fp32 | max abs vs fp32 | rel-L2 vs fp32 "
          "| note |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model_dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            model = build_realsize(name, folder)
            for backend in args.backends.split(","):
                for r in measure(model, backend, args.precisions.split(","), args.threads, args.rounds, args.runs):
                    ms = f"{r['ms']:.1f}" if "ms" in r else ""
                    ratio = f"{r['ratio']:.2f}" if "ratio" in r else ""
                    mx = f"{r['max_abs']:.3g}" if "max_abs" in r else ""
                    l2 = f"{r['rel_l2']:.2g}" if "rel_l2" in r else ""
                    note = " ".join(str(r.get("note", "")).split()).replace("|", "/")
                    print(f"| {name} | {backend} | {r['precision']} | {r.get('in_force', '')} | {ms} | {ratio} | "
                          f"{mx} | {l2} | {note[:200]} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
