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

from .plan import BuildPlan, major_minor
from .profiles import Profile


def model_digest(model: ModelFile | bytes) -> str:
    """SHA-256 over every file of the model (an ONNX model's external data files too: new weights behind an
    unchanged graph are another engine): `ModelFile.content_hash`, computed once per model; or over the bytes given."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return hashlib.sha256(model).hexdigest()
    return model.content_hash


def engine_key(
    model_sha256: str,
    gpu: str,
    compute_capability: str,
    trt_version: str,
    precision: str,
    profile: Profile,
    build_options: Mapping[str, Any],
) -> str:
    """A key that changes whenever anything that shapes the engine changes."""
    payload = {
        "model": model_sha256,
        "gpu": gpu,
        "sm": compute_capability,
        "tensorrt": trt_version,
        "precision": precision,
        "profile": profile.as_json(),
        "options": {k: build_options[k] for k in sorted(build_options)},
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:40]


def build_fields(
    settings_fields: Mapping[str, Any], plan: BuildPlan, trt_version: str, converter: str | None
) -> dict[str, Any]:
    """The build options part of the engine key: the settings', the BuildPlan's (network and builder flags, the ONNX
    transform), the TensorRT major.minor (engines do not carry over between them) and the converter (name and
    version) that made the ONNX model the engine was built from, if any."""
    return {
        **settings_fields,
        "plan": plan.cache_fields(),
        "tensorrt_major_minor": major_minor(trt_version),
        "converter": converter,
    }


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "unknown"


def engine_path(key: str) -> Path:
    return cache_dir("tensorrt", "engines") / f"{key}.engine"


def timing_cache_path(gpu: str, compute_capability: str, trt_version: str) -> Path:
    """One timing cache per GPU model and TensorRT version: layer timings carry over between models."""
    return cache_dir("tensorrt", "timing") / f"{_slug(gpu)}-sm{_slug(compute_capability)}-trt{_slug(trt_version)}.cache"
