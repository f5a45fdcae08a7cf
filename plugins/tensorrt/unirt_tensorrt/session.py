"""The runner: one TensorRT engine and execution context on one GPU, behind unirt's BackendSession interface.

Inputs go host -> pinned staging buffer -> device on a CUDA stream; outputs come back device -> pinned -> a fresh
array the caller owns (or, with `run_into`, straight into the caller's array). Device and pinned buffers are
allocated once for the largest shape seen and reused. An execution context runs one call at a time: a lock
serialises concurrent callers. Needs tensorrt, cuda-python and a GPU.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorrt as trt

from unirt import (
    BackendSession,
    BuffersRefusedError,
    InputError,
    LoadOptions,
    ModelFile,
    ModelFormat,
    ModelLoadError,
    RunError,
    TensorInfo,
)
from unirt.plugin_sdk import onnx_quantization_ops, quantized_info, quantized_precision

from . import cuda
from .builder import build_engine, collecting_logger
from .dtypes import nbytes, numpy_dtype
from .errors import deserialize_failure, unsupported_io
from .options import build_settings
from .plan import precision_info
from .profiles import Profile


class TensorRTSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        settings = build_settings(options.backend_options, options.max_batch)
        self._gpu_index = options.device.index or 0
        cuda.set_device(self._gpu_index)
        gpu, sm = cuda.device_properties(self._gpu_index)
        self._logger = collecting_logger(trt)
        self._log = self._logger.messages
        if model.format is ModelFormat.ONNX:
            built = build_engine(trt, model, options.precision, settings, gpu, sm)
            plan, profile = built.plan, built.profile
            qops = onnx_quantization_ops(model.path if model.path is not None else model.data)
            self.precision = quantized_precision(options.precision, bool(qops))
            conv = built.conversion
            self.precision_info = precision_info(
                built.build, self.precision, sm, gpu, conv.converter if conv is not None else None
            )
            if qops:  # "int8 (<how the engine runs it>)" -> "int8 (the model is quantized: <ops>; <how>)"
                self.precision_info = quantized_info("/".join(qops), self.precision_info[len("int8 (") : -1])
            elif conv is not None and conv.verified:
                self.precision_info += f"; fp16 ONNX vs fp32 on {conv.reference}: {conv.describe_errors()}"
        else:  # a serialized engine: its precision was fixed when it was built
            plan, profile = model.read_bytes()[int(model.details.get("payload_offset", 0)) :], None
            self.precision = "as built"
        self._runtime = trt.Runtime(self._logger)
        mark = self._log.mark()
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            raise deserialize_failure(model.name, self._log.since(mark))
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        for n in names:  # host-side shape tensors and vectorized layouts: not plain device arrays
            problem = unsupported_io(
                model.name, n, engine.get_tensor_location(n).name, engine.get_tensor_format(n).name
            )
            if problem is not None:
                raise problem
        mark = self._log.mark()
        self._context = engine.create_execution_context()
        if self._context is None:  # e.g. no GPU memory left for its activations
            raise ModelLoadError(
                f"{model.name}: tensorrt could not create an execution context: "
                f"{'; '.join(self._log.since(mark)[-3:]) or 'no error logged'}"
            )
        is_input = {n: engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        infos = {
            n: TensorInfo(
                n,
                tuple(None if d < 0 else int(d) for d in engine.get_tensor_shape(n)),
                numpy_dtype(engine.get_tensor_dtype(n).name, n),
            )
            for n in names
        }
        self.inputs = [infos[n] for n in names if is_input[n]]
        self.outputs = [infos[n] for n in names if not is_input[n]]
        self.device = f"cuda:{self._gpu_index}"
        self._profile = profile or Profile(
            {
                i.name: tuple(tuple(int(d) for d in s) for s in engine.get_tensor_profile_shape(i.name, 0))
                for i in self.inputs
                if i.is_dynamic
            }
        )
        self._dynamic = frozenset(i.name for i in self.inputs if i.is_dynamic)
        self.max_batch = self._profile.max_batch()  # a Session with no max_batch of its own splits at this
        self._dtypes = {i.name: i.dtype for i in (*self.inputs, *self.outputs)}
        self._device_buffers = {n: cuda.DeviceBuffer() for n in names}
        self._pinned = {n: cuda.PinnedBuffer() for n in names}
        self._stream = cuda.Stream()
        self._lock = threading.Lock()

    def _enqueue(self, feeds: dict[str, np.ndarray]) -> dict[str, tuple[tuple[int, ...], int]]:
        """Stage inputs, set shapes and addresses, launch; return each output's (shape, device pointer)."""
        ctx, stream = self._context, self._stream
        for info in self.inputs:
            x = feeds[info.name]
            if info.name in self._dynamic:
                self._profile.check(info.name, x.shape)
            if not ctx.set_input_shape(info.name, x.shape):
                raise InputError(
                    f"input {info.name!r}: TensorRT refused shape {list(x.shape)} (engine shape "
                    f"{[d if d is not None else -1 for d in info.shape]})"
                )
            size = nbytes(x.shape, x.dtype)
            device = self._device_buffers[info.name].ensure(size, True)
            pinned = self._pinned[info.name]
            pinned.ensure(size, True)
            np.copyto(pinned.view(x.shape, x.dtype), x)
            stream.copy_in(device, pinned.ptr, size)
            ctx.set_tensor_address(info.name, device)
        shapes = {}
        for info in self.outputs:
            shape = tuple(int(d) for d in ctx.get_tensor_shape(info.name))
            if any(d < 0 for d in shape):
                raise RunError(
                    f"tensorrt: output {info.name!r} has a data-dependent shape {list(shape)}, which "
                    "unirt's TensorRT runner does not support yet"
                )
            device = self._device_buffers[info.name].ensure(nbytes(shape, info.dtype), True)
            ctx.set_tensor_address(info.name, device)
            shapes[info.name] = (shape, device)
        mark = self._log.mark()
        if not ctx.execute_async_v3(self._stream.handle):
            raise RunError(f"tensorrt: execution failed: {'; '.join(self._log.since(mark)[-3:]) or 'no error logged'}")
        return shapes

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        return self.run_into(feeds, output_names, {})

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> list[Any]:
        with self._lock:
            shapes = self._enqueue(feeds)
            staged = []
            for name in output_names:
                shape, device = shapes[name]
                size = nbytes(shape, self._dtypes[name])
                target = out.get(name)
                if target is not None:
                    if target.shape != shape:
                        raise BuffersRefusedError(
                            f"out[{name!r}]: the model produced shape {list(shape)}, the "
                            f"array given has shape {list(target.shape)}"
                        )
                    self._stream.copy_out(target.ctypes.data, device, size)
                    staged.append((name, target, None))
                else:
                    pinned = self._pinned[name]
                    pinned.ensure(size, True)
                    self._stream.copy_out(pinned.ptr, device, size)
                    staged.append((name, None, shape))
            self._stream.synchronize()
            return [
                target if target is not None else self._pinned[name].view(shape, self._dtypes[name]).copy()
                for name, target, shape in staged
            ]

    def close(self) -> None:
        with self._lock:
            self._stream.close()
            for buf in (*self._device_buffers.values(), *self._pinned.values()):
                buf.close()
            self._context = self._engine = self._runtime = None
