"""Cross-process shared memory: named POSIX shm segments holding tensors, attachable from another process by name.

    # process A                                          # process B
    region = unirt.SharedRegion.create(1 << 20)          region = unirt.SharedRegion.attach(name)
    x = region.ndarray((8, 3, 224, 224), "float32")      x = region.ndarray((8, 3, 224, 224), "float32")
    name = region.name                                   # same memory: no copy through a pipe

    # or with a table of named tensors at the segment's start, read by whoever attaches:
    t = unirt.SharedTensors.create({"images": batch, "scores": ((8, 1000), "float32")})
    u = unirt.SharedTensors.attach(t.name)               # u["images"], u["scores"]: views

Arrays are views of the mapping and keep it mapped while they live. The creating process owns a segment: closing
the region (or its last reference going away) removes the name; other processes keep their mappings until they
let go. Names are also removed when the owner dies in any way (kill -9 included): the first segment a process
creates starts a tiny reaper process (`_shm_reaper.py`, standard library only) that unlinks whatever the owner
left when the owner's end of a pipe closes. Segments are created with mode 0600 (owner's user only) and their
space is reserved up front, so a full /dev/shm is an error at creation, not a SIGBUS later.
"""

from __future__ import annotations

import itertools
import os
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import _core
from .errors import InputError, UnsupportedOptionError

__all__ = ["SharedRegion", "SharedTensors", "TensorSlot"]

_ALIGN = 64
_counter = itertools.count()


class _Reaper:
    """The client side of `_shm_reaper.py`: one reaper per process, started with the first segment."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._names: set[str] = set()

    def _start(self) -> None:
        script = Path(__file__).with_name("_shm_reaper.py")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", str(script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            close_fds=True,
        )
        for name in self._names:  # a restarted reaper learns what the last one knew
            self._proc.stdin.write(f"+{name}\n".encode())  # type: ignore[union-attr]

    def _send(self, line: str) -> None:
        for attempt in (0, 1):
            try:
                if self._proc is None or self._proc.poll() is not None:
                    self._start()
                self._proc.stdin.write(line.encode())  # type: ignore[union-attr]
                self._proc.stdin.flush()  # type: ignore[union-attr]
                return
            except OSError:  # the reaper died (someone killed it): start another once
                self._proc = None
                if attempt:
                    raise

    def register(self, name: str) -> None:
        with self._lock:
            self._names.add(name)
            self._send(f"+{name}\n")

    def unregister(self, name: str) -> None:
        with self._lock:
            if name in self._names:
                self._names.discard(name)
                try:
                    self._send(f"-{name}\n")
                except OSError:
                    pass  # the name is gone already; nothing left to reap

    def forget_after_fork(self) -> None:
        """In a forked child: the parent's segments and reaper are the parent's business."""
        proc, self._proc, self._names = self._proc, None, set()
        self._lock = threading.Lock()
        if proc is not None and proc.stdin is not None:
            try:
                os.close(proc.stdin.fileno())  # so the parent's reaper sees EOF when the parent dies
            except OSError:
                pass

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None


_reaper = _Reaper()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reaper.forget_after_fork)


def _normalize(name: str) -> str:
    if not isinstance(name, str) or not name.strip("/"):
        raise InputError(f"a shared-memory name must be a non-empty string, got {name!r}")
    name = "/" + name.lstrip("/")
    if "/" in name[1:] or len(name) > 255 or "\0" in name:
        raise InputError(
            f"shared-memory name {name!r} must have no '/' after the first character and at most 255 characters"
        )
    return name


class SharedRegion:
    """A named POSIX shared-memory segment. `create` makes one (this process owns it); `attach` maps one that
    another process made, by name."""

    __slots__ = ("_mem", "_name", "__weakref__")

    def __init__(self, mem: Any) -> None:
        self._mem = mem
        self._name = mem.name

    @classmethod
    def create(cls, size: int, name: str | None = None) -> SharedRegion:
        """A new segment of `size` bytes; `name` defaults to a fresh "/unirt.<pid>.<n>". Raises FileExistsError
        if the name is taken, OSError (ENOSPC) if /dev/shm cannot hold it."""
        if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
            raise InputError(f"a shared region needs a positive size in bytes, got {size!r}")
        if name is not None:
            mem = _core.SharedMemory.create(_normalize(name), int(size))
        else:
            while True:
                try:
                    mem = _core.SharedMemory.create(f"/unirt.{os.getpid()}.{next(_counter)}", int(size))
                    break
                except FileExistsError:  # left by an earlier process with the same pid
                    continue
        try:
            _reaper.register(mem.name)
        except BaseException:
            mem.unlink()
            raise
        return cls(mem)

    @classmethod
    def attach(cls, name: str, *, writable: bool = True) -> SharedRegion:
        """Map an existing segment by name (FileNotFoundError if there is none). This process does not own it."""
        return cls(_core.SharedMemory.attach(_normalize(name), bool(writable)))

    @property
    def name(self) -> str:
        return self._name

    @property
    def size(self) -> int:
        return self._mem.size

    @property
    def owner(self) -> bool:
        return self._mem.owner

    @property
    def writable(self) -> bool:
        return self._mem.writable

    @property
    def closed(self) -> bool:
        return self._mem is None

    def _checked(self) -> Any:
        mem = self._mem
        if mem is None:
            raise InputError(f"shared region {self._name} is closed")
        return mem

    def ndarray(self, shape: int | Sequence[int], dtype: Any, offset: int = 0) -> np.ndarray:
        """A C-contiguous view of `shape` and `dtype` starting `offset` bytes into the region."""
        mem = self._checked()
        dtype = np.dtype(dtype)
        if dtype.hasobject:
            raise InputError("shared memory cannot hold Python objects (string tensors)")
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        if any(d < 0 for d in shape):
            raise InputError(f"shape {list(shape)} has a negative dim")
        count = int(np.prod(shape, dtype=np.int64))
        if offset < 0 or offset + count * dtype.itemsize > mem.size:
            raise InputError(
                f"{dtype}{list(shape)} at offset {offset} ({count * dtype.itemsize} bytes) does not fit "
                f"shared region {self._name} of {mem.size} bytes"
            )
        return np.frombuffer(mem, dtype=dtype, count=count, offset=offset).reshape(shape)

    def buffer(self) -> memoryview:
        """The whole region as a writable (or read-only, when attached so) memoryview."""
        return memoryview(self._checked())

    def unlink(self) -> None:
        """Remove the name now (owner only); mappings, this one included, stay valid."""
        mem = self._checked()
        if mem.owner:
            mem.unlink()
            _reaper.unregister(self._name)

    def close(self) -> None:
        """Let go of the region: the owner removes the name; the memory is unmapped when no array views it."""
        mem, self._mem = self._mem, None
        if mem is not None and mem.owner:
            mem.unlink()
            _reaper.unregister(self._name)

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def __enter__(self) -> SharedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._mem is None else f"{self._mem.size} bytes{' owner' if self._mem.owner else ''}"
        return f"<unirt.SharedRegion {self._name} {state}>"


# -- a table of named tensors at the start of a region ---------------------------------------------------------
_MAGIC = b"UNIRTST1"
_HEADER = struct.Struct("<8sIIQQ")  # magic, version, count, end of the table (byte offset), generation
_GENERATION = struct.Struct("<Q")  # the header's last field, bumped on every new layout
_ENTRY = struct.Struct("<HBBIQQ")  # name length, ndim, dtype length, reserved, offset, nbytes
_VERSION = 1

Spec = np.ndarray | tuple  # an array to copy in, or (shape, dtype) to reserve


@dataclass(frozen=True)
class TensorSlot:
    """Where a tensor lives in a region: byte offset, shape and dtype."""

    offset: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _round(n: int) -> int:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _spec(name: str, spec: Spec) -> tuple[tuple[int, ...], np.dtype]:
    if isinstance(spec, np.ndarray):
        shape, dtype = spec.shape, spec.dtype
    elif isinstance(spec, tuple) and len(spec) == 2:
        shape, dtype = spec
        shape = (int(shape),) if isinstance(shape, (int, np.integer)) else tuple(int(d) for d in shape)
        dtype = np.dtype(dtype)
    else:
        raise InputError(f"tensor {name!r}: give an array or a (shape, dtype) pair, got {type(spec).__name__}")
    if dtype.hasobject:
        raise InputError(f"tensor {name!r}: shared memory cannot hold Python objects (string tensors)")
    if any(d < 0 for d in shape):
        raise InputError(f"tensor {name!r}: shape {list(shape)} has a negative dim")
    return tuple(shape), dtype


def layout(specs: Mapping[str, Spec], generation: int = 0) -> tuple[bytes, dict[str, TensorSlot], int]:
    """Encode the table for `specs` and place each tensor (64-byte aligned) after it.
    Returns (table bytes, slots, bytes needed)."""
    prepared = [(str(name), *_spec(str(name), spec)) for name, spec in specs.items()]
    encoded = [(n.encode(), d.str.encode(), shape) for n, shape, d in prepared]
    table_end = _HEADER.size + sum(_ENTRY.size + 8 * len(shape) + len(nb) + len(db) for nb, db, shape in encoded)
    offset = _round(table_end)
    slots: dict[str, TensorSlot] = {}
    parts = []
    for (name, shape, dtype), (nb, db, _) in zip(prepared, encoded):
        if len(nb) > 0xFFFF or len(shape) > 0xFF:
            raise InputError(f"tensor {name!r}: name or rank too large for the shared table")
        slot = TensorSlot(offset, shape, dtype)
        slots[name] = slot
        parts.append(_ENTRY.pack(len(nb), len(shape), len(db), 0, offset, slot.nbytes))
        parts.append(struct.pack(f"<{len(shape)}q", *shape) + nb + db)
        offset = _round(offset + slot.nbytes)
    table = _HEADER.pack(_MAGIC, _VERSION, len(prepared), table_end, generation) + b"".join(parts)
    return table, slots, max(offset, _ALIGN)


def read_table(buf: memoryview) -> dict[str, TensorSlot]:
    """Decode the table at the start of a region written by `layout`. A table that does not decode (another process
    wrote garbage, or a bug overwrote it) raises InputError, never a crash or a view past the region."""
    if len(buf) < _HEADER.size:
        raise InputError("shared region too small to hold a tensor table")
    magic, version, count, end, _ = _HEADER.unpack_from(buf, 0)
    if magic != _MAGIC or version != _VERSION:
        raise InputError("the shared region holds no unirt tensor table (or one of another version)")
    try:
        return _read_entries(buf, count, end)
    except (struct.error, TypeError, ValueError, UnicodeDecodeError, OverflowError) as exc:
        raise InputError(f"the shared tensor table is damaged: {exc}") from None


def _read_entries(buf: memoryview, count: int, end: int) -> dict[str, TensorSlot]:
    if not _HEADER.size <= end <= len(buf):
        raise ValueError(f"it claims to end at byte {end}, in a region of {len(buf)} bytes")
    pos = _HEADER.size
    slots = {}
    for i in range(count):
        if pos + _ENTRY.size > end:
            raise ValueError(f"it claims {count} tensors but ends after {i}")
        name_len, ndim, dtype_len, _, offset, nbytes = _ENTRY.unpack_from(buf, pos)
        pos += _ENTRY.size
        if pos + 8 * ndim + name_len + dtype_len > end:
            raise ValueError(f"entry {i} runs past the table's end")
        shape = struct.unpack_from(f"<{ndim}q", buf, pos)
        pos += 8 * ndim
        name = bytes(buf[pos : pos + name_len]).decode()
        pos += name_len
        dtype = np.dtype(bytes(buf[pos : pos + dtype_len]).decode())
        pos += dtype_len
        if dtype.hasobject:
            raise ValueError(f"{name!r} has dtype {dtype}, which holds Python objects")
        if any(d < 0 for d in shape):
            raise ValueError(f"{name!r} has shape {list(shape)}")
        slot = TensorSlot(offset, tuple(shape), dtype)
        if slot.nbytes != nbytes or offset < end or offset + nbytes > len(buf):
            raise ValueError(f"{name!r} ({dtype}{list(shape)} at byte {offset}) does not fit the region")
        slots[name] = slot
    return slots


class SharedTensors(Mapping[str, np.ndarray]):
    """Named tensors in one shared region, with a table at its start so another process finds them by name.

    A mapping of name -> array view. `rewrite` lays out a new set of tensors in the same region (when they fit)
    and `refresh` re-reads the table after the other side rewrote it. Both are cheap when nothing changed (the same
    names, shapes and dtypes as last time: the table carries a generation number), which makes a region reused for
    call after call cost little more than the copies.
    """

    def __init__(self, region: SharedRegion) -> None:
        self.region = region
        self._slots: dict[str, TensorSlot] = {}
        self._views: dict[str, np.ndarray] = {}
        self._signature: tuple = ()
        self._generation = -1

    @classmethod
    def create(
        cls, tensors: Mapping[str, Spec], *, name: str | None = None, capacity: int | None = None
    ) -> SharedTensors:
        """A new region holding `tensors` (arrays are copied in; (shape, dtype) pairs are reserved).
        `capacity` makes the region at least that large, to leave room for `rewrite`."""
        needed = layout(tensors)[2]
        shared = cls(SharedRegion.create(max(needed, capacity or 0), name))
        shared.rewrite(tensors)
        return shared

    @classmethod
    def attach(cls, name: str, *, writable: bool = True) -> SharedTensors:
        shared = cls(SharedRegion.attach(name, writable=writable))
        shared.refresh()
        return shared

    @staticmethod
    def size_for(tensors: Mapping[str, Spec]) -> int:
        """Bytes a region needs to hold `tensors` and their table."""
        return layout(tensors)[2]

    def rewrite(self, tensors: Mapping[str, Spec]) -> bool:
        """Lay out `tensors` in this region, replacing the table; False (nothing changed) if they do not fit.
        Arrays given are copied in."""
        signature = tuple((k, v.shape, v.dtype) if isinstance(v, np.ndarray) else (k, v) for k, v in tensors.items())
        if signature != self._signature:
            table, slots, needed = layout(tensors, self._generation + 1)
            if needed > self.region.size:
                return False
            self._install(table, slots)
            self._signature = signature
        views = self._views
        for key, spec in tensors.items():
            if isinstance(spec, np.ndarray):
                np.copyto(views[key], spec, casting="no")
        return True

    def refresh(self) -> None:
        """Re-read the table if the other process changed it."""
        buf = self.region.buffer()
        try:
            (generation,) = _GENERATION.unpack_from(buf, _HEADER.size - _GENERATION.size)
            if generation == self._generation and self._views:
                return
            slots = read_table(buf)
        finally:
            buf.release()
        self._slots = slots
        self._generation = generation
        self._signature = ()
        self._views = {n: self.region.ndarray(s.shape, s.dtype, s.offset) for n, s in slots.items()}

    def _install(self, table: bytes, slots: dict[str, TensorSlot]) -> None:
        buf = self.region.buffer()
        try:
            if buf.readonly:
                raise UnsupportedOptionError(f"shared region {self.region.name} is attached read-only")
            buf[: len(table)] = table
            (self._generation,) = _GENERATION.unpack_from(buf, _HEADER.size - _GENERATION.size)
        finally:
            buf.release()
        self._slots = slots
        self._views = {n: self.region.ndarray(s.shape, s.dtype, s.offset) for n, s in slots.items()}

    @property
    def name(self) -> str:
        return self.region.name

    def views(self) -> dict[str, np.ndarray]:
        """Every tensor as {name: view}, in table order (a fresh dict; the views are shared)."""
        return dict(self._views)

    def slots(self) -> dict[str, TensorSlot]:
        """Offset, shape and dtype of every tensor (e.g. to reference them as Triton shared-memory regions)."""
        return dict(self._slots)

    def __getitem__(self, key: str) -> np.ndarray:
        return self._views[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def close(self) -> None:
        self._views = {}
        self.region.close()

    def __enter__(self) -> SharedTensors:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        inner = ", ".join(f"{n}: {s.dtype}{list(s.shape)}" for n, s in self._slots.items())
        return f"<unirt.SharedTensors {self.region.name} {{{inner}}}>"
