"""The engines' own log lines (LiteRT's "INFO: Created TensorFlow Lite XNNPACK delegate", ONNX Runtime's colored
warnings, gRPC's fork notice): quiet on a command line unless asked for.

The `unirt` command calls `quiet()` unless it runs with `-v` or `UNIRT_ENGINE_LOGS=1`; a library user's process
is left as the engines set it up (`UNIRT_ENGINE_LOGS=0` makes it quiet too), except that ONNX Runtime's default
logger says errors only unless unirt's own logger is verbose. Plugins ask `engines_quiet()` at load and use
`filtered_stderr()` around native calls that print to file descriptor 2 from C++ (where no Python logger or
environment variable reaches).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["ENV", "quiet", "engines_quiet", "quiet_onnxruntime", "filtered_stderr"]

ENV = "UNIRT_ENGINE_LOGS"  # "1": let the engines' log lines through, also on the command line; "0": keep them quiet
# Informational lines engines print straight to fd 2 (LiteRT's minimal logger writes "INFO: ...").
_INFO_LINE = re.compile(rb"^INFO: ")

_quiet = os.environ.get(ENV) == "0"  # set by quiet() in a parent: unirt's child processes stay quiet too
_lock = threading.RLock()


def quiet() -> None:
    """Keep the engines' informational and warning lines off the terminal for this process (the CLI's default).
    Environment variables are set before the engines read them (gRPC reads its own at import)."""
    global _quiet
    if os.environ.get(ENV, "") not in ("", "0"):
        return
    _quiet = True
    os.environ[ENV] = "0"  # inherited by unirt's child processes (isolated sessions, converters, canaries)
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    # unirt starts its child processes with fork+exec and never uses gRPC in them: gRPC's fork handlers only
    # print "Other threads are currently calling into gRPC, skipping fork() handlers".
    os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def engines_quiet() -> bool:
    """Whether a plugin should turn its engine's own logging down: after `quiet()`, or when unirt's logger is not
    verbose (no DEBUG) and `UNIRT_ENGINE_LOGS` is not set."""
    if os.environ.get(ENV, "") not in ("", "0"):
        return False
    return _quiet or not logging.getLogger("unirt").isEnabledFor(logging.DEBUG)


def quiet_onnxruntime(ort: Any) -> None:
    """ONNX Runtime's default logger to errors only when `engines_quiet()`: it also logs for sessions made outside
    the plugin (quantization tools), in color, e.g. "Removing initializer 'x'. It is not used by any node"."""
    if engines_quiet():
        ort.set_default_logger_severity(3)


@contextmanager
def filtered_stderr() -> Iterator[None]:
    """After `quiet()`: capture what native code writes to fd 2 inside the block and write it back without the
    engine's "INFO: " lines (errors and warnings still show). Otherwise a no-op. Meant for a load, not a run."""
    if not _quiet:
        yield
        return
    with _lock:
        try:
            sys.stderr.flush()
            saved = os.dup(2)
        except (OSError, ValueError):  # no usable fd 2 (a closed stderr): nothing to filter
            yield
            return
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                yield
            finally:
                try:
                    sys.stderr.flush()
                except (OSError, ValueError):
                    pass
                os.dup2(saved, 2)
                os.close(saved)
                capture.seek(0)
                kept = b"".join(line for line in capture.read().splitlines(keepends=True) if not _INFO_LINE.match(line))
                if kept:
                    os.write(2, kept)
