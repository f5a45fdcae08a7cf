"""unirt's device, precision, threads and backend_options in OpenVINO's terms. Pure logic, no openvino import, so
every branch (GPU, NPU, bf16 CPUs) is testable on any machine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from unirt import Device, UnsupportedOptionError, cache_dir
from unirt.plugin_sdk import quantized_info

# unirt precision -> (OpenVINO INFERENCE_PRECISION_HINT, the OPTIMIZATION_CAPABILITIES entry it needs)
PRECISION_HINTS = {"fp32": ("f32", "FP32"), "fp16": ("f16", "FP16"), "bf16": ("bf16", "BF16"), "int8": ("f32", "INT8")}
# OpenVINO element type names (ov.Type.get_type_name()) -> unirt precision, to report what is in force
HINT_NAMES = {"f32": "fp32", "f16": "fp16", "bf16": "bf16", "float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}
PERFORMANCE_HINTS = {"latency": "LATENCY", "throughput": "THROUGHPUT", "cumulative_throughput": "CUMULATIVE_THROUGHPUT"}
# backend_options keys unirt interprets; UPPER_CASE keys are OpenVINO properties and go to compile_model verbatim.
OWN_KEYS = (
    "performance_hint",
    "num_streams",
    "cache_dir",
    "shapes",
    "device_name",
    "config",
    "allow_float64_as_float32",
)
# Devices that hand a model to other devices: "AUTO:GPU,CPU", "MULTI:GPU,CPU", "HETERO:GPU,CPU", "BATCH:GPU(4)".
VIRTUAL_DEVICES = frozenset({"AUTO", "MULTI", "HETERO", "BATCH"})
# Ops that make a model quantized for OpenVINO (ONNX QDQ is read as FakeQuantize; IR from NNCF has FakeQuantize or
# FakeConvert); precision="int8" runs such a model, it cannot quantize an fp32 one.
QUANTIZED_OPS = frozenset({"FakeQuantize", "FakeConvert", "QuantizeLinear", "DequantizeLinear"})


def offered_devices(available: Sequence[str]) -> tuple[str, ...]:
    """unirt devices for OpenVINO's available devices ("CPU", "GPU.0", "NPU"): CPU first, then GPUs, then NPUs.

    CPU leads: an integrated GPU is often slower than the CPU on small models and compiles far more slowly, and
    NPUs are used when asked for.
    """
    devices: list[str] = []
    if "CPU" in available:
        devices.append("cpu")
    for name in available:
        kind, _, index = name.partition(".")
        if kind == "GPU":
            devices.append(f"gpu:{int(index) if index.isdigit() else 0}")
    if any(name.partition(".")[0] == "NPU" for name in available):
        devices.append("npu")
    return tuple(devices)


def device_name(device: Device, available: Sequence[str]) -> str:
    """OpenVINO's name for a unirt device: cpu -> CPU, gpu:1 -> GPU.1, npu -> NPU."""
    if device.kind == "cpu":
        return "CPU"
    if device.kind == "gpu":
        index = device.index or 0
        for name in (f"GPU.{index}", "GPU" if index == 0 else None):
            if name in available:
                return name
        return f"GPU.{index}"
    if device.kind == "npu":
        return "NPU"
    raise UnsupportedOptionError(f"openvino: no device {device}; it runs on cpu, gpu[:N] (Intel GPUs) and npu")


def real_devices(name: str, available: Sequence[str]) -> list[str]:
    """The devices that run a model compiled for device string `name`: "GPU.1" -> [GPU.1], "AUTO:GPU,CPU" ->
    [GPU, CPU], "BATCH:GPU(4)" -> [GPU]; a virtual device with no list ("AUTO", "AUTO:-CPU") -> the available
    devices it may pick (less those excluded with "-")."""
    kind, _, rest = name.partition(":")
    if kind.strip().upper() not in VIRTUAL_DEVICES:
        return [name]
    if ":" in rest.split(",")[0]:  # nested: "AUTO:HETERO:GPU,CPU"
        return real_devices(rest, available)
    entries = [e.strip().split("(")[0] for e in rest.split(",") if e.strip()]
    excluded = {e[1:] for e in entries if e.startswith("-")}
    listed = [e for e in entries if not e.startswith("-")]
    return listed or [d for d in available if d not in excluded and d.partition(".")[0] not in excluded]


def common_capabilities(per_device: Mapping[str, Sequence[str]]) -> list[str]:
    """What every device that may run the model offers (OPTIMIZATION_CAPABILITIES): precision="fp32" must hold on
    whichever device AUTO picks and on every device MULTI or HETERO spreads the model over."""
    sets = [set(caps) for caps in per_device.values()]
    if not sets:  # nothing could be asked: let compile_model judge
        return [cap for _, cap in PRECISION_HINTS.values()]
    common = set.intersection(*sets)
    return [cap for cap in next(iter(per_device.values())) if cap in common]


def float64_allowed(options: Mapping[str, Any]) -> bool:
    """backend_options["allow_float64_as_float32"]: run float64 models although OpenVINO computes them in
    float32 (refused by default: unirt's precision="fp32" promises the model's own precision)."""
    allowed = options.get("allow_float64_as_float32", False)
    if not isinstance(allowed, bool):
        raise UnsupportedOptionError(f"openvino: allow_float64_as_float32 must be True or False, got {allowed!r}")
    return allowed


def _lacking(precision: str, device: str, capabilities: Sequence[str]) -> str:
    """What the device lacks for a reduced float precision, for the refusal: OpenVINO's own capability list, and on
    the CPU the instructions its bf16/fp16 kernels need."""
    if precision not in ("bf16", "fp16"):
        return ""
    text = f" (OPTIMIZATION_CAPABILITIES: {', '.join(capabilities) or 'none'}"
    if device.upper().startswith("CPU"):
        from unirt.plugin_sdk import cpu_arithmetic

        cpu = cpu_arithmetic(precision)[1]
        text += f"; OpenVINO's CPU {precision} kernels need native {precision} arithmetic: {cpu}"
    return text + ")"


def precision_hint(precision: str, capabilities: Sequence[str], quantized: bool, device: str) -> str:
    """The INFERENCE_PRECISION_HINT for a unirt precision. Always explicit: without it OpenVINO runs bf16 on CPUs
    with AVX512-BF16/AMX and fp16 on GPUs, so precision="fp32" would not give fp32 answers."""
    hint, capability = PRECISION_HINTS[precision]
    supported = [p for p, (_, cap) in PRECISION_HINTS.items() if cap in capabilities]
    if capability not in capabilities:
        raise UnsupportedOptionError(
            f"openvino: {device} has no {precision} mode here; it supports "
            f"{', '.join(supported) or 'none of fp32, fp16, bf16, int8'}"
            f"{_lacking(precision, device, capabilities)}"
        )
    if precision == "int8" and not quantized:
        raise UnsupportedOptionError(
            "openvino runs int8 only from a quantized model (FakeQuantize or ONNX "
            "QuantizeLinear/DequantizeLinear); quantize the model first (e.g. with NNCF), "
            f"or ask for one of {', '.join(p for p in supported if p != 'int8')}"
        )
    return hint


@dataclass(frozen=True)
class CompileSettings:
    """What `compile_model` gets: the device string, the properties, the reshape and the cache dir."""

    device: str
    config: dict[str, Any] = field(default_factory=dict)
    shapes: dict[str, list[Any]] = field(default_factory=dict)


def parse_dims(name: str, dims: Any) -> list[Any]:
    """A shape for `Model.reshape`: ints, -1/None for a dynamic dim, (lo, hi) or "lo..hi" for a bounded one."""
    if isinstance(dims, str):
        dims = [d for d in dims.replace("x", ",").split(",") if d]
    if not isinstance(dims, (list, tuple)):
        raise UnsupportedOptionError(f"openvino: shapes[{name!r}] must be a list of dims, got {dims!r}")
    parsed: list[Any] = []
    for d in dims:
        if d is None or d == -1 or d == "?":
            parsed.append(-1)
        elif isinstance(d, int) and not isinstance(d, bool) and d >= 0:
            parsed.append(d)
        elif isinstance(d, str) and ".." in d:
            lo, _, hi = d.partition("..")
            parsed.append((int(lo or 0), int(hi) if hi else -1))
        elif isinstance(d, str) and d.isdigit():
            parsed.append(int(d))
        elif isinstance(d, (tuple, list)) and len(d) == 2 and all(isinstance(v, int) for v in d):
            parsed.append((d[0], d[1]))
        else:
            raise UnsupportedOptionError(
                f"openvino: shapes[{name!r}]: dim {d!r} is not an int, -1/None (dynamic), 'lo..hi' or (lo, hi)"
            )
    return parsed


def compile_settings(
    device: Device,
    available: Sequence[str],
    precision: str,
    capabilities: Sequence[str],
    threads: int | None,
    options: Mapping[str, Any],
    quantized: bool,
) -> CompileSettings:
    """Everything unirt's options mean for `Core.compile_model`, checked before OpenVINO sees any of it."""
    unknown = [k for k in options if k not in OWN_KEYS and not (isinstance(k, str) and k.isupper())]
    if unknown:
        raise UnsupportedOptionError(
            f"openvino: unknown backend option {unknown[0]!r}; use one of "
            f"{', '.join(OWN_KEYS)}, or an OpenVINO property name in upper case "
            "(e.g. 'NUM_STREAMS')"
        )
    name = options.get("device_name") or device_name(device, available)
    if not isinstance(name, str):
        raise UnsupportedOptionError(f"openvino: device_name must be a string such as 'AUTO:GPU,CPU', got {name!r}")
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint(precision, capabilities, quantized, name)}
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = threads
    hint = options.get("performance_hint", "latency")
    if hint not in PERFORMANCE_HINTS:
        raise UnsupportedOptionError(
            f"openvino: performance_hint must be one of {', '.join(PERFORMANCE_HINTS)}, got {hint!r}"
        )
    config["PERFORMANCE_HINT"] = PERFORMANCE_HINTS[hint]
    if "num_streams" in options:
        streams = options["num_streams"]
        if not (streams == "auto" or (isinstance(streams, int) and not isinstance(streams, bool) and streams > 0)):
            raise UnsupportedOptionError(f"openvino: num_streams must be a positive int or 'auto', got {streams!r}")
        config["NUM_STREAMS"] = "AUTO" if streams == "auto" else streams
    cache = options.get("cache_dir")
    if cache is True:
        config["CACHE_DIR"] = str(cache_dir("openvino"))
    elif cache is not None and cache is not False:
        config["CACHE_DIR"] = str(cache)
    extra = options.get("config", {})
    if not isinstance(extra, Mapping):
        raise UnsupportedOptionError(f"openvino: config must be a dict of OpenVINO properties, got {extra!r}")
    config.update({k: v for k, v in options.items() if isinstance(k, str) and k.isupper()})
    config.update(extra)
    shapes = options.get("shapes", {})
    if not isinstance(shapes, Mapping):
        raise UnsupportedOptionError(f"openvino: shapes must be a dict {{input name: dims}}, got {shapes!r}")
    return CompileSettings(name, config, {str(k): parse_dims(str(k), v) for k, v in shapes.items()})


# unirt precisions from the most precise to the least: a model spread over devices runs at its least precise one.
_BY_PRECISION = ("fp32", "bf16", "fp16")


def precision_info(
    in_force: str,
    hint_type_names: Sequence[str],
    device: str,
    capabilities: Sequence[str],
    quantized_ops: Sequence[str] = (),
    int8_kernels: bool = True,
) -> str:
    """How the precision in force was determined: the compiled model's INFERENCE_PRECISION_HINT (read back, not the
    one asked for), the device's capabilities and, on the CPU, the instructions behind a reduced precision. For a
    quantized model: its quantization ops, and whether OpenVINO reads them as FakeQuantize (int8 kernels) or as
    fp32 arithmetic that rounds to int8 (ONNX dynamic quantization: the int8 error without int8 speed)."""
    if in_force == "int8":
        rest = f"the rest at INFERENCE_PRECISION_HINT {'/'.join(hint_type_names) or 'f32'}"
        how = (
            "OpenVINO runs its FakeQuantize parts in int8"
            if int8_kernels
            else "OpenVINO reads them as fp32 arithmetic that rounds to int8 (no FakeQuantize: no int8 kernels)"
        )
        return quantized_info("/".join(quantized_ops) or "FakeQuantize", f"{how}; {rest}")
    hints = "/".join(hint_type_names) or "not reported"
    text = f"{in_force} (OpenVINO INFERENCE_PRECISION_HINT={hints} on the compiled model for {device}"
    if in_force in ("bf16", "fp16"):
        cap = PRECISION_HINTS[in_force][1]
        text += f"; OPTIMIZATION_CAPABILITIES lists {cap}"
        if device.upper().startswith("CPU"):
            from unirt.plugin_sdk import cpu_arithmetic

            text += f"; {cpu_arithmetic(in_force)[1]}"
    return text + ")"


def precision_in_force(hint_type_names: str | Sequence[str], requested: str, quantized: bool) -> str:
    """unirt's name for the precision in force: int8 for a quantized model (OpenVINO runs its FakeQuantize parts in
    int8 whatever the hint), else the precision the compiled model reports: for a virtual device (AUTO, MULTI,
    HETERO) one per real device, and the least precise of them counts; none reported: the one asked for."""
    if quantized:
        return "int8"
    names = [hint_type_names] if isinstance(hint_type_names, str) else list(hint_type_names)
    found = [HINT_NAMES.get(n, n) for n in names]
    if not found:
        return requested
    return max(found, key=lambda p: _BY_PRECISION.index(p) if p in _BY_PRECISION else len(_BY_PRECISION))
