"""The system shared-memory extension: regions registered by name, read and written in place.

A client creates a POSIX shared-memory object (`tritonclient.utils.shared_memory`, key "/name"), registers a
region of it (name, key, offset, byte_size), then points inputs and outputs at (region, offset, byte_size):
input bytes are read where they lie (the tensor handed to the model is a view of the mapping: no copy through
the request body) and outputs are written into the region. Segments are mapped with the C++ core
(`unirt.SharedRegion.attach`): a view keeps its mapping alive, so unregistering while a request still reads a
region is safe. The server uses only `SharedMemoryRegistry`'s methods (register, unregister, status, read, write).

Registering (and unregistering) maps this process's memory on a client's word, so it is refused from anything but
a loopback address or a local socket, whatever the restricted-API settings: a remote peer must never make the
server map memory (`check_local_peer`; the protocol layers pass the peer address they see).
"""

from __future__ import annotations

import ipaddress
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UnirtError
from ..shm import SharedRegion
from .errors import BadRequest, NotFound, Unsupported
from .restricted import Forbidden

__all__ = ["RegionStatus", "SharedMemoryRegistry", "is_local_peer", "check_local_peer"]

_SHM_DIR = Path("/dev/shm")
_KEY = re.compile(r"/?[^/\x00]{1,250}")


def _host_of(peer: str) -> str:
    """The address part of a peer: gRPC's 'ipv4:1.2.3.4:5', 'ipv6:[::1]:5', or a bare host / '[::1]:5'."""
    for scheme in ("ipv4:", "ipv6:"):
        if peer.startswith(scheme):
            peer = peer[len(scheme) :]
            break
    if peer.startswith("["):
        return peer[1 : peer.find("]")] if "]" in peer else peer[1:]
    if peer.count(":") == 1:  # host:port
        return peer.split(":")[0]
    return peer


def is_local_peer(peer: str | None) -> bool:
    """True for a peer on this machine: None (no network address: a local socket, or a caller in this process),
    a Unix-domain socket ('unix:...', as gRPC names it) or a loopback address (127.0.0.0/8, ::1, IPv4-mapped
    127.x). Anything else, a host name included, is remote."""
    if peer is None or peer.startswith(("unix:", "unix-abstract:")):
        return True
    try:
        address = ipaddress.ip_address(_host_of(peer).split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_local_peer(peer: str | None, what: str) -> None:
    """Raise Forbidden (403 / PERMISSION_DENIED) unless `peer` is on this machine."""
    if not is_local_peer(peer):
        raise Forbidden(
            f"{what} is accepted only from this machine (a loopback address or a local socket), "
            f"not from {peer}: a remote client cannot share memory with the server; send the tensors "
            "in the request instead"
        )


@dataclass(frozen=True)
class RegionStatus:
    name: str
    key: str
    offset: int
    byte_size: int


class _Region:
    """One registered region: [offset, offset + byte_size) of the shared-memory object `key`, mapped whole."""

    def __init__(self, status: RegionStatus) -> None:
        self.status = status
        try:
            self._shared = SharedRegion.attach(status.key)
        except FileNotFoundError:
            raise NotFound(f"shared memory key {status.key!r}: no such shared-memory object") from None
        except (OSError, UnirtError) as exc:
            raise BadRequest(
                f"shared memory key {status.key!r}: cannot open: {getattr(exc, 'strerror', None) or exc}"
            ) from None
        size = self._shared.size
        if status.offset + status.byte_size > size:
            self._shared.close()
            raise BadRequest(
                f"shared memory region {status.name!r}: offset {status.offset} + byte_size "
                f"{status.byte_size} exceeds the object's size {size}"
            )
        self.view = self._shared.buffer()[status.offset : status.offset + status.byte_size]

    def close(self) -> None:
        # Views handed to requests keep the mapping alive; it is unmapped when the last one goes.
        self.view.release()
        self._shared.close()


class SharedMemoryRegistry:
    """Registered system shared-memory regions, by name. Thread-safe."""

    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    @staticmethod
    def available() -> bool:
        return _SHM_DIR.is_dir()

    def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        if not self.available():
            raise Unsupported("system shared memory needs POSIX shared memory at /dev/shm, which this system lacks")
        if not isinstance(name, str) or not name:
            raise BadRequest("shared memory region name must be a non-empty string")
        if not isinstance(key, str) or not _KEY.fullmatch(key) or key.lstrip("/") in (".", ".."):
            raise BadRequest(f"shared memory key {key!r}: expected a POSIX shared-memory name such as '/my_region'")
        for label, value in (("offset", offset), ("byte_size", byte_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise BadRequest(
                    f"shared memory region {name!r}: {label} must be a non-negative integer, got {value!r}"
                )
        if byte_size == 0:
            raise BadRequest(f"shared memory region {name!r}: byte_size must be positive")
        with self._lock:
            if name in self._regions:
                raise BadRequest(f"shared memory region {name!r} is already registered; unregister it first")
            self._regions[name] = _Region(RegionStatus(name, key, offset, byte_size))

    def unregister(self, name: str | None = None) -> None:
        """Unregister `name`, or every region when `name` is None or ''. Unknown names are not an error
        (as in Triton: unregistering is idempotent)."""
        with self._lock:
            if name:
                regions = [self._regions.pop(name)] if name in self._regions else []
            else:
                regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.close()

    def status(self, name: str | None = None) -> list[RegionStatus]:
        with self._lock:
            if name:
                if name not in self._regions:
                    raise NotFound(f"no system shared memory region named {name!r} is registered")
                return [self._regions[name].status]
            return [r.status for r in self._regions.values()]

    def _slice(self, name: str, offset: int, byte_size: int, what: str) -> memoryview:
        if (
            isinstance(offset, bool)
            or not isinstance(offset, int)
            or offset < 0
            or isinstance(byte_size, bool)
            or not isinstance(byte_size, int)
            or byte_size < 0
        ):
            raise BadRequest(
                f"{what}: shared memory offset and byte_size must be non-negative integers, got "
                f"{offset!r} and {byte_size!r}"
            )
        with self._lock:  # sliced under the lock: unregister releases the region's view
            region = self._regions.get(name)
            if region is None:
                raise NotFound(f"{what}: no system shared memory region named {name!r} is registered")
            size = region.status.byte_size
            if offset + byte_size > size:
                raise BadRequest(
                    f"{what}: offset {offset} + byte_size {byte_size} is outside shared memory region "
                    f"{name!r} ({size} bytes)"
                )
            return region.view[offset : offset + byte_size]

    def read(self, name: str, offset: int, byte_size: int, what: str = "input") -> memoryview:
        """The bytes of a region, in place (a view of the mapping)."""
        return self._slice(name, offset, byte_size, what)

    def write(
        self, name: str, offset: int, byte_size: int, data: bytes | memoryview | np.ndarray, what: str = "output"
    ) -> int:
        """Copy `data` into the region at `offset`; `byte_size` is the room the request gave. Returns bytes written."""
        src = (
            memoryview(data).cast("B")
            if not isinstance(data, np.ndarray)
            else memoryview(np.ascontiguousarray(data)).cast("B")
        )
        if src.nbytes > byte_size:
            raise BadRequest(f"{what}: needs {src.nbytes} bytes, the shared memory given holds {byte_size}")
        target = self._slice(name, offset, byte_size, what)
        target[: src.nbytes] = src
        return src.nbytes

    def close(self) -> None:
        self.unregister(None)
