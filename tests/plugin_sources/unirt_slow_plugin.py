"""A backend whose runs take as long as their input says and can be counted, to test how `unirt serve` bounds its
work and contains crashes: ONNX models on onnx's reference evaluator, where the first input's first value `v`
- above 0: the run sleeps `v` seconds first (at most 30);
- -4321: the run dereferences a null pointer (a real SIGSEGV in native code).
Every run appends `v` to the file named by the environment variable UNIRT_TEST_CALLS (when set), so a test sees
which requests ran, whether in the server's process or in an isolated child. Loading sleeps as many seconds as the
file named by UNIRT_TEST_LOAD_DELAY says, while that file exists (a slow restart, to observe readiness).

Installed by tests as the distribution `unirt-slow-test` (backend "slow"), discovered through its entry point.
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import Availability, Backend, BackendSession, LoadOptions, ModelFile, ModelFormat, TensorInfo

SEGFAULT_VALUE = -4321.0


class SlowBackend(Backend):
    name = "slow"
    formats = frozenset({ModelFormat.ONNX})

    def probe(self) -> Availability:
        try:
            import onnx.reference  # noqa: F401 - probed: the engine this plugin wraps
        except ImportError as exc:
            return Availability.missing(f"cannot import onnx.reference: {exc}")
        return Availability(True, version="0.1.0", devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> SlowSession:
        delay = os.environ.get("UNIRT_TEST_LOAD_DELAY")
        if delay and os.path.exists(delay):
            with open(delay) as fh:
                time.sleep(float(fh.read()))
        return SlowSession(model)


class SlowSession(BackendSession):
    def __init__(self, model: ModelFile) -> None:
        import onnx
        from onnx import helper
        from onnx.reference import ReferenceEvaluator

        proto = onnx.load_from_string(model.read_bytes())
        self._evaluator = ReferenceEvaluator(proto)
        inits = {i.name for i in proto.graph.initializer}

        def info(vi: Any) -> TensorInfo:
            t = vi.type.tensor_type
            dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim)
            return TensorInfo(vi.name, dims, helper.tensor_dtype_to_np_dtype(t.elem_type))

        self.inputs = [info(vi) for vi in proto.graph.input if vi.name not in inits]
        self.outputs = [info(vi) for vi in proto.graph.output]
        self._calls = os.environ.get("UNIRT_TEST_CALLS")

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        first = feeds[self.inputs[0].name].reshape(-1)
        value = float(first[0]) if first.size else 0.0
        if self._calls:
            with open(self._calls, "a") as fh:
                fh.write(f"{value!r}\n")
        if value == SEGFAULT_VALUE:
            ctypes.string_at(0)
        if value > 0:
            time.sleep(min(value, 30.0))
        return [np.asarray(v) for v in self._evaluator.run(list(output_names), feeds)]
