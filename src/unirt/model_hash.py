"""One content hash per model: `ModelFile.content_hash`, which every cache keyed by a model's content uses (the
conversion store, `backend="fastest"`'s measurements, the frontend checks, the load canary, TensorRT's engines).

SHA-256 over the bytes of a model given in memory, or over its files in order (an OpenVINO IR's .bin, an ONNX
model's external data: new weights behind an unchanged graph are another model) with a separator between files.
A `ModelFile` computes it once; across `ModelFile`s of the same files it is remembered per file (path, device,
inode, size, mtime) in this process, and on disk (`cache_dir("hashes")`) for models of `PERSIST_BYTES` and more,
so a new process finding its cached conversion or measurement of a large model need not read it whole again.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .cache import cache_dir

if TYPE_CHECKING:
    from .formats import ModelFile

__all__ = ["content_hash", "hash_content", "PERSIST_BYTES"]

#: Written between two files of a model, so that moving bytes from one file to the next changes the hash.
SEPARATOR = b"\0next file\0"
#: Models this large keep their hash on disk too.
PERSIST_BYTES = 8 << 20
_memo: dict[tuple, str] = {}


def hash_content(model: ModelFile) -> str:
    """SHA-256 of the model's content, read now (no memo)."""
    digest = hashlib.sha256()
    if model.data is not None:
        digest.update(model.data)
        return digest.hexdigest()
    for i, path in enumerate(model.files or ((model.path,) if model.path is not None else ())):
        if i:
            digest.update(SEPARATOR)
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _stamp(model: ModelFile) -> tuple | None:
    files = model.files or ((model.path,) if model.path is not None else ())
    if model.data is not None or not files:
        return None
    try:
        return tuple(
            (str(Path(f).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
            for f in files
            for st in (os.stat(f),)
        )
    except OSError:
        return None


def content_hash(model: ModelFile) -> str:
    """The model's content hash (see the module doc); `ModelFile.content_hash` caches it on the model."""
    stamp = _stamp(model)
    if stamp is None:
        return hash_content(model)
    digest = _memo.get(stamp)
    if digest is not None:
        return digest
    note = None
    if sum(s[3] for s in stamp) >= PERSIST_BYTES:
        note = cache_dir("hashes") / (hashlib.sha256(repr(stamp).encode()).hexdigest()[:32] + ".txt")
        try:
            digest = note.read_text().strip() or None
        except OSError:
            digest = None
    if digest is None:
        digest = hash_content(model)
        if note is not None:
            try:
                tmp = note.with_suffix(f".{os.getpid()}.tmp")
                tmp.write_text(digest)
                os.replace(tmp, note)
            except OSError:
                pass
    if len(_memo) > 256:
        _memo.clear()
    _memo[stamp] = digest
    return digest
