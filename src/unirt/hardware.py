"""What this machine has: CPU architecture, vendor and features, CUDA GPUs, NPUs. Probed once per process.

GPUs are found without creating a CUDA context (no cuInit), so probing never breaks a later fork.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import _core

__all__ = ["Hardware", "hardware"]


@dataclass(frozen=True)
class Hardware:
    arch: str
    cpu_vendor: str  # "intel", "amd", "arm", "apple" or "unknown"
    cpu_brand: str
    cpu_features: frozenset[str]
    cpu_count: int
    cuda_gpus: tuple[str, ...] = ()  # model names, in CUDA index order
    npus: tuple[str, ...] = ()  # driver names of accelerator devices
    intel_gpus: tuple[str, ...] = ()  # PCI device ids of Intel GPUs ("0x56a0"), in DRM card order

    @property
    def cpu_class(self) -> str:
        """ "x86-intel", "x86-amd", "x86" or "arm": the key of the default backend order."""
        if self.arch in ("x86_64", "x86"):
            return {"intel": "x86-intel", "amd": "x86-amd"}.get(self.cpu_vendor, "x86")
        return "arm" if self.arch in ("aarch64", "arm") else self.arch

    @property
    def has_cuda(self) -> bool:
        return bool(self.cuda_gpus)

    def describe(self) -> str:
        parts = [f"{self.arch} {self.cpu_vendor} CPU ({self.cpu_brand or 'unknown model'}, {self.cpu_count} threads)"]
        parts.append(
            f"{len(self.cuda_gpus)} CUDA GPU(s): {', '.join(self.cuda_gpus)}" if self.cuda_gpus else "no CUDA GPU"
        )
        if self.intel_gpus:
            parts.append(f"Intel GPU(s): {', '.join(self.intel_gpus)}")
        if self.npus:
            parts.append(f"NPU(s): {', '.join(self.npus)}")
        return "; ".join(parts)


_VENDORS = {"GenuineIntel": "intel", "AuthenticAMD": "amd", "HygonGenuine": "amd", "ARM": "arm", "Apple": "apple"}


def _visible(indices: list[int]) -> list[int]:
    spec = os.environ.get("CUDA_VISIBLE_DEVICES")
    if spec is None:
        return indices
    picked = []
    for item in spec.split(","):
        item = item.strip()
        if not item.isdigit():
            break  # CUDA stops at the first entry it cannot parse (UUIDs are not resolved here)
        if int(item) in indices:
            picked.append(int(item))
    return picked


def _cuda_gpus() -> tuple[str, ...]:
    proc = Path("/proc/driver/nvidia/gpus")
    names: list[str] = []
    if proc.is_dir():
        for entry in sorted(proc.iterdir()):
            info = entry / "information"
            try:
                text = info.read_text(errors="replace")
            except OSError:
                continue
            model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("Model:")), "GPU")
            names.append(model)
    elif shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            names = [ln.strip() for ln in out.splitlines() if ln.strip()]
        except (OSError, subprocess.SubprocessError):
            names = []
    return tuple(names[i] for i in _visible(list(range(len(names)))))


def _npus() -> tuple[str, ...]:
    found = []
    accel = Path("/sys/class/accel")
    if accel.is_dir():
        for dev in sorted(accel.iterdir()):
            driver = dev / "device" / "driver"
            found.append(driver.resolve().name if driver.exists() else dev.name)
    if Path("/dev/rknpu").exists() or Path("/sys/kernel/debug/rknpu").exists():
        found.append("rknpu")
    return tuple(found)


def _intel_gpus(drm: Path = Path("/sys/class/drm")) -> tuple[str, ...]:
    """Intel display devices (PCI vendor 0x8086) among the DRM cards: a few small sysfs reads, no driver calls."""
    found = []
    if drm.is_dir():
        for card in sorted(
            (c for c in drm.iterdir() if c.name[4:].isdigit() and c.name.startswith("card")),
            key=lambda c: int(c.name[4:]),
        ):
            try:
                if (card / "device" / "vendor").read_text().strip() == "0x8086":
                    found.append((card / "device" / "device").read_text().strip())
            except OSError:
                continue
    return tuple(found)


@functools.lru_cache(maxsize=1)
def hardware() -> Hardware:
    """This machine's hardware, probed on first call and cached."""
    cpu = _core.cpu_info()
    return Hardware(
        arch=cpu["arch"],
        cpu_vendor=_VENDORS.get(cpu["vendor"], "unknown"),
        cpu_brand=cpu["brand"],
        cpu_features=frozenset(cpu["features"]),
        cpu_count=os.cpu_count() or 1,
        cuda_gpus=_cuda_gpus(),
        npus=_npus(),
        intel_gpus=_intel_gpus(),
    )
