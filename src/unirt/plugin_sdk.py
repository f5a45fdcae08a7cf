"""The plugin SDK: what a backend plugin may use of unirt beyond the contract (docs/plugins.md).

A plugin imports from `unirt` (the public API), the contract's modules (`unirt.backend`, `unirt.errors`,
`unirt.formats`, `unirt.tensor`, `unirt.devices`) and this module; nothing else of unirt's is promised to stay.
Names are imported on first use, so importing this module costs nothing (a plugin's backend module is imported
when plugins are listed).

Conversion sidecars (facts a converter wrote beside the converted model):
    `write_sidecar`, `read_sidecar`
Native output (engines that print to the process's stdout/stderr):
    `native_output_silenced`, `native_output_captured`
Canary loads (load a model in a child process first, where a native crash cannot take the caller down):
    `check_loads`
Precision (what the CPU computes a reduced precision in; caching a probe's result):
    `cpu_arithmetic`, `storage_only_allowed`, `storage_only_refusal`, `cached_probe`
Outputs of unknown rank (engines whose model files do not give output ranks, ncnn and MNN):
    `UnknownRankInfo`, `observe`
ONNX fix-ups a converter needs (a Softmax axis an engine reads differently), and a verified, cached mixed
precision copy of an ONNX model (engines that build typed networks, TensorRT 11):
    `coerced_softmax_axis`, `onnx_to_fp16`
Engines' own log lines (quiet unless unirt's CLI is verbose):
    `quiet_onnxruntime`, `filtered_stderr`
Quantized models (a model whose own ops are int8: what it computes whatever precision was asked):
    `onnx_quantization_ops`, `quantized_info`, `quantized_precision`
Machine and cache:
    `hardware`, `Hardware`, `cache_dir`
"""

from __future__ import annotations

import importlib
from typing import Any

#: name -> the unirt module it lives in. Everything a plugin may use beyond the contract, and nothing more.
_EXPORTS = {
    "write_sidecar": "unirt.conversion.signature",
    "read_sidecar": "unirt.conversion.signature",
    "native_output_silenced": "unirt.native_output",
    "native_output_captured": "unirt.native_output",
    "check_loads": "unirt.canary",
    "cpu_arithmetic": "unirt.precision",
    "storage_only_allowed": "unirt.precision",
    "storage_only_refusal": "unirt.precision",
    "cached_probe": "unirt.precision",
    "UnknownRankInfo": "unirt.unknown_rank",
    "observe": "unirt.unknown_rank",
    "coerced_softmax_axis": "unirt.conversion.fixups",
    "onnx_to_fp16": "unirt.conversion.mixed_precision",
    "quiet_onnxruntime": "unirt.engine_logs",
    "filtered_stderr": "unirt.engine_logs",
    "onnx_quantization_ops": "unirt.quantized",
    "quantized_info": "unirt.quantized",
    "quantized_precision": "unirt.quantized",
    "hardware": "unirt.hardware",
    "Hardware": "unirt.hardware",
    "cache_dir": "unirt.cache",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"unirt.plugin_sdk has no {name!r}; a plugin may use: {', '.join(__all__)}")
    # Not kept here: a test that monkeypatches the name where it lives is seen by the plugin's next import.
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
