"""Effective precision: what plugins share to tell a reduced precision the engine really computes from one it would
ignore or only store.

- `cpu_arithmetic(precision)`: whether this CPU has native bf16/fp16 arithmetic, and the features that say so.
- `storage_only_allowed(backend, options)`: the opt-in `backend_options={"allow_storage_only_precision": True}`,
  the same key on every plugin, for a mode that keeps weights (and activations) in low precision but computes in
  fp32 here: no faster on the machines measured (benchmarks/bench_precision.py), less accurate; smaller files can
  still be a reason to want it.
- `cached_probe(...)`: a one-time measurement (e.g. "does this engine's bf16 mode give answers different from its
  fp32 mode?") kept as JSON under `unirt.cache_dir("precision-probes")`, per engine version and machine.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping
from typing import Any

from .cache import cache_dir
from .errors import UnsupportedOptionError

__all__ = ["STORAGE_ONLY_OPTION", "cpu_arithmetic", "storage_only_allowed", "storage_only_refusal", "cached_probe"]

#: The backend_options key (same on every plugin) that accepts a storage-only reduced precision.
STORAGE_ONLY_OPTION = "allow_storage_only_precision"

# CPU features (unirt.hardware names) that give native arithmetic in a reduced precision, per architecture family
_NATIVE = {
    ("x86", "bf16"): ("avx512_bf16", "amx_bf16"),
    ("x86", "fp16"): ("avx512_fp16", "amx_fp16"),
    ("arm", "bf16"): ("bf16",),
    ("arm", "fp16"): ("fp16", "asimdhp"),
}


def _family(arch: str) -> str:
    return (
        "x86" if arch in ("x86_64", "x86", "AMD64", "i686") else "arm" if arch in ("aarch64", "arm", "arm64") else arch
    )


def cpu_arithmetic(precision: str, arch: str | None = None, features: frozenset[str] | None = None) -> tuple[bool, str]:
    """(whether the CPU computes `precision` ("bf16" or "fp16") natively, a phrase naming the features that decide
    it: "CPU has avx512_bf16", "CPU lacks avx512_bf16/amx_bf16 (it has avx2, f16c)"). Defaults: this machine."""
    if arch is None or features is None:
        from .hardware import hardware

        hw = hardware()
        arch, features = arch or hw.arch, features if features is not None else hw.cpu_features
    needed = _NATIVE.get((_family(arch), precision), ())
    have = [f for f in needed if f in features]
    if have:
        return True, f"CPU has {'/'.join(have)}"
    simd = sorted(f for f in features if f.startswith(("avx", "f16c", "neon", "asimd", "sve", "fp16", "bf16")))
    lacks = "/".join(needed) or f"any {precision} arithmetic on {arch}"
    return False, f"CPU lacks {lacks} (it has {', '.join(simd) or 'none of those'})"


def storage_only_allowed(backend: str, options: Mapping[str, Any]) -> bool:
    """backend_options["allow_storage_only_precision"] (default False), checked to be a bool."""
    allowed = options.get(STORAGE_ONLY_OPTION, False)
    if not isinstance(allowed, bool):
        raise UnsupportedOptionError(f"{backend}: {STORAGE_ONLY_OPTION} must be True or False, got {allowed!r}")
    return allowed


def storage_only_refusal(backend: str, precision: str, why: str, measured: str) -> UnsupportedOptionError:
    """The refusal of a mode that would only store in `precision`: what happens, the measurement, the opt-in."""
    return UnsupportedOptionError(
        f"{backend}: precision={precision!r} would only store weights/activations in {precision} here and compute "
        f"in fp32 ({why}): no faster than fp32 and less accurate (measured: {measured}). Use precision='fp32', or "
        f"pass backend_options={{'{STORAGE_ONLY_OPTION}': True}} to accept {precision} storage anyway (e.g. for "
        "smaller files)"
    )


def _machine_key() -> str:
    from .hardware import hardware

    hw = hardware()
    return (
        f"{hw.arch}-{hw.cpu_vendor}-"
        + hashlib.sha256((hw.cpu_brand + "|" + ",".join(sorted(hw.cpu_features))).encode()).hexdigest()[:12]
    )


def cached_probe(engine: str, version: str, name: str, probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """The result of `probe()` (a JSON-able dict), computed once per (engine, version, probe name, machine) and
    kept under cache_dir("precision-probes"). A cache file that cannot be read is recomputed."""
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in f"{engine}-{version}-{name}-{_machine_key()}")
    path = cache_dir("precision-probes") / f"{safe}.json"
    try:
        cached = json.loads(path.read_text())
        if isinstance(cached, dict):
            return cached
    except (OSError, ValueError):
        pass
    result = probe()
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, path)  # atomic: a concurrent reader sees the old file or the whole new one
    return result
