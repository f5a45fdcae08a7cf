"""The runner: an ExportedProgram, AOTInductor package or TorchScript module, run under `torch.inference_mode()`.

Host feeds become tensors without a copy (`torch.from_numpy`) and are moved to the device when it is a GPU.
On CUDA it takes device tensors (`device_inputs = {"cuda"}`: torch, CuPy, any DLPack or
`__cuda_array_interface__` producer) without a host round trip, and with `device_outputs` returns torch tensors
that stay on the GPU: fresh tensors the caller owns, ready on every stream when `run` returns (the device is
synchronized). Threads: `torch.set_num_threads` is process-wide; see `set_threads`.
"""

from __future__ import annotations

import logging
import threading
import warnings
import weakref
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import BackendSession, InputError, LoadOptions, ModelFile, UnsupportedOptionError
from unirt.plugin_sdk import observe

from .loaders import load_model, numpy_dtype
from .precision import Fp32Guard, autocast_dtype

__all__ = ["TorchSession"]
log = logging.getLogger(__name__)

_KNOWN_OPTIONS = frozenset({"input_dtypes", "allow_storage_only_precision"})
_threads_lock = threading.Lock()
_thread_requests: weakref.WeakKeyDictionary[TorchSession, int] = weakref.WeakKeyDictionary()


def set_threads(torch: Any, session: TorchSession, threads: int | None) -> str | None:
    """Set torch's (process-wide) intra-op thread count for `threads`; a note when another live session asked
    for a different count (the last one asked wins for every session in the process)."""
    if threads is None:
        return None
    with _threads_lock:
        others = {n for s, n in _thread_requests.items() if s is not session and n != threads}
        _thread_requests[session] = threads
        torch.set_num_threads(threads)
    if others:
        note = (
            f"torch threads are process-wide: this session set {threads}, which now applies to the other torch "
            f"sessions too (they asked for {', '.join(map(str, sorted(others)))})"
        )
        log.warning(note)
        return note
    return None


class TorchSession(BackendSession):
    def __init__(self, model: ModelFile, options: LoadOptions) -> None:
        import torch

        self._torch = torch
        unknown = sorted(set(options.backend_options) - _KNOWN_OPTIONS)
        if unknown:
            raise UnsupportedOptionError(
                f"torch: unknown backend option {unknown[0]!r}; it takes {', '.join(sorted(_KNOWN_OPTIONS))}"
            )
        kind = options.device.kind if options.device.kind != "gpu" else "cuda"
        self._device = torch.device(kind, options.device.index or 0) if kind == "cuda" else torch.device("cpu")
        self.device = str(self._device)
        thread_note = set_threads(torch, self, options.threads)
        loaded = load_model(model, self._device, options.backend_options)
        self._cast, info = autocast_dtype(torch, options, self._device.type, loaded.fixed_precision)
        self.precision = options.precision
        self.precision_info = info if thread_note is None else f"{info}; {thread_note}"
        self._call, self._flatten = loaded.call, loaded.flatten
        self.inputs, self.outputs = loaded.inputs, list(loaded.outputs)
        self._input_names = tuple(i.name for i in self.inputs)
        self._mutated = loaded.mutated
        self._index = {o.name: k for k, o in enumerate(self.outputs)}
        self._dtypes = {o.name: o.dtype for o in self.outputs}
        self._watched = frozenset(o.name for o in self.outputs if o.shape is None)
        self._watch_lock = threading.Lock()
        self._cuda = self._device.type == "cuda"
        #: device tensors it takes as they are (unirt.Session passes them through without a copy)
        self.device_inputs = frozenset({"cuda"}) if self._cuda else frozenset()
        self._keep_on_device = self.device_outputs = bool(getattr(options, "device_outputs", False))
        if self._keep_on_device and not self._cuda:
            raise UnsupportedOptionError(
                "torch: device_outputs=True keeps outputs on a GPU; this session runs on cpu (use device='cuda')"
            )

    def _scope(self) -> Any:
        if self._cast is None:
            return Fp32Guard(self._torch)
        return self._torch.autocast(self._device.type, dtype=self._cast)

    def _tensor(self, name: str, value: Any) -> Any:
        torch = self._torch
        if type(value) is np.ndarray:
            if name in self._mutated:
                value = value.copy()
            if value.flags.writeable:
                t = torch.from_numpy(value)
            else:  # torch warns that it could write read-only memory; it writes only `_mutated` inputs (copied)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)
                    t = torch.from_numpy(value)
            return t.to(self._device) if self._cuda else t
        if value.device != self.device:  # a DeviceTensor (unirt checked it); torch would not move it silently
            raise InputError(f"input {name!r} is on {value.device}; this session runs on {self.device}")
        return value.to_torch(torch)

    def run(self, feeds: dict[str, Any], output_names: Sequence[str]) -> list[Any]:
        torch = self._torch
        args = [self._tensor(n, feeds[n]) for n in self._input_names]
        with torch.inference_mode(), self._scope():
            result = self._call(*args)
        leaves = self._flatten(result)
        picked = [leaves[self._index[n]] for n in output_names]
        if self._watched:
            self._observe(output_names, picked)
        if self._keep_on_device:
            torch.cuda.synchronize(self._device)
            return [
                t if numpy_dtype(t.dtype) == self._dtypes[n] else t.to(_torch_dtype(torch, self._dtypes[n]))
                for n, t in zip(output_names, picked, strict=True)
            ]
        return [self._host(n, t, args) for n, t in zip(output_names, picked, strict=True)]

    def _host(self, name: str, t: Any, args: list[Any]) -> np.ndarray:
        if t.device.type != "cpu":
            t = t.cpu()
        elif any(t.untyped_storage().data_ptr() == a.untyped_storage().data_ptr() for a in args):
            t = t.clone()  # an output that is an input (or a view of one) must not be the caller's own array
        want = self._dtypes[name]
        if numpy_dtype(t.dtype) != want:  # autocast gives fp16/bf16 where the program declares fp32
            t = t.to(_torch_dtype(self._torch, want))
        if t.dtype is self._torch.bfloat16:
            return t.view(self._torch.int16).numpy().view(want)
        return t.numpy()

    def _observe(self, names: Sequence[str], values: Sequence[Any]) -> None:
        # zero-byte arrays of each output's shape and dtype: what observe() reads, without a copy to the host
        shaped = [np.broadcast_to(np.empty((), numpy_dtype(v.dtype)), tuple(v.shape)) for v in values]
        with self._watch_lock:
            outputs = list(self.outputs)
            if observe(outputs, self._watched, names, shaped):
                self.outputs = outputs
                self._dtypes = {o.name: o.dtype for o in outputs}

    def close(self) -> None:
        with _threads_lock:
            _thread_requests.pop(self, None)
        self._call = self._flatten = None  # type: ignore[assignment]


def _torch_dtype(torch: Any, dtype: np.dtype) -> Any:
    return torch.bfloat16 if dtype.name == "bfloat16" else torch.from_numpy(np.empty(0, dtype)).dtype
