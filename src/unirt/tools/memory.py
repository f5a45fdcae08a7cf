"""Memory readings for benchmarks: this process's resident set (and its peak), and GPU memory through NVML.

On Linux the peak (VmHWM) is reset before each measurement by writing 5 to /proc/self/clear_refs, so each
backend's peak is its own. Elsewhere the peak is the process's lifetime maximum (`peak_is_process_lifetime`).
"""

from __future__ import annotations

import logging
import os
import resource
import sys

__all__ = ["reset_peak_rss", "rss_bytes", "peak_rss_bytes", "gpu_memory_bytes"]
log = logging.getLogger(__name__)
_STATUS = "/proc/self/status"


def _status_kb(field: str) -> int | None:
    try:
        with open(_STATUS) as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Start a new peak-RSS window; False where the OS cannot (the peak then covers the whole process life)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_bytes() -> int | None:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else None


def peak_rss_bytes() -> int:
    kb = _status_kb("VmHWM")
    if kb is not None:
        return kb * 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB on Linux/BSD


def gpu_memory_bytes(device: str) -> int | None:
    """GPU memory this process holds on a CUDA device ("cuda:0"), through NVML; None where it cannot be read."""
    if not device.startswith("cuda"):
        return None
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        log.info("GPU memory not measured: install nvidia-ml-py (part of unirt's tools extra)")
        return None
    index = int(device.partition(":")[2] or 0)
    try:
        pynvml.nvmlInit()
        try:
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
            used = [p.usedGpuMemory for p in procs if p.pid == os.getpid() and p.usedGpuMemory is not None]
            return sum(used) if used else 0
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # pynvml.NVMLError and driver-specific failures: the figure is optional
        log.info("GPU memory not measured: %s", exc)
        return None
