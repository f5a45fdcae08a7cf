"""The runner's CUDA glue (unirt_tensorrt.cuda) on a real GPU through cuda-python: device and pinned buffers, a
stream, async copies both ways, and CUDA errors as unirt errors. Needs cuda-python and a CUDA GPU, not TensorRT."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

import unirt
from unirt import hardware


def _reason() -> str | None:
    if importlib.util.find_spec("cuda") is None:
        return "cuda-python is not installed (pip install './plugins/tensorrt[engine]')"
    if not hardware().cuda_gpus:
        return "no CUDA GPU on this machine (/proc/driver/nvidia/gpus and nvidia-smi find none)"
    return None


REASON = _reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"the CUDA glue needs a GPU: {REASON}")


@pytest.fixture(scope="module")
def cuda():
    from unirt_tensorrt import cuda as glue

    glue.set_device(0)
    return glue


def test_device_properties_name_the_gpu(cuda):
    name, sm = cuda.device_properties(0)
    assert name and any(name in gpu or gpu in name for gpu in hardware().cuda_gpus)
    major, minor = (int(x) for x in sm.split("."))
    assert major >= 3 and minor >= 0


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
def test_round_trip_through_the_gpu(cuda, dtype):
    rng = np.random.default_rng(0)
    data = (rng.standard_normal((3, 5, 7)) * 50).astype(dtype)
    nbytes = data.nbytes
    staging_in, staging_out = cuda.PinnedBuffer(), cuda.PinnedBuffer()
    device = cuda.DeviceBuffer()
    stream = cuda.Stream()
    try:
        staging_in.ensure(nbytes, during_run=False)
        staging_out.ensure(nbytes, during_run=False)
        dptr = device.ensure(nbytes, during_run=False)
        host_in = staging_in.view(data.shape, data.dtype)
        host_in[...] = data
        stream.copy_in(dptr, staging_in.ptr, nbytes)
        stream.copy_out(staging_out.ptr, dptr, nbytes)
        stream.synchronize()
        out = staging_out.view(data.shape, data.dtype)
        np.testing.assert_array_equal(out, data)
    finally:
        stream.close()
        device.close()
        staging_in.close()
        staging_out.close()


def test_buffers_grow_and_keep_their_memory_when_big_enough(cuda):
    device, pinned = cuda.DeviceBuffer(), cuda.PinnedBuffer()
    try:
        first = device.ensure(1024, during_run=False)
        assert device.ensure(512, during_run=True) == first and device.size == 1024
        assert device.ensure(1 << 20, during_run=True) and device.size == 1 << 20
        p = pinned.ensure(0, during_run=False)  # a zero-size input still gets a real pointer
        assert p and pinned.size == 1
        assert pinned.view((0, 4), np.dtype(np.float32)).shape == (0, 4)
        assert pinned.view((), np.dtype(np.float32)).shape == ()
    finally:
        device.close()
        pinned.close()
    assert device.ptr == 0 and pinned.ptr == 0
    device.close()  # closing twice is harmless


def test_pinned_buffers_are_page_locked(cuda):
    from unirt_tensorrt.cuda import cudart

    pinned = cuda.PinnedBuffer()
    try:
        pinned.ensure(4096, during_run=False)
        attrs = cuda.check(cudart.cudaPointerGetAttributes(pinned.ptr), "cudaPointerGetAttributes")
        assert attrs.type == cudart.cudaMemoryType.cudaMemoryTypeHost
    finally:
        pinned.close()


def test_cuda_errors_become_unirt_errors(cuda):
    with pytest.raises(unirt.errors.UnirtError, match="cudaSetDevice failed: cudaErrorInvalidDevice"):
        cuda.set_device(4096)
    cuda.set_device(0)
    device = cuda.DeviceBuffer()
    with pytest.raises(unirt.RunError, match="out of GPU memory"):
        device.ensure(1 << 62, during_run=True)  # 4 EiB: no GPU has it
    with pytest.raises(unirt.ModelLoadError, match="out of GPU memory while loading"):
        device.ensure(1 << 62, during_run=False)
    assert device.ptr == 0
    # the context is still usable after a refused allocation
    assert device.ensure(256, during_run=True)
    device.close()


def test_core_pinned_pool_is_page_locked_for_cuda():
    """unirt.BufferPool(pinned=True) loads the CUDA runtime itself (no cuda-python); CUDA must see its memory as
    page-locked host memory."""
    from unirt_tensorrt.cuda import check, cudart

    available, detail = unirt.pinned_memory_status()
    assert available, detail
    pool = unirt.BufferPool(pinned=True)
    a = pool.empty((256, 256), np.float32)
    attrs = check(cudart.cudaPointerGetAttributes(a.ctypes.data), "cudaPointerGetAttributes")
    assert attrs.type == cudart.cudaMemoryType.cudaMemoryTypeHost
    arena = unirt.Arena(pinned=True)
    b = arena.empty((64, 64), np.float32)
    attrs = check(cudart.cudaPointerGetAttributes(b.ctypes.data), "cudaPointerGetAttributes")
    assert arena.pinned and attrs.type == cudart.cudaMemoryType.cudaMemoryTypeHost
