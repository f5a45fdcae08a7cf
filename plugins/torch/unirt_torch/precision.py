"""Precision on torch: fp32 means fp32 (TF32 off while the session runs), fp16/bf16 by autocast, asked for.

TF32 (`torch.backends.cuda.matmul.allow_tf32`, `torch.backends.cudnn.allow_tf32`, and `float32_matmul_precision`
"high"/"medium", which also lets oneDNN use bf16 for fp32 matmuls on CPU) is process-wide torch state. `Fp32Guard`
sets "highest" and cudnn TF32 off while any unirt torch run is in progress and restores what was there when the
last one ends (a count, so concurrent runs do not restore under each other). Other torch code running at the same
moment in another thread sees fp32 too.
"""

from __future__ import annotations

import threading
from typing import Any

from unirt import LoadOptions, UnsupportedOptionError
from unirt.plugin_sdk import cpu_arithmetic, storage_only_allowed

__all__ = ["Fp32Guard", "autocast_dtype"]


class Fp32Guard:
    """Context manager: full fp32 matmul/conv precision for the duration, restored after (reference counted)."""

    _lock = threading.Lock()
    _active = 0
    _saved: tuple[str, bool] | None = None

    def __init__(self, torch: Any) -> None:
        self._torch = torch

    def __enter__(self) -> None:
        torch = self._torch
        with Fp32Guard._lock:
            if Fp32Guard._active == 0:
                saved = (torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32)
                if saved != ("highest", False):
                    Fp32Guard._saved = saved
                    torch.set_float32_matmul_precision("highest")
                    torch.backends.cudnn.allow_tf32 = False
            Fp32Guard._active += 1

    def __exit__(self, *exc: object) -> None:
        torch = self._torch
        with Fp32Guard._lock:
            Fp32Guard._active -= 1
            if Fp32Guard._active == 0 and Fp32Guard._saved is not None:
                torch.set_float32_matmul_precision(Fp32Guard._saved[0])
                torch.backends.cudnn.allow_tf32 = Fp32Guard._saved[1]
                Fp32Guard._saved = None


def autocast_dtype(torch: Any, options: LoadOptions, device_type: str, fixed: str | None) -> tuple[Any, str]:
    """(the autocast dtype or None for fp32, precision_info) for the precision asked for; refuses what torch
    would not compute in that precision here."""
    precision = options.precision
    if precision == "fp32":
        where = "TF32 off" if device_type == "cuda" else "float32 matmul precision 'highest'"
        return None, f"fp32 ({where} while the session runs)"
    if precision == "int8":
        raise UnsupportedOptionError(
            "torch: precision='int8' needs a model quantized before export (torch.ao / "
            "torchao); unirt does not quantize PyTorch models. Use precision='fp32', or "
            "convert the model to ONNX and quantize it there"
        )
    if fixed is not None:
        raise UnsupportedOptionError(
            f"torch: precision={precision!r}: {fixed}; use precision='fp32' (or compile "
            "the package in the precision you want)"
        )
    dtype = torch.float16 if precision == "fp16" else torch.bfloat16
    if device_type == "cuda":
        if precision == "bf16" and not torch.cuda.is_bf16_supported():
            raise UnsupportedOptionError(
                "torch: precision='bf16': this GPU has no bf16 arithmetic; use 'fp16' or 'fp32'"
            )
        return dtype, f"{precision} (torch.autocast cuda {precision}: matmuls and convolutions in {precision})"
    native, why = cpu_arithmetic(precision)
    if not native and not storage_only_allowed("torch", options.backend_options):
        from unirt.plugin_sdk import storage_only_refusal

        raise storage_only_refusal(
            "torch",
            precision,
            why,
            "not timed for torch; by construction, autocast on a CPU "
            "without native "
            f"{precision} arithmetic converts to and from fp32 around each op",
        )
    return dtype, f"{precision} (torch.autocast cpu {precision}; {why})"
