"""Device tensors given to Session.run: what needs no GPU. Host-only backends refuse CUDA tensors with a clear
InputError (or copy them when asked); a backend that takes them gets them checked from their metadata, uncopied;
the DLPack metadata reader works on real capsules. The GPU side runs in scripts/gpu_check.sh."""

from __future__ import annotations

import numpy as np
import pytest

import unirt
from unirt.device_tensors import DeviceTensor, _dlpack_meta, describe, device_of
from unirt.feeds import InputChecker
from unirt.tensor import TensorInfo


class FakeCudaDLPack:
    """A DLPack producer that says its memory is on cuda:0 (kDLCUDA = 2). Its memory must never be read: __dlpack__
    raises. `host` backs the producer's own copy method (.cpu())."""

    def __init__(self, host: np.ndarray) -> None:
        self.host = host

    def __dlpack_device__(self) -> tuple[int, int]:
        return (2, 0)

    def __dlpack__(self, **kwargs: object) -> object:
        raise BufferError("device memory: not readable from the host")

    def cpu(self) -> np.ndarray:
        return self.host.copy()


class FakeCAI:
    """An object with a __cuda_array_interface__ (version 3), as CuPy and Numba arrays have."""

    def __init__(
        self,
        shape: tuple[int, ...],
        typestr: str = "<f4",
        strides: tuple[int, ...] | None = None,
        ptr: int = 0x7F0000000000,
    ) -> None:
        self.__cuda_array_interface__ = {
            "shape": shape,
            "typestr": typestr,
            "data": (ptr, False),
            "strides": strides,
            "version": 3,
        }


def test_host_only_backend_refuses_a_cuda_tensor_saying_what_to_do(model):
    x = np.ones((2, 8), np.float32)
    with unirt.Session(model("dynamic_mlp"), backend="onnxruntime", device="cpu") as sess:
        for fake in (FakeCudaDLPack(x), FakeCAI((2, 8))):
            with pytest.raises(unirt.InputError) as err:
                sess.run({"x": fake})
            text = str(err.value)
            assert "input 'x' is on cuda:0" in text and "(onnxruntime, cpu) takes host memory" in text
            assert "x.cpu()" in text and "copy_device_inputs=True" in text


def test_copy_device_inputs_copies_to_the_host(model):
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    with unirt.Session(model("dynamic_mlp"), backend="onnxruntime", device="cpu", copy_device_inputs=True) as sess:
        np.testing.assert_array_equal(sess.run({"x": FakeCudaDLPack(x)})["probs"], sess.run({"x": x})["probs"])


def test_device_options_are_checked(model):
    with pytest.raises(unirt.UnsupportedOptionError, match="copy_device_inputs must be True or False"):
        unirt.Session(model("dynamic_mlp"), backend="onnxruntime", copy_device_inputs="yes")
    with pytest.raises(unirt.UnsupportedOptionError, match="device_outputs=True: backend 'onnxruntime' on cpu"):
        unirt.Session(model("dynamic_mlp"), backend="onnxruntime", device="cpu", device_outputs=True)
    with pytest.raises(unirt.UnsupportedOptionError, match="device_outputs=True needs the backend named"):
        unirt.Session(model("dynamic_mlp"), backend="fastest", device_outputs=True)


def test_a_backend_that_takes_cuda_tensors_gets_them_checked_and_uncopied():
    inputs = [TensorInfo("x", ("N", 8), np.float32), TensorInfo("y", ("N", 8), np.float32)]
    check = InputChecker(inputs, device_inputs=frozenset({"cuda"}), runs_on="torch, cuda:0").check
    x, y = FakeCAI((4, 8), ptr=0x1000), FakeCAI((4, 8), ptr=0x2000)
    fed = check({"x": x, "y": y})
    assert isinstance(fed["x"], DeviceTensor) and fed["x"].value is x and fed["x"].ptr == 0x1000
    assert fed["x"].device == "cuda:0" and fed["x"].shape == (4, 8) and fed["x"].dtype == np.float32
    with pytest.raises(unirt.InputError, match="expected float32, got float16"):
        check({"x": FakeCAI((4, 8), "<f2"), "y": y})
    with pytest.raises(unirt.InputError, match="dim 1 is static"):
        check({"x": FakeCAI((4, 9)), "y": y})
    with pytest.raises(unirt.InputError, match="dim 'N' must be the same size"):
        check({"x": x, "y": FakeCAI((5, 8))})
    with pytest.raises(unirt.InputError, match="not C-contiguous"):  # a transposed view
        check({"x": FakeCAI((4, 8), strides=(4, 16)), "y": y})
    host = check({"x": np.ones((4, 8), np.float32), "y": y})  # host and device feeds mix; host ones stay numpy
    assert type(host["x"]) is np.ndarray


def test_host_memory_is_not_a_device_tensor():
    assert device_of(np.ones(3)) is None
    assert device_of(FakeCudaDLPack(np.ones(3))) == ("cuda", 0)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
def test_dlpack_metadata_is_read_from_a_real_capsule(dtype):
    a = np.arange(24).reshape(2, 3, 4).astype(dtype)
    shape, got, ptr, contiguous = _dlpack_meta(a)
    assert (shape, got, ptr, contiguous) == ((2, 3, 4), np.dtype(dtype), a.ctypes.data, True)
    view = a.transpose(0, 2, 1)
    assert _dlpack_meta(view)[3] is False
    with pytest.raises(unirt.InputError, match="not C-contiguous"):
        describe(view, "x", "cuda", 0)  # metadata from the capsule: not contiguous, refused
