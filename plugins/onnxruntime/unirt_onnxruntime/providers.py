"""Mapping unirt's device and precision to ONNX Runtime execution providers. Pure logic: no onnxruntime import,
so every branch (CUDA, TensorRT, OpenVINO...) is testable on a machine without those providers."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from unirt import Device, Hardware, UnsupportedOptionError

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
OPENVINO = "OpenVINOExecutionProvider"
ROCM = "ROCMExecutionProvider"
DML = "DmlExecutionProvider"
COREML = "CoreMLExecutionProvider"
QNN = "QNNExecutionProvider"

# backend_options["execution_provider"] short names
EP_NAMES = {
    "cpu": CPU,
    "cuda": CUDA,
    "tensorrt": TENSORRT,
    "openvino": OPENVINO,
    "rocm": ROCM,
    "dml": DML,
    "coreml": COREML,
    "qnn": QNN,
}
_NPU_EPS = (OPENVINO, QNN, COREML)

Provider = tuple[str, dict[str, Any]]

#: The first onnxruntime whose CUDA EP takes `use_tf32` (microsoft/onnxruntime#19357 for cuBLAS, #19426 for cuDNN
#: convolutions, documented from 1.18); an older one refuses the whole session with "Unknown provider option".
CUDA_USE_TF32_SINCE = (1, 18)


def _version(text: str) -> tuple[int, ...]:
    """(major, minor) of an onnxruntime version string; unreadable -> treated as new."""
    parts = [int(p) for p in text.split(".")[:2] if p.isdigit()]
    return tuple(parts) if len(parts) == 2 else (999, 0)


def offered_devices(available: Sequence[str], hw: Hardware) -> tuple[str, ...]:
    """unirt devices this onnxruntime build can use on this machine, most capable first; Intel GPUs (through the
    OpenVINO EP) and NPUs come after the CPU, as in the OpenVINO plugin: they are used when asked for."""
    devices: list[str] = []
    if hw.cuda_gpus and (CUDA in available or TENSORRT in available):
        devices += [f"cuda:{i}" for i in range(len(hw.cuda_gpus))]
    if ROCM in available:
        devices.append("rocm:0")
    if DML in available:
        devices.append("gpu:0")
    devices.append("cpu")
    if OPENVINO in available and DML not in available:
        devices += [f"gpu:{i}" for i in range(len(hw.intel_gpus))]
    if any(ep in available for ep in _NPU_EPS) and (hw.npus or COREML in available or QNN in available):
        devices.append("npu")
    return tuple(devices)


def missing_gpu_note(available: Sequence[str], hw: Hardware) -> str:
    """Why this machine's CUDA GPUs are not offered, when they are not: the installed build lacks the provider."""
    if hw.cuda_gpus and CUDA not in available and TENSORRT not in available:
        return (
            "this machine has a CUDA GPU but the installed onnxruntime has no CUDAExecutionProvider "
            f"(it has {', '.join(available) or 'none'}): install onnxruntime-gpu in place of onnxruntime"
        )
    return ""


def _first_available(candidates: Sequence[str], available: Sequence[str]) -> str | None:
    return next((ep for ep in candidates if ep in available), None)


def providers_for(
    device: Device,
    precision: str,
    available: Sequence[str],
    options: Mapping[str, Any],
    quantized: bool = False,
    ort_version: str = "",
    tf32_override: str | None = None,
) -> list[Provider]:
    """The provider list (with provider options) for `InferenceSession`, most preferred first.

    `ort_version` is onnxruntime's version (the CUDA EP's options depend on it); `tf32_override` is the value of the
    NVIDIA_TF32_OVERRIDE environment variable ("0" turns TF32 off process-wide in cuBLAS, cuDNN and TensorRT).
    """
    wanted = options.get("execution_provider")
    if wanted is not None and wanted not in EP_NAMES:
        raise UnsupportedOptionError(
            f"onnxruntime: backend_options['execution_provider'] must be one of {', '.join(EP_NAMES)}, got {wanted!r}"
        )
    index = device.index or 0
    if device.kind == "cpu":
        if wanted not in (None, "cpu", "openvino"):
            raise UnsupportedOptionError(f"onnxruntime: execution_provider {wanted!r} does not run on the cpu")
        if wanted == "openvino":
            chain = [(OPENVINO, {"device_type": "CPU"})]
        else:
            chain = []
    elif device.kind == "gpu" and wanted == "openvino":
        chain = [(OPENVINO, {"device_type": _openvino_gpu(device)})]
    elif device.kind in ("cuda", "gpu") and (CUDA in available or TENSORRT in available) and wanted != "dml":
        chain = []
        if wanted == "tensorrt":
            chain.append((TENSORRT, {"device_id": index}))
        chain.append((CUDA, {"device_id": index}))
    elif device.kind in ("rocm", "gpu") and ROCM in available:
        chain = [(ROCM, {"device_id": index})]
    elif device.kind == "gpu" and DML in available:
        chain = [(DML, {"device_id": index})]
    elif device.kind == "gpu" and OPENVINO in available:  # Intel GPUs
        chain = [(OPENVINO, {"device_type": _openvino_gpu(device)})]
    elif device.kind == "npu":
        ep = EP_NAMES.get(wanted) if wanted else _first_available(_NPU_EPS, available)
        if ep is None or ep not in _NPU_EPS:
            raise UnsupportedOptionError(
                "onnxruntime: device 'npu' needs the OpenVINO, QNN or CoreML execution "
                "provider; this onnxruntime has " + ", ".join(available)
            )
        if precision == "fp32":
            # NPUs (Intel NPU, Qualcomm HTP, Apple Neural Engine) compute in fp16 or int8: fp32 would be a false label.
            raise UnsupportedOptionError(
                "onnxruntime: the NPU computes in fp16 (int8 for quantized models); ask "
                "for precision='fp16' or 'int8', or use device='cpu' for fp32"
            )
        # CoreML's default compute units ("ALL") may leave the model on the CPU or GPU: pin it to the Neural Engine.
        chain = [
            (
                ep,
                {"device_type": "NPU"}
                if ep == OPENVINO
                else {"MLComputeUnits": "CPUAndNeuralEngine"}
                if ep == COREML
                else {},
            )
        ]
    else:
        raise UnsupportedOptionError(
            f"onnxruntime: no execution provider for device {device} in this build (available: {', '.join(available)})"
        )
    chain = [_apply_precision(p, precision, _version(ort_version)) for p in chain]
    if (
        precision != "fp32"
        and not any(_runs_precision(p, precision, quantized) for p in chain)
        and not (precision == "int8" and quantized)
    ):
        raise UnsupportedOptionError(_precision_hint(device, precision))
    missing = [name for name, _ in chain if name not in available]
    if missing:
        raise UnsupportedOptionError(
            f"onnxruntime: execution provider {missing[0]} is not in this build (available: {', '.join(available)})"
        )
    if precision == "fp32" and tf32_override != "0":
        _refuse_tf32(chain, ort_version)
    return chain + [(CPU, {})]


def _apply_precision(provider: Provider, precision: str, version: tuple[int, ...]) -> Provider:
    name, opts = provider
    opts = dict(opts)
    if name == CUDA and version >= CUDA_USE_TF32_SINCE:
        # cuDNN/cuBLAS use TF32 on Ampere+ unless told not to: fp32 must mean fp32.
        opts["use_tf32"] = 0
    elif name == TENSORRT:
        # Python bools are what the EP's docs give for its bool options (it parses "True"/"False").
        opts["trt_fp16_enable"] = precision == "fp16"
        opts["trt_int8_enable"] = precision == "int8"
    elif name == OPENVINO:
        # Without an explicit precision OpenVINO runs bf16 on AMX CPUs and fp16 on GPUs.
        if opts.get("device_type") == "NPU":
            opts["precision"] = "FP16"
        else:
            opts["precision"] = "FP16" if precision == "fp16" else "FP32"
    return name, opts


def _refuse_tf32(chain: Sequence[Provider], ort_version: str) -> None:
    """fp32 on a provider that would compute it in TF32 (Ampere and later GPUs) with no option to stop it."""
    how = "set NVIDIA_TF32_OVERRIDE=0 in the environment before the process starts (it turns TF32 off process-wide)"
    for name, opts in chain:
        if name == TENSORRT:
            # onnxruntime's TensorRT EP leaves TensorRT's default BuilderFlag.TF32 set and has no option to clear it
            # (microsoft/onnxruntime#26029).
            raise UnsupportedOptionError(
                "onnxruntime: the TensorRT EP has no option to turn off TF32, which TensorRT uses for fp32 layers on "
                f"Ampere and later GPUs, so precision='fp32' would not be fp32. To run it: {how}; or use the CUDA EP "
                "(the default for device='cuda'), unirt's TensorRT backend (backend='tensorrt' clears TF32), or "
                "precision='fp16'"
            )
        if name == CUDA and "use_tf32" not in opts:
            raise UnsupportedOptionError(
                f"onnxruntime {ort_version}'s CUDA EP has no use_tf32 option (it came in "
                f"{'.'.join(map(str, CUDA_USE_TF32_SINCE))}), and cuDNN computes fp32 convolutions in TF32 on Ampere "
                f"and later GPUs, so precision='fp32' would not be fp32: upgrade onnxruntime-gpu, or {how}"
            )


def _openvino_gpu(device: Device) -> str:
    """The OpenVINO EP's device_type for a unirt gpu device: "GPU", or "GPU.1" for gpu:1."""
    return "GPU" if device.index is None else f"GPU.{device.index}"


def _runs_precision(provider: Provider, precision: str, quantized: bool) -> bool:
    name, opts = provider
    if precision == "fp16":
        if name == OPENVINO and opts.get("device_type") == "CPU":
            # OpenVINO's CPU plugin computes fp16 only with native fp16 arithmetic; elsewhere it would run fp32
            from unirt.plugin_sdk import cpu_arithmetic

            return cpu_arithmetic("fp16")[0]
        return (
            (name == TENSORRT and opts.get("trt_fp16_enable"))
            or (name == OPENVINO and opts.get("precision") == "FP16")
            or name in (DML, COREML, QNN)
        )
    if precision == "int8":
        # The TensorRT EP runs int8 from a QDQ model; an fp32 model needs a calibration table
        # (trt_int8_calibration_table_name), without which TensorRT silently keeps those layers in fp32/TF32.
        return quantized
    if precision == "bf16":
        return False  # no provider here runs an fp32 model in bf16; accepting it would run fp32 under a bf16 label
    return True


def _precision_hint(device: Device, precision: str) -> str:
    if precision == "bf16":
        return (
            f"onnxruntime has no bf16 mode for fp32 models on {device}; it supports fp32, fp16 (TensorRT/OpenVINO "
            "EPs) and int8 (quantized models)"
        )
    if precision == "fp16":
        lacks = ""
        if device.kind == "cpu":
            from unirt.plugin_sdk import cpu_arithmetic

            lacks = f" ({cpu_arithmetic('fp16')[1]}: the OpenVINO EP on this CPU would compute fp32)"
        return (
            f"onnxruntime cannot run an fp32 model in fp16 on {device}{lacks}: use device='cuda' with "
            "backend_options={'execution_provider': 'tensorrt'}, the OpenVINO EP on a GPU or a CPU with fp16 "
            "arithmetic, or convert the model to fp16 first (then load it with precision='fp32'); it supports "
            "fp32 here"
        )
    return (
        f"onnxruntime runs int8 only from a quantized model (QuantizeLinear/QLinear/Integer ops) on {device}; "
        "quantize the model first (the TensorRT EP takes a calibration table only through backend_options "
        "providers/provider_options: trt_int8_enable, trt_int8_calibration_table_name); it supports fp32 here"
    )
