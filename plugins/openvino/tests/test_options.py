"""unirt's options in OpenVINO's terms, for devices and CPUs this machine may not have (GPU, NPU, AMX)."""

from __future__ import annotations

import pytest

from unirt import Device, UnsupportedOptionError
from unirt_openvino.options import (
    common_capabilities,
    compile_settings,
    device_name,
    float64_allowed,
    offered_devices,
    parse_dims,
    precision_hint,
    precision_in_force,
    precision_info,
    real_devices,
)

CPU_BF16 = ["BF16", "WINOGRAD", "FP32", "INT8", "BIN", "EXPORT_IMPORT"]  # this machine's CPU
GPU = ["FP32", "BIN", "FP16", "INT8", "GPU_HW_MATMUL", "EXPORT_IMPORT"]
NPU = ["FP16", "INT8", "EXPORT_IMPORT"]


def test_offered_devices():
    assert offered_devices(["CPU"]) == ("cpu",)
    assert offered_devices(["CPU", "GPU.0", "GPU.1", "NPU"]) == ("cpu", "gpu:0", "gpu:1", "npu")
    assert offered_devices(["GPU", "CPU"]) == ("cpu", "gpu:0")
    assert offered_devices([]) == ()


def test_device_names():
    assert device_name(Device.parse("cpu"), ["CPU"]) == "CPU"
    assert device_name(Device.parse("gpu"), ["CPU", "GPU"]) == "GPU"
    assert device_name(Device.parse("gpu:1"), ["CPU", "GPU.0", "GPU.1"]) == "GPU.1"
    assert device_name(Device.parse("npu"), ["NPU"]) == "NPU"
    with pytest.raises(UnsupportedOptionError, match="runs on cpu, gpu"):
        device_name(Device.parse("cuda"), ["CPU"])


def test_fp32_is_always_asked_for_explicitly():
    # OpenVINO's own default would be bf16 on this CPU and f16 on a GPU
    assert precision_hint("fp32", CPU_BF16, False, "CPU") == "f32"
    assert precision_hint("fp32", GPU, False, "GPU") == "f32"
    assert precision_hint("bf16", CPU_BF16, False, "CPU") == "bf16"
    assert precision_hint("fp16", GPU, False, "GPU") == "f16"


def test_precisions_a_device_lacks_are_refused_with_what_it_supports():
    with pytest.raises(UnsupportedOptionError, match="CPU has no fp16 mode here; it supports fp32, bf16, int8"):
        precision_hint("fp16", CPU_BF16, False, "CPU")
    with pytest.raises(UnsupportedOptionError, match="NPU has no fp32 mode here; it supports fp16, int8"):
        precision_hint("fp32", NPU, False, "NPU")
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model.*fp32, bf16"):
        precision_hint("int8", CPU_BF16, False, "CPU")
    assert precision_hint("int8", CPU_BF16, True, "CPU") == "f32"  # the float parts of a quantized model stay fp32


def test_precision_in_force():
    assert precision_in_force("f32", "fp32", False) == "fp32"
    assert precision_in_force("bf16", "bf16", False) == "bf16"
    assert precision_in_force("f32", "fp32", True) == "int8"
    # AUTO/MULTI/HETERO report one hint per device they run on: the least precise one is what the model gets
    assert precision_in_force(["f32", "f32"], "fp32", False) == "fp32"
    assert precision_in_force(["f32", "f16"], "fp32", False) == "fp16"
    assert precision_in_force([], "fp32", False) == "fp32"  # nothing reported: the hint that was set


def test_real_devices_behind_virtual_ones():
    available = ["CPU", "GPU.0", "GPU.1", "NPU"]
    assert real_devices("CPU", available) == ["CPU"]
    assert real_devices("GPU.1", available) == ["GPU.1"]
    assert real_devices("AUTO:GPU.1,CPU", available) == ["GPU.1", "CPU"]
    assert real_devices("MULTI:CPU", available) == ["CPU"]
    assert real_devices("HETERO:GPU,CPU", available) == ["GPU", "CPU"]
    assert real_devices("BATCH:GPU(4)", available) == ["GPU"]
    assert real_devices("AUTO:HETERO:GPU,CPU", available) == ["GPU", "CPU"]
    assert real_devices("AUTO", available) == available
    assert real_devices("AUTO:-NPU,-GPU", available) == ["CPU"]


def test_capabilities_of_virtual_devices_are_what_every_real_device_offers():
    assert common_capabilities({"CPU": CPU_BF16}) == CPU_BF16
    assert common_capabilities({"GPU": GPU, "CPU": CPU_BF16}) == ["FP32", "BIN", "INT8", "EXPORT_IMPORT"]
    assert precision_hint("fp32", common_capabilities({"GPU": GPU, "CPU": CPU_BF16}), False, "AUTO:GPU,CPU") == "f32"
    with pytest.raises(UnsupportedOptionError, match="AUTO:GPU,NPU has no fp32 mode here; it supports fp16, int8"):
        precision_hint("fp32", common_capabilities({"GPU": GPU, "NPU": NPU}), False, "AUTO:GPU,NPU")
    assert "FP32" in common_capabilities({})  # nothing could be asked: compile_model judges


def test_float64_needs_an_explicit_opt_in():
    assert float64_allowed({}) is False
    assert float64_allowed({"allow_float64_as_float32": True}) is True
    with pytest.raises(UnsupportedOptionError, match="allow_float64_as_float32 must be True or False"):
        float64_allowed({"allow_float64_as_float32": "yes"})
    s = compile_settings(
        Device.parse("cpu"), ["CPU"], "fp32", CPU_BF16, None, {"allow_float64_as_float32": True}, False
    )
    assert "allow_float64_as_float32" not in s.config  # unirt's own option, not an OpenVINO property


def test_compile_settings():
    s = compile_settings(
        Device.parse("cpu"),
        ["CPU"],
        "fp32",
        CPU_BF16,
        2,
        {
            "performance_hint": "throughput",
            "num_streams": 2,
            "NUM_STREAMS": 3,
            "config": {"ENABLE_CPU_PINNING": False},
            "shapes": {"x": [1, "2..8", None]},
        },
        False,
    )
    assert s.device == "CPU"
    assert s.config == {
        "INFERENCE_PRECISION_HINT": "f32",
        "INFERENCE_NUM_THREADS": 2,
        "PERFORMANCE_HINT": "THROUGHPUT",
        "NUM_STREAMS": 3,
        "ENABLE_CPU_PINNING": False,
    }
    assert s.shapes == {"x": [1, (2, 8), -1]}
    assert (
        compile_settings(
            Device.parse("cpu"), ["CPU"], "fp32", CPU_BF16, None, {"device_name": "AUTO:GPU,CPU"}, False
        ).device
        == "AUTO:GPU,CPU"
    )


@pytest.mark.parametrize(
    "options, message",
    [
        ({"nope": 1}, "unknown backend option 'nope'"),
        ({"performance_hint": "fast"}, "performance_hint must be one of latency, throughput"),
        ({"num_streams": 0}, "num_streams must be a positive int or 'auto'"),
        ({"shapes": [1, 2]}, "shapes must be a dict"),
        ({"config": 3}, "config must be a dict"),
        ({"device_name": 3}, "device_name must be a string"),
    ],
)
def test_bad_options(options, message):
    with pytest.raises(UnsupportedOptionError, match=message):
        compile_settings(Device.parse("cpu"), ["CPU"], "fp32", CPU_BF16, None, options, False)


def test_parse_dims():
    assert parse_dims("x", "1x3x224x224") == [1, 3, 224, 224]
    assert parse_dims("x", [-1, "?", None, (1, 4), "..5"]) == [-1, -1, -1, (1, 4), (0, 5)]
    with pytest.raises(UnsupportedOptionError, match="dim 1.5"):
        parse_dims("x", [1.5])


def test_a_refused_reduced_precision_names_what_the_device_lacks():
    from unirt.precision import cpu_arithmetic

    with pytest.raises(
        UnsupportedOptionError,
        match=r"CPU has no bf16 mode here; it supports fp32, int8 "
        r"\(OPTIMIZATION_CAPABILITIES: FP32, INT8; OpenVINO's CPU bf16 "
        r"kernels need native bf16 arithmetic: CPU (has|lacks) ",
    ):
        precision_hint("bf16", ["FP32", "INT8"], False, "CPU")
    # on the CPU the refusal says which instructions this machine has or lacks
    with pytest.raises(UnsupportedOptionError) as info:
        precision_hint("fp16", ["FP32", "INT8"], False, "CPU")
    assert cpu_arithmetic("fp16")[1] in str(info.value)
    with pytest.raises(
        UnsupportedOptionError,
        match=r"NPU has no bf16 mode here; it supports fp16, int8 "
        r"\(OPTIMIZATION_CAPABILITIES: FP16, INT8, EXPORT_IMPORT\)$",
    ):
        precision_hint("bf16", NPU, False, "NPU")


def test_precision_info_says_what_the_compiled_model_reports_and_why():
    from unirt.precision import cpu_arithmetic

    assert (
        precision_info("fp32", ["f32"], "CPU", ["FP32", "INT8"])
        == "fp32 (OpenVINO INFERENCE_PRECISION_HINT=f32 on the compiled model for CPU)"
    )
    text = precision_info("bf16", ["bf16"], "CPU", CPU_BF16)
    assert (
        text.startswith(
            "bf16 (OpenVINO INFERENCE_PRECISION_HINT=bf16 on the compiled model for CPU; "
            "OPTIMIZATION_CAPABILITIES lists BF16; "
        )
        and cpu_arithmetic("bf16")[1] in text
    )
    assert precision_info("fp16", ["f16"], "GPU.0", GPU).endswith("OPTIMIZATION_CAPABILITIES lists FP16)")
    assert precision_info("int8", ["f32"], "CPU", CPU_BF16, ("FakeQuantize",)) == (
        "int8 (the model is quantized: FakeQuantize; OpenVINO runs its FakeQuantize parts in int8; the rest at "
        "INFERENCE_PRECISION_HINT f32)"
    )
    # ONNX dynamic quantization: OpenVINO decomposes it into fp32 arithmetic, and says so
    assert "fp32 arithmetic that rounds to int8 (no FakeQuantize: no int8 kernels)" in precision_info(
        "int8", ["f32"], "CPU", CPU_BF16, ("ConvInteger", "DynamicQuantizeLinear"), int8_kernels=False
    )
