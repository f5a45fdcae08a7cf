"""Which precision MNN really computes here, and the refusal of modes it would ignore or only store.

MNN's PrecisionMode.Low / Low_BF16 are requests: a CPU build without fp16 kernels for this CPU (x86 has none
without AVX512-FP16) or built without MNN_SUPPORT_BF16 computes fp32 whatever the mode. Nothing in the Python
wheel says which kernels it has, so a one-time probe runs a tiny model (MatMul-ReLU-MatMul, built with MNN's own
expr API) in High and in each reduced mode and compares the answers bit for bit: identical answers mean the mode
computes fp32. The result is cached per MNN version and machine (`unirt.precision.cached_probe`).

Measured on an AMD EPYC (AVX2, F16C; MNN 3.6.1; benchmarks/bench_precision.py), against MNN's fp32: bf16 1.14x
the time with bit-identical answers (ResNet-18-like, 2 threads); fp16 (fp16 weights from `mnnconvert --fp16`,
PrecisionMode.Low) 0.97x / 4.97x / 1.02x the time (median round) on ResNet-18-, MobileNet-v2-like and 320x320
detector models (1 thread), max abs diff up to 0.023. Hence: bf16 is refused where the probe finds fp32; fp16 there
is storage only, refused unless `allow_storage_only_precision` is True.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from unirt import UnsupportedOptionError
from unirt.plugin_sdk import (
    cached_probe,
    cpu_arithmetic,
    native_output_silenced,
    storage_only_allowed,
    storage_only_refusal,
)

MODES = {"fp32": "High", "fp16": "Low", "bf16": "Low_BF16"}
MEASURED = {
    "bf16": "1.14x the fp32 time and bit-identical answers on a ResNet-18-like model, MNN 3.6.1, 2 threads, "
    "AVX2 AMD EPYC (benchmarks/bench_precision.py)",
    "fp16": "0.97-4.97x the fp32 time (median round; best round 0.97-1.85x) and max abs diff up to 0.023 vs "
    "fp32 on three real-size CNNs, MNN 3.6.1, 1 thread, AVX2 AMD EPYC (benchmarks/bench_precision.py)",
}


def probe_reduced_modes() -> dict[str, Any]:
    """{"fp16": max abs diff of Low vs High, "bf16": the same for Low_BF16} on a tiny MatMul model, 1 thread."""
    with native_output_silenced():
        import MNN.expr as F
        import MNN.nn as nn

        rng = np.random.default_rng(0)
        w = rng.standard_normal((64, 64)).astype(np.float32)
        feed = rng.standard_normal((4, 64)).astype(np.float32)
        x = F.placeholder([4, 64], F.NCHW, F.float)
        x.name = "x"
        wv = F.const(w.ravel().tolist(), [64, 64], F.NCHW, F.float)
        y = F.matmul(F.relu(F.matmul(x, wv)), wv)
        y.name = "y"
        with tempfile.TemporaryDirectory() as tmp:
            path = str(Path(tmp) / "probe.mnn")
            F.save([y], path)
            outs = {}
            for precision, mode in MODES.items():
                module = nn.load_module_from_file(
                    path, ["x"], ["y"], thread_num=1, precision_mode=getattr(F.PrecisionMode, mode)
                )
                out = module.forward([F.const(feed.ravel().tolist(), [4, 64], F.NCHW, F.float)])
                outs[precision] = np.array(out[0].read(), dtype=np.float64, copy=True)
    return {p: float(np.max(np.abs(outs[p] - outs["fp32"]))) for p in ("fp16", "bf16")}


def _probe(version: str) -> dict[str, Any]:
    return cached_probe("mnn", version, "reduced-modes", probe_reduced_modes)


def effective_precision(
    precision: str, backend_options: Mapping[str, Any], kind: str, version: str, converted_at: str | None = None
) -> tuple[str, str]:
    """(precision in force, how that was determined) for MNN on forward type `kind`; raises UnsupportedOptionError
    for a mode this MNN would ignore, or only store without opt-in. int8 is refused elsewhere. `converted_at`: the
    precision unirt converted the file at (its sidecar), None for a .mnn file given as is."""
    allowed = storage_only_allowed("mnn", backend_options)
    if precision not in ("fp16", "bf16"):
        return precision, f"{precision} (MNN PrecisionMode.{MODES.get(precision, precision)})"
    mode = f"PrecisionMode.{MODES[precision]}"
    if kind != "cpu":  # a GPU forward type: no probe here, MNN's GPU backends compute the mode they are asked
        return precision, f"{precision} (MNN {mode} on backend_type={kind}; not probed)"
    diff = _probe(version)[precision]
    native, cpu = cpu_arithmetic(precision)
    if diff > 0:
        return precision, (
            f"{precision} (MNN {mode}; a probe's answers differ from fp32 by up to {diff:.3g}: "
            f"{precision} kernels in use; {cpu})"
        )
    why = (
        f"MNN {version}'s {mode} gave answers bit-identical to fp32 on a probe model: this build has no "
        f"{precision} kernels for this CPU ({cpu})"
    )
    if precision == "bf16":
        raise UnsupportedOptionError(
            f"mnn: precision='bf16' would compute fp32 here: {why}; measured: {MEASURED['bf16']}. Use precision='fp32'"
        )
    if not allowed:
        raise storage_only_refusal("mnn", precision, why, MEASURED[precision])
    if converted_at is not None and converted_at != "fp16":  # fp32 weights and fp32 compute: that is fp32
        return "fp32", (
            f"fp32 (fp16 asked for, storage only allowed, but this model was converted with fp32 weights and {why})"
        )
    stored = (
        "weights converted with mnnconvert --fp16"
        if converted_at == "fp16"
        else "the weights as stored in the file: fp16 if it was converted with mnnconvert --fp16"
    )
    return precision, (f"fp16 storage only ({stored}; compute is fp32: {why}; allowed by allow_storage_only_precision)")
