"""The conversion cache: one folder per (model content, backend, converter version, options) under
`unirt.cache_dir("conversions")` (UNIRT_CACHE_DIR overrides), written whole or not at all."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any, Mapping

from ..cache import cache_dir
from ..formats import ModelFile

__all__ = ["content_hash", "cache_key", "entry_dir", "new_work_dir", "publish", "read_record"]

RECORD = "conversion.json"


def content_hash(model: ModelFile) -> str:
    """SHA-256 over every file of the model (an OpenVINO .bin too), or over its bytes when given in memory."""
    h = hashlib.sha256()
    if model.data is not None:
        h.update(model.data)
    else:
        for i, f in enumerate(model.files or ((model.path,) if model.path else ())):
            if i:
                h.update(b"\0next file\0")
            with open(f, "rb") as fh:
                for block in iter(lambda: fh.read(1 << 20), b""):
                    h.update(block)
    return h.hexdigest()


def cache_key(source_hash: str, parts: Mapping[str, Any]) -> str:
    text = json.dumps({"source": source_hash, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def entry_dir(key: str) -> Path:
    return cache_dir("conversions") / key


def read_record(key: str) -> dict | None:
    """The finished cache entry for `key`, or None (absent, half-written, or its files gone)."""
    path = entry_dir(key) / RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not all((entry_dir(key) / f).is_file() for f in record.get("files", ())):
        return None
    return record


def new_work_dir(key: str) -> Path:
    """A private folder next to the cache entry to build it in."""
    work = cache_dir("conversions") / f".tmp-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    return work


def publish(key: str, work: Path, record: dict) -> Path:
    """Move a finished `work` folder into place as the entry for `key` (atomic rename; a concurrent writer of the
    same key wins harmlessly: both wrote the same conversion)."""
    (work / RECORD).write_text(json.dumps(record, indent=1))
    final = entry_dir(key)
    if final.exists():
        existing = read_record(key)
        if existing is not None and (existing.get("verified") or not record.get("verified")):
            shutil.rmtree(work, ignore_errors=True)  # another process finished the same conversion first
            return final
        shutil.rmtree(final, ignore_errors=True)  # broken, or less than this one (not verified)
    try:
        os.replace(work, final)
    except OSError:
        shutil.rmtree(work, ignore_errors=True)
    return final
