"""Which precision ncnn really computes here, and the refusal of modes it would only store.

ncnn's reduced modes on the CPU:
- fp16: `use_fp16_storage/packed` keep weights and blobs in fp16; `use_fp16_arithmetic` computes in fp16 only on
  ARM CPUs with half-precision arithmetic (ncnn.cpu_support_arm_asimdhp()). Elsewhere (x86) fp16 is storage only.
- bf16: `use_bf16_storage/packed` keep weights and blobs in bf16; ncnn computes in fp32 from them. It pays off only
  where the CPU has bf16 instructions (measured: 0.80x the fp32 time on a 320x320 detector on an AVX512-BF16 EPYC).

Measured on an AMD EPYC with AVX2/F16C only (ncnn 1.0.20261020, 1 thread, benchmarks/bench_precision.py), against
ncnn's fp32 on ResNet-18-, MobileNet-v2-like and 320x320 detector models (median round): fp16 storage 1.05x /
0.98x / 1.04x the time (max abs diff up to 0.0037), bf16 storage 1.03x / 1.24x / 0.96x (up to 0.057): no faster.
Hence: a storage-only mode is refused unless `allow_storage_only_precision` is True.
On the GPU (Vulkan) both modes are the GPU's own arithmetic and are passed through.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from unirt.plugin_sdk import cpu_arithmetic, storage_only_allowed, storage_only_refusal

MEASURED = {
    "fp16": "0.98-1.05x the fp32 time (median round; best round 1.04-1.22x), max abs diff up to 0.0037 vs "
    "fp32 on three real-size CNNs, ncnn 1.0.20261020, 1 thread, AVX2/F16C AMD EPYC "
    "(benchmarks/bench_precision.py)",
    "bf16": "0.96-1.24x the fp32 time (median round; best round 1.01-1.22x), max abs diff up to 0.057 vs fp32 "
    "on three real-size CNNs, ncnn 1.0.20261020, 1 thread, AMD EPYC without AVX512-BF16 "
    "(benchmarks/bench_precision.py)",
}


def fp16_arithmetic() -> tuple[bool, str]:
    """(whether ncnn computes fp16 on this CPU, the phrase saying why)."""
    import ncnn

    if ncnn.cpu_support_arm_asimdhp():
        return True, "ncnn.cpu_support_arm_asimdhp(): the CPU has ARM half-precision arithmetic"
    return False, "ncnn computes fp16 only on ARM CPUs with asimdhp; ncnn.cpu_support_arm_asimdhp() is False here"


def effective_precision(precision: str, backend_options: Mapping[str, Any], device_kind: str) -> tuple[str, str]:
    """(precision in force, how that was determined); raises UnsupportedOptionError for a storage-only mode
    without the opt-in."""
    allowed = storage_only_allowed("ncnn", backend_options)
    if precision == "fp32":
        return "fp32", "fp32 (ncnn fp16/bf16 storage and fp16 arithmetic switched off)"
    if precision == "int8":
        return "int8", "int8 (ncnn2int8-quantized layers)"
    if device_kind != "cpu":
        return precision, f"{precision} (ncnn {precision} storage and arithmetic on the Vulkan GPU)"
    if precision == "fp16":
        native, why = fp16_arithmetic()
        if native:
            return "fp16", f"fp16 (ncnn use_fp16_storage + use_fp16_arithmetic; {why})"
    else:
        native, cpu = cpu_arithmetic("bf16")
        why = f"ncnn keeps bf16 storage and computes fp32 from it; {cpu}"
        if native:
            return (
                "bf16",
                f"bf16 (ncnn use_bf16_storage; {cpu}: faster than fp32, measured 0.80x the fp32 time on an "
                "AVX512-BF16 EPYC)",
            )
    if not allowed:
        raise storage_only_refusal("ncnn", precision, why, MEASURED[precision])
    return precision, f"{precision} storage only (compute is fp32: {why}; allowed by allow_storage_only_precision)"
