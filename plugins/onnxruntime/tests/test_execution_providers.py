"""More of the device/precision -> execution-provider mapping: ROCm, DirectML, the TensorRT EP's precisions,
requests that name an EP the device cannot use. Plain logic: no provider needs to be present."""

from __future__ import annotations

import pytest

from unirt import Device, Hardware, UnsupportedOptionError
from unirt_onnxruntime.providers import (
    COREML,
    CPU,
    CUDA,
    DML,
    OPENVINO,
    QNN,
    ROCM,
    TENSORRT,
    missing_gpu_note,
    offered_devices,
    providers_for,
)

GPU_BOX = Hardware("x86_64", "intel", "Xeon", frozenset(), 16, cuda_gpus=("NVIDIA L4",))
CPU_BOX = Hardware("x86_64", "amd", "EPYC", frozenset(), 16)
INTEL_NPU_BOX = Hardware("x86_64", "intel", "Core Ultra 7", frozenset(), 16, npus=("intel_vpu",))
MAC = Hardware("aarch64", "apple", "Apple M2", frozenset(), 8)
INTEL_GPU_BOX = Hardware("x86_64", "intel", "Core i7", frozenset(), 16, intel_gpus=("0x56a0",))


def test_rocm_and_directml_devices():
    assert offered_devices([ROCM, CPU], CPU_BOX) == ("rocm:0", "cpu")
    assert offered_devices([DML, CPU], CPU_BOX) == ("gpu:0", "cpu")
    assert providers_for(Device.parse("gpu"), "fp32", [ROCM, CPU], {}) == [(ROCM, {"device_id": 0}), (CPU, {})]
    assert providers_for(Device.parse("gpu:1"), "fp32", [DML, CPU], {}) == [(DML, {"device_id": 1}), (CPU, {})]


def test_tensorrt_ep_precisions_and_device_index():
    chain = providers_for(
        Device.parse("cuda:0"), "int8", [TENSORRT, CUDA, CPU], {"execution_provider": "tensorrt"}, quantized=True
    )
    assert chain[0] == (TENSORRT, {"device_id": 0, "trt_fp16_enable": False, "trt_int8_enable": True})
    assert chain[1] == (CUDA, {"device_id": 0, "use_tf32": 0})  # the CUDA fallback stays fp32 too
    with pytest.raises(UnsupportedOptionError, match="no bf16 mode for fp32 models on cuda"):
        providers_for(Device.parse("cuda"), "bf16", [TENSORRT, CUDA, CPU], {"execution_provider": "tensorrt"})


def test_tensorrt_ep_int8_needs_a_quantized_model():
    """Without a calibration table (trt_int8_calibration_table_name) TensorRT has no scales for an fp32 model's
    layers and silently keeps them in fp32: int8 from the TensorRT EP is a QDQ model's, or refused."""
    with pytest.raises(UnsupportedOptionError, match="int8 only from a quantized model.*trt_int8_calibration_table"):
        providers_for(Device.parse("cuda"), "int8", [TENSORRT, CUDA, CPU], {"execution_provider": "tensorrt"})


def test_fp32_is_never_tf32_on_cuda():
    """TensorRT and cuDNN compute fp32 in TF32 on Ampere+ by default. The CUDA EP turns it off with use_tf32=0
    (onnxruntime 1.18+; older ones refuse the option, so there only NVIDIA_TF32_OVERRIDE=0 makes fp32 honest);
    the TensorRT EP has no such option at all."""
    cuda = Device.parse("cuda")
    gpu_build = [TENSORRT, CUDA, CPU]
    assert providers_for(cuda, "fp32", gpu_build, {}, ort_version="1.18.0")[0] == (
        CUDA,
        {"device_id": 0, "use_tf32": 0},
    )
    with pytest.raises(
        UnsupportedOptionError,
        match=r"onnxruntime 1.17.1's CUDA EP has no use_tf32 option .*1\.18.*"
        "NVIDIA_TF32_OVERRIDE=0",
    ):
        providers_for(cuda, "fp32", gpu_build, {}, ort_version="1.17.1")
    assert providers_for(cuda, "fp32", gpu_build, {}, ort_version="1.16.3", tf32_override="0")[0] == (
        CUDA,
        {"device_id": 0},
    )  # no unknown option for an old CUDA EP
    with pytest.raises(
        UnsupportedOptionError,
        match="TensorRT EP has no option to turn off TF32.*NVIDIA_TF32_OVERRIDE=0.*backend='tensorrt'",
    ):
        providers_for(cuda, "fp32", gpu_build, {"execution_provider": "tensorrt"}, ort_version="1.22.0")
    with pytest.raises(UnsupportedOptionError, match="TensorRT EP has no option"):
        providers_for(cuda, "fp32", gpu_build, {"execution_provider": "tensorrt"}, tf32_override="1")
    chain = providers_for(cuda, "fp32", gpu_build, {"execution_provider": "tensorrt"}, tf32_override="0")
    assert [name for name, _ in chain] == [TENSORRT, CUDA, CPU]
    # faster modes are asked for: TF32 in their fp32 layers is not refused
    assert providers_for(cuda, "fp16", gpu_build, {"execution_provider": "tensorrt"})[0][0] == TENSORRT


def test_an_ep_that_does_not_fit_the_device_is_refused():
    with pytest.raises(UnsupportedOptionError, match="execution_provider 'cuda' does not run on the cpu"):
        providers_for(Device.parse("cpu"), "fp32", [CUDA, CPU], {"execution_provider": "cuda"})
    with pytest.raises(UnsupportedOptionError, match="no execution provider for device cuda"):
        providers_for(Device.parse("cuda"), "fp32", [ROCM, CPU], {})


def test_npu_by_name_and_gpu_on_a_cuda_build_without_gpu_offer():
    assert providers_for(Device.parse("npu"), "fp16", [QNN, CPU], {"execution_provider": "qnn"})[0] == (QNN, {})
    assert offered_devices([CUDA, CPU], GPU_BOX) == ("cuda:0", "cpu")


def test_a_cpu_build_on_a_gpu_machine_says_how_to_get_cuda():
    """Seen on an H100 machine with the CPU onnxruntime wheel: device='cuda' must say what to install."""
    note = missing_gpu_note([CPU], GPU_BOX)
    assert "has a CUDA GPU" in note and "install onnxruntime-gpu" in note and CPU in note
    assert missing_gpu_note([CUDA, CPU], GPU_BOX) == ""
    assert missing_gpu_note([CPU], CPU_BOX) == ""  # no GPU: nothing is missing


def test_auto_never_lands_on_an_npu():
    """An Intel-NPU box with the OpenVINO EP, and the stock macOS wheel (CoreML EP): device='auto' must give the
    CPU at fp32, not an NPU that then refuses fp32 (or runs it in fp16)."""
    auto = Device.parse("auto")
    for available, hw in (([OPENVINO, CPU], INTEL_NPU_BOX), ([COREML, CPU], MAC), ([QNN, CPU], CPU_BOX)):
        offered = offered_devices(available, hw)
        assert "npu" in offered
        picked = auto.pick(offered)
        assert picked == "cpu"
        assert providers_for(Device.parse(picked), "fp32", available, {}) == [(CPU, {})]


def test_npus_refuse_fp32_and_coreml_is_pinned_to_the_neural_engine():
    npu = Device.parse("npu")
    for ep in (OPENVINO, QNN, COREML):
        with pytest.raises(UnsupportedOptionError, match="NPU computes in fp16.*precision='fp16'"):
            providers_for(npu, "fp32", [ep, CPU], {})
    assert providers_for(npu, "fp16", [COREML, CPU], {}) == [
        (COREML, {"MLComputeUnits": "CPUAndNeuralEngine"}),
        (CPU, {}),
    ]


def test_intel_gpu_through_the_openvino_ep():
    assert offered_devices([OPENVINO, CPU], INTEL_GPU_BOX) == ("cpu", "gpu:0")
    assert offered_devices([OPENVINO, CPU], CPU_BOX) == ("cpu",)  # no Intel GPU, none offered
    assert Device.parse("auto").pick(offered_devices([OPENVINO, CPU], INTEL_GPU_BOX)) == "cpu"
    fp32 = providers_for(Device.parse("gpu:0"), "fp32", [OPENVINO, CPU], {})
    assert fp32 == [(OPENVINO, {"device_type": "GPU.0", "precision": "FP32"}), (CPU, {})]
    fp16 = providers_for(Device.parse("gpu"), "fp16", [OPENVINO, CPU], {"execution_provider": "openvino"})
    assert fp16[0] == (OPENVINO, {"device_type": "GPU", "precision": "FP16"})
    # named explicitly, the OpenVINO EP wins over a CUDA build's default for device 'gpu'
    both = providers_for(Device.parse("gpu:1"), "fp32", [CUDA, OPENVINO, CPU], {"execution_provider": "openvino"})
    assert both[0] == (OPENVINO, {"device_type": "GPU.1", "precision": "FP32"})
    with pytest.raises(UnsupportedOptionError, match="OpenVINOExecutionProvider is not in this build"):
        providers_for(Device.parse("gpu"), "fp32", [CPU], {"execution_provider": "openvino"})
