"""The device/precision -> execution-provider mapping, for providers this machine does not have (CUDA, TensorRT,
OpenVINO, NPUs). The mapping is plain logic; whether onnxruntime then starts those providers needs the device."""

from __future__ import annotations

import re

import pytest

from unirt import Device, Hardware, UnsupportedOptionError
from unirt_onnxruntime.providers import (
    CPU,
    CUDA,
    OPENVINO,
    QNN,
    TENSORRT,
    offered_devices,
    providers_for,
)

GPU_BOX = Hardware("x86_64", "intel", "Xeon", frozenset(), 16, cuda_gpus=("NVIDIA H100", "NVIDIA H100"))
CPU_BOX = Hardware("x86_64", "amd", "EPYC", frozenset(), 16)
NPU_BOX = Hardware("x86_64", "intel", "Core Ultra", frozenset(), 16, npus=("intel_vpu",))
GPU_BUILD = [TENSORRT, CUDA, CPU]


def test_offered_devices():
    assert offered_devices(GPU_BUILD, GPU_BOX) == ("cuda:0", "cuda:1", "cpu")
    assert offered_devices(GPU_BUILD, CPU_BOX) == ("cpu",)  # GPU build, no GPU
    assert offered_devices([CPU], GPU_BOX) == ("cpu",)  # GPU, CPU-only build
    assert offered_devices([OPENVINO, CPU], NPU_BOX) == ("cpu", "npu")  # NPUs when asked for, after the CPU


def test_cuda_mapping_keeps_fp32_honest():
    chain = providers_for(Device.parse("cuda:1"), "fp32", GPU_BUILD, {})
    assert chain == [(CUDA, {"device_id": 1, "use_tf32": 0}), (CPU, {})]


def test_tensorrt_ep_first_when_asked():
    chain = providers_for(Device.parse("cuda"), "fp16", GPU_BUILD, {"execution_provider": "tensorrt"})
    assert chain[0] == (TENSORRT, {"device_id": 0, "trt_fp16_enable": True, "trt_int8_enable": False})
    assert chain[1][0] == CUDA and chain[-1][0] == CPU
    # fp32 needs TF32 off, which the TensorRT EP has no option for: only NVIDIA_TF32_OVERRIDE=0 does it
    fp32 = providers_for(Device.parse("cuda"), "fp32", GPU_BUILD, {"execution_provider": "tensorrt"}, tf32_override="0")
    assert fp32[0][1]["trt_fp16_enable"] is False


def test_fp16_on_plain_cuda_is_refused():
    with pytest.raises(UnsupportedOptionError, match="cannot run an fp32 model in fp16 on cuda"):
        providers_for(Device.parse("cuda"), "fp16", GPU_BUILD, {})


def test_openvino_ep_precision_is_explicit():
    chain = providers_for(Device.parse("cpu"), "fp32", [OPENVINO, CPU], {"execution_provider": "openvino"})
    assert chain[0] == (OPENVINO, {"device_type": "CPU", "precision": "FP32"})
    npu = providers_for(Device.parse("npu"), "fp16", [OPENVINO, CPU], {})
    assert npu[0] == (OPENVINO, {"device_type": "NPU", "precision": "FP16"})
    with pytest.raises(UnsupportedOptionError, match="NPU computes in fp16"):
        providers_for(Device.parse("npu"), "fp32", [OPENVINO, CPU], {})
    assert providers_for(Device.parse("npu"), "fp16", [QNN, CPU], {})[0] == (QNN, {})


def test_int8():
    assert providers_for(Device.parse("cpu"), "int8", [CPU], {}, quantized=True) == [(CPU, {})]
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model"):
        providers_for(Device.parse("cpu"), "int8", [CPU], {}, quantized=False)
    trt = providers_for(Device.parse("cuda"), "int8", GPU_BUILD, {"execution_provider": "tensorrt"}, quantized=True)
    assert trt[0][1]["trt_int8_enable"] is True


def test_errors():
    with pytest.raises(UnsupportedOptionError, match="no execution provider for device cuda"):
        providers_for(Device.parse("cuda"), "fp32", [CPU], {})
    with pytest.raises(UnsupportedOptionError, match="needs the OpenVINO, QNN or CoreML"):
        providers_for(Device.parse("npu"), "fp16", [CPU], {})
    with pytest.raises(UnsupportedOptionError, match=r"execution_provider'\] must be one of"):
        providers_for(Device.parse("cpu"), "fp32", [CPU], {"execution_provider": "vulkan"})
    with pytest.raises(UnsupportedOptionError, match="is not in this build"):
        providers_for(Device.parse("cuda"), "fp32", [CUDA, CPU], {"execution_provider": "tensorrt"})


def test_openvino_ep_fp16_on_the_cpu_needs_fp16_arithmetic():
    """OpenVINO's CPU plugin ignores an fp16 hint on a CPU without native fp16 arithmetic (it runs fp32): the EP is
    offered for fp16 on the CPU only where unirt.hardware finds it, and the refusal names what the CPU lacks."""
    from unirt.precision import cpu_arithmetic

    native, why = cpu_arithmetic("fp16")
    options = {"execution_provider": "openvino"}
    if native:
        chain = providers_for(Device.parse("cpu"), "fp16", [OPENVINO, CPU], options)
        assert chain[0] == (OPENVINO, {"device_type": "CPU", "precision": "FP16"})
    else:
        with pytest.raises(UnsupportedOptionError, match=re.escape(f"on cpu ({why}: the OpenVINO EP on this CPU")):
            providers_for(Device.parse("cpu"), "fp16", [OPENVINO, CPU], options)
    # an Intel GPU through the same EP computes fp16 itself
    gpu = providers_for(Device.parse("gpu"), "fp16", [OPENVINO, CPU], options)
    assert gpu[0] == (OPENVINO, {"device_type": "GPU", "precision": "FP16"})
