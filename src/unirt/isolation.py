"""`isolate=True`: the backend session runs in a child process, so a native crash cannot take the caller down.

The child (`unirt._isolated_worker`) loads the model with the same plugin and options. Inputs and
outputs travel through two shared-memory regions (`unirt.SharedTensors`, owned by the parent, so they are cleaned
up whatever happens to either process); the pipes to the child carry only a few bytes per call. If the child dies
(a segfault on a malformed model or input, an abort), the call raises `BackendCrashedError` naming the signal, and
the next call starts a new child and loads the model again. Calls are serialized: one child runs one call at a time
(a call waiting for it when another thread closes the session raises SessionClosedError, it starts no child).
"""

from __future__ import annotations

import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import errors
from .backend import BackendSession, LoadOptions
from .errors import BackendCrashedError, ModelLoadError, RunError, UnirtError
from .formats import ModelFile
from .shm import SharedRegion, SharedTensors

__all__ = ["IsolatedRunner"]
log = logging.getLogger(__name__)

# Messages both ways: op (1 byte) + payload length (u32) + payload.
_FRAME = struct.Struct("<cI")
LOAD, ATTACH_INPUTS, ATTACH_OUTPUTS, RUN, CLOSE = b"L", b"I", b"O", b"R", b"C"
OK, ERROR, GROW = b"K", b"E", b"G"
_MIN_REGION = 64 * 1024
#: How long a process polls for the other's message before sleeping (see `receive`).
SPIN_SECONDS = 200e-6
_yield = getattr(os, "sched_yield", lambda: None)
_WORKER = "import sys; del sys.path[0]; import unirt._isolated_worker as w; sys.exit(w.main())"


def send(fd: int, op: bytes, payload: bytes = b"") -> None:
    data = _FRAME.pack(op, len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _read(fd: int, n: int, spin_until: float) -> bytes:
    """os.read on a non-blocking pipe: poll until `spin_until` (yielding the CPU to anything else that wants it,
    such as the other process when both share a core), then sleep in select until there is data."""
    while True:
        try:
            return os.read(fd, n)
        except BlockingIOError:
            if time.perf_counter() < spin_until:
                _yield()
            else:
                select.select([fd], [], [])


def receive(fd: int, spin: float = SPIN_SECONDS) -> tuple[bytes, bytes] | None:
    """(op, payload), or None when the other process closed the pipe (exited or died). `fd` is non-blocking.

    A reply usually comes within microseconds: polling for `spin` seconds before sleeping saves the wake-up,
    which costs tens of microseconds on a busy machine. The two processes take turns (one message, then its
    reply), so a read never takes in part of a next message; a large message (a model given as bytes) is read to
    its length.
    """
    until = time.perf_counter() + spin
    data = _read(fd, 65536, until)
    while len(data) < _FRAME.size:
        more = _read(fd, _FRAME.size - len(data), until) if data else b""
        if not more:
            return None  # the other end is gone
        data += more
    op, length = _FRAME.unpack_from(data)
    if len(data) >= _FRAME.size + length:
        return op, data[_FRAME.size : _FRAME.size + length]
    chunks, got = [data[_FRAME.size :]], len(data) - _FRAME.size
    while got < length:
        more = _read(fd, min(length - got, 1 << 20), until)
        if not more:
            return None
        chunks.append(more)
        got += len(more)
    return op, b"".join(chunks)


def error_payload(exc: BaseException) -> bytes:
    name = type(exc).__name__ if isinstance(exc, UnirtError) else "RunError"
    text = str(exc) if isinstance(exc, UnirtError) else f"{type(exc).__name__}: {exc}"
    return pickle.dumps((name, text))


def _raise_from_payload(payload: bytes, backend: str) -> None:
    name, text = pickle.loads(payload)
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, UnirtError)) or cls is BackendCrashedError:
        cls = RunError
    raise cls(text)


class _Crashed(Exception):
    """The child died; carries what `wait` said."""


class IsolatedRunner(BackendSession):
    """A BackendSession whose engine lives in a child process (see the module doc)."""

    def __init__(self, backend: str, model: ModelFile, options: LoadOptions) -> None:
        if os.name != "posix":
            raise errors.UnsupportedOptionError("isolate=True needs POSIX shared memory (Linux, macOS)")
        self._backend = backend
        self._model = model
        self._options = options
        self._lock = threading.Lock()
        self._closed = False
        self._proc: subprocess.Popen | None = None
        self._inputs_region: SharedTensors | None = None
        self._outputs_region: SharedTensors | None = None
        self.restarts = 0
        #: The last crash of a child (None if none): while running a call, or found dead between calls.
        self.last_crash: BackendCrashedError | None = None
        self.last_crash_at = 0.0  # time.monotonic() of last_crash
        self._start("loading")
        meta = self._meta
        self.inputs = meta["inputs"]
        self.outputs = meta["outputs"]
        self.device = meta["device"]
        self.precision = meta["precision"]
        self.precision_info = meta.get("precision_info")
        strings = [t.name for t in (*self.inputs, *self.outputs) if t.dtype == object]
        if strings:
            self.close()
            raise errors.UnsupportedOptionError(
                f"isolate=True passes tensors through shared memory, which cannot hold string tensors "
                f"({', '.join(strings)}); run this model without isolate"
            )
        self._output_index = {o.name: i for i, o in enumerate(self.outputs)}
        self._run_requests: dict[tuple[str, ...], bytes] = {}

    @property
    def pid(self) -> int | None:
        """The child's process id (None while no child runs)."""
        return self._proc.pid if self._proc is not None else None

    # -- the child ------------------------------------------------------------------------------------------
    def _start(self, doing: str) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
        # The child imports what this process imports: the same sys.path, without the working directory that
        # `python -c` would put first (it may hold a source tree of unirt or a plugin).
        self._proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, close_fds=True
        )
        self._to = self._proc.stdin.fileno()  # type: ignore[union-attr]
        self._from = self._proc.stdout.fileno()  # type: ignore[union-attr]
        os.set_blocking(self._from, False)  # receive polls, then waits in select
        self._inputs_region = None
        self._outputs_region = None
        try:
            reply = self._request(LOAD, pickle.dumps((self._backend, self._model, self._options)))
        except _Crashed as crash:
            raise self._crash_error(crash, doing) from None
        except BaseException:
            self._kill()
            raise
        if reply[0] == ERROR:
            self._kill()
            name, text = pickle.loads(reply[1])
            cls = getattr(errors, name, None)
            if not (isinstance(cls, type) and issubclass(cls, UnirtError)):
                cls = ModelLoadError
            raise cls(text)
        self._meta = pickle.loads(reply[1])

    def _request(self, op: bytes, payload: bytes = b"") -> tuple[bytes, bytes]:
        try:
            send(self._to, op, payload)
        except (BrokenPipeError, OSError):
            raise _Crashed() from None
        reply = receive(self._from)
        if reply is None:
            raise _Crashed()
        return reply

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            try:
                stream.close()  # type: ignore[union-attr]
            except OSError:
                pass

    def _crash_error(self, crash: _Crashed, doing: str) -> BackendCrashedError:
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            try:
                code = proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # the pipe closed but the process lingers: finish it
                proc.kill()
                code = proc.wait()
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()  # type: ignore[union-attr]
                except OSError:
                    pass
        sig = -code if code is not None and code < 0 else None
        if sig is not None:
            try:
                how = f"killed by {signal.Signals(sig).name} (signal {sig})"
            except ValueError:
                how = f"killed by signal {sig}"
        else:
            how = f"exited with code {code}"
        pid = proc.pid if proc is not None else "?"
        return BackendCrashedError(
            f"backend {self._backend!r} crashed in its isolated process (pid {pid}) while {doing} "
            f"{self._model.name}: {how}; the session starts a new process on the next call",
            signal=sig,
            exitcode=None if sig is not None else code,
        )

    def restart(self) -> bool:
        """Start a new child now if the last one died (the next call would otherwise start it); True if it did.
        Raises what loading the model in the new child raises."""
        with self._lock:
            if self._closed or (self._proc is not None and self._proc.poll() is None):
                return False
            if self._proc is not None:  # died since its last call
                self._record(self._crash_error(_Crashed(), "idle with"))
            self.restarts += 1
            log.info("isolated backend %r: starting a new process after a crash", self._backend)
            self._start("reloading")
            return True

    def _record(self, crash: BackendCrashedError) -> BackendCrashedError:
        self.last_crash, self.last_crash_at = crash, time.monotonic()
        return crash

    # -- running --------------------------------------------------------------------------------------------
    def run(self, feeds: dict[str, np.ndarray], output_names: Sequence[str]) -> list[Any]:
        return self._call(feeds, output_names, None)

    def run_into(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray]
    ) -> list[Any]:
        return self._call(feeds, output_names, out)

    def _call(
        self, feeds: dict[str, np.ndarray], output_names: Sequence[str], out: dict[str, np.ndarray] | None
    ) -> list[Any]:
        with self._lock:
            if self._closed:  # closed by another thread while this call waited for the child
                raise errors.SessionClosedError("this Session is closed")
            proc = self._proc
            if proc is None or proc.poll() is not None:  # crashed, or died between calls (e.g. killed)
                if proc is not None:  # nothing of this call was lost: start a new child and run it there
                    self._record(self._crash_error(_Crashed(), "idle with"))
                    log.warning("%s", self.last_crash)
                self.restarts += 1
                log.info("isolated backend %r: starting a new process after a crash", self._backend)
                self._start("reloading")
            try:
                return self._exchange(feeds, output_names, out)
            except _Crashed as crash:
                raise self._record(self._crash_error(crash, "running")) from None
            except UnirtError:
                raise
            except BaseException:  # interrupted mid-call (e.g. KeyboardInterrupt): the pipe is out of step
                self._kill()
                raise

    def _exchange(self, feeds, output_names, out) -> list[Any]:
        region = self._inputs_region
        if region is None or not region.rewrite(feeds):
            needed = SharedTensors.size_for(feeds)
            region = SharedTensors.create(feeds, capacity=max(_MIN_REGION, needed + needed // 2))
            self._attach(ATTACH_INPUTS, region)
            old, self._inputs_region = self._inputs_region, region
            if old is not None:
                old.close()
        if self._outputs_region is None:
            self._attach(ATTACH_OUTPUTS, self._new_output_region(_MIN_REGION))
        request = self._run_requests.get(output_names)
        if request is None:
            index = self._output_index
            request = struct.pack(f"<{len(output_names)}H", *(index[n] for n in output_names))
            self._run_requests[tuple(output_names)] = request
        reply = self._request(RUN, request)
        if reply[0] == GROW:
            (needed,) = struct.unpack("<Q", reply[1])
            reply = self._attach(ATTACH_OUTPUTS, self._new_output_region(needed + needed // 2))
        if reply[0] == ERROR:
            _raise_from_payload(reply[1], self._backend)
        shared = self._outputs_region
        shared.refresh()  # type: ignore[union-attr]
        results = []
        for name in output_names:
            view = shared[name]  # type: ignore[index]
            target = out.get(name) if out else None
            if target is not None and target.shape == view.shape:
                np.copyto(target, view)
                results.append(target)
            else:
                results.append(view.copy())
        return results

    def _new_output_region(self, size: int) -> SharedTensors:
        return SharedTensors(SharedRegion.create(max(size, _MIN_REGION)))

    def _attach(self, op: bytes, region: SharedTensors) -> tuple[bytes, bytes]:
        reply = self._request(op, region.name.encode())
        if op == ATTACH_OUTPUTS:
            old, self._outputs_region = self._outputs_region, region
            if old is not None:
                old.close()
        return reply

    def __del__(self) -> None:  # an unclosed session: end the child and drop the regions without waiting
        try:
            self._kill()
            for region in (self._inputs_region, self._outputs_region):
                if region is not None:
                    region.close()
        except Exception:
            pass

    def close(self) -> None:
        with self._lock:
            self._closed = True
            proc = self._proc
            if proc is not None:
                try:
                    send(self._to, CLOSE)
                    proc.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    pass
                self._kill()
            for region in (self._inputs_region, self._outputs_region):
                if region is not None:
                    region.close()
            self._inputs_region = self._outputs_region = None
