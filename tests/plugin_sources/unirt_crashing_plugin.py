"""A backend whose native code dies on damaged files, for testing unirt.testing.fuzz: it runs the pristine model
(named by UNIRT_TEST_PRISTINE) and kills its own process with SIGSEGV on any other file it is asked to load."""

from __future__ import annotations

import os
import signal
from collections.abc import Sequence
from typing import Any

import numpy as np

from unirt import Availability, Backend, BackendSession, LoadOptions, ModelFile, ModelFormat, TensorInfo


class CrashingBackend(Backend):
    name = "crashing"
    formats = frozenset({ModelFormat.ONNX})

    def probe(self) -> Availability:
        return Availability(True, version="0", devices=("cpu",))

    def load(self, model: ModelFile, options: LoadOptions) -> BackendSession:
        with open(os.environ["UNIRT_TEST_PRISTINE"], "rb") as fh:
            if model.read_bytes() != fh.read():
                os.kill(os.getpid(), signal.SIGSEGV)
        return _Session()


class _Session(BackendSession):
    inputs = [TensorInfo("x", (2,), np.float32)]
    outputs = [TensorInfo("y", (2,), np.float32)]

    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        return [feeds["x"] * 2]
