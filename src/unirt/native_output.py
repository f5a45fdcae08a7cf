"""Silencing or capturing what native libraries print straight to the process's file descriptors 1 and 2.

For plugins: some engines print on import or on every load (ncnn's Vulkan loader on machines without a GPU
driver, MNN its CPU features), and converters report their errors that way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator

__all__ = ["native_output_silenced", "native_output_captured"]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass


@contextlib.contextmanager
def _redirected(target_fd: int) -> Iterator[None]:
    saved = []
    try:
        for fd in (1, 2):
            try:
                saved.append((fd, os.dup(fd)))
                os.dup2(target_fd, fd)
            except OSError:
                pass
        yield
    finally:
        for fd, copy in saved:
            os.dup2(copy, fd)
            os.close(copy)


@contextlib.contextmanager
def native_output_silenced() -> Iterator[None]:
    """Point file descriptors 1 and 2 at /dev/null for the duration (Python's own streams are flushed first)."""
    _flush_python_streams()
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        with _redirected(devnull):
            yield
    finally:
        os.close(devnull)


@contextlib.contextmanager
def native_output_captured(sink: list[str]) -> Iterator[None]:
    """Like `native_output_silenced`, but what was printed is appended to `sink`."""
    _flush_python_streams()
    with tempfile.TemporaryFile() as tmp:
        try:
            with _redirected(tmp.fileno()):
                yield
        finally:
            tmp.seek(0)
            sink.append(tmp.read().decode("utf-8", "replace"))
