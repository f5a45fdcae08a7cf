"""Where built engines and timing caches live, and the keys that say when a cached engine is still valid:
the model's files, the GPU (name and compute capability), the TensorRT version and every build option."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from unirt import ModelFile, cache_dir

from .profiles import Profile


def model_digest(model: ModelFile | bytes) -> str:
    """SHA-256 over every file of the model (an ONNX model's external data files too: new weights behind an
    unchanged graph are another engine), or over the bytes given."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return hashlib.sha256(model).hexdigest()
    if model.data is not None:
        return hashlib.sha256(model.data).hexdigest()
    digest = hashlib.sha256()
    for i, path in enumerate(model.files or ((model.path,) if model.path is not None else ())):
        if i:
            digest.update(b"\0next file\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def engine_key(model_sha256: str, gpu: str, compute_capability: str, trt_version: str, precision: str,
               profile: Profile, build_options: Mapping[str, Any]) -> str:
    """A key that changes whenever anything that shapes the engine changes."""
    payload = {"model": model_sha256, "gpu": gpu, "sm": compute_capability, "tensorrt": trt_version,
               "precision": precision, "profile": profile.as_json(),
               "options": {k: build_options[k] for k in sorted(build_options)}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:40]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unknown"


def engine_path(key: str) -> Path:
    return cache_dir("tensorrt", "engines") / f"{key}.engine"


def timing_cache_path(gpu: str, compute_capability: str, trt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version: layer timings carry over between models."""
    return cache_dir("tensorrt", "timing") / f"{_slug(gpu)}-sm{_slug(compute_capability)}-trt{_slug(trt_version)}.cache"
