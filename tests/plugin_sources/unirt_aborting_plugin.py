"""A backend whose native side dies, to test `isolate=True`: ONNX models on onnx's reference evaluator, except
- `load` dereferences a null pointer (SIGSEGV) when the model's doc_string is "segfault on load";
- `run` calls os.abort() (SIGABRT) when the first input's first value is -1234, and dereferences a null pointer
  (SIGSEGV) when it is -4321, and hangs (sleeps an hour) when it is -5555.

Installed by tests as the distribution `unirt-aborting-test` (see test_isolation.py), discovered through its entry
point like any plugin.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import Availability, Backend, BackendSession, LoadOptions, ModelFile, ModelFormat, TensorInfo

ABORT_VALUE = -1234.0
SEGFAULT_VALUE = -4321.0
HANG_VALUE = -5555.0


def _segfault() -> None:
    ctypes.string_at(0)  # reads address 0: a real SIGSEGV in native code


class AbortingBackend(Backend):
    name = "aborting"
    formats = frozenset({ModelFormat.ONNX})

    def probe(self) -> Availability:
        try:
            import onnx.reference  # noqa: F401 - probed: the engine this plugin wraps
        except ImportError as exc:
            return Availability.missing(f"cannot import onnx.reference: {exc}")
        return Availability(True, version="0.1.0", devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> AbortingSession:
        return AbortingSession(model)


class AbortingSession(BackendSession):
    def __init__(self, model: ModelFile) -> None:
        import onnx
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        proto = onnx.load_from_string(model.read_bytes())
        if proto.doc_string == "segfault on load":
            _segfault()
        self._evaluator = ReferenceEvaluator(proto)
        inits = {i.name for i in proto.graph.initializer}

        def info(vi: Any) -> TensorInfo:
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            return TensorInfo(vi.name, dims, helper.tensor_dtype_to_np_dtype(t.elem_type))

        self.inputs = [info(vi) for vi in proto.graph.input if vi.name not in inits]
        self.outputs = [info(vi) for vi in proto.graph.output]
        self.pid = os.getpid()

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        first = feeds[self.inputs[0].name].reshape(-1)
        if first.size and first[0] == ABORT_VALUE:
            os.abort()
        if first.size and first[0] == SEGFAULT_VALUE:
            _segfault()
        if first.size and first[0] == HANG_VALUE:
            time.sleep(3600)
        return [np.asarray(v) for v in self._evaluator.run(list(output_names), feeds)]
