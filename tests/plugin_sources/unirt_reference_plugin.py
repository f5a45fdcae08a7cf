"""A real backend for tests: ONNX models on onnx's own reference evaluator (onnx.reference).

Installed by tests as the distribution `unirt-reference-test` (see conftest.py), so the registry discovers it
through its entry point exactly as it discovers any plugin.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import Availability, Backend, BackendSession, LoadOptions, ModelFile, ModelFormat, RunError, TensorInfo


class ReferenceBackend(Backend):
    name = "reference"
    formats = frozenset({ModelFormat.ONNX})
    install_hint = "pip install onnx"

    def probe(self) -> Availability:
        try:
            import onnx
            import onnx.reference
        except ImportError as exc:
            return Availability.missing(f"cannot import onnx.reference: {exc}")
        return Availability(True, version=onnx.__version__, devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> ReferenceSession:
        # backend_options={"max_batch": N} (else the Session's max_batch): runs take at most N rows, as an engine
        # built for bounded batches (TensorRT) does
        return ReferenceSession(model, options.backend_options.get("max_batch", options.max_batch))


class ReferenceSession(BackendSession):
    def __init__(self, model: ModelFile, max_batch: int | None = None) -> None:
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
        self.device = "cpu"
        self.closed = False
        self.max_batch = max_batch
        self.batches: list[int] = []

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        if self.max_batch is not None:
            rows = max((x.shape[0] for x in feeds.values() if x.ndim), default=0)
            if rows > self.max_batch:
                raise RunError(f"reference: batch {rows} is larger than max_batch {self.max_batch}")
            self.batches.append(rows)
        return [np.asarray(v) for v in self._evaluator.run(list(output_names), feeds)]

    def close(self) -> None:
        self.closed = True
