"""The unirt exception hierarchy. Every error unirt raises on purpose is a `UnirtError`."""

from __future__ import annotations

__all__ = [
    "UnirtError",
    "ModelLoadError",
    "ModelFormatError",
    "InputError",
    "BackendUnavailableError",
    "UnsupportedOptionError",
    "RunError",
    "BuffersRefusedError",
    "SessionClosedError",
    "ConversionError",
    "FrontendMismatchError",
    "BackendCrashedError",
    "ArenaBusyError",
]


class UnirtError(Exception):
    """Base of every error unirt raises on purpose."""


class ModelLoadError(UnirtError):
    """A model file is missing, unreadable, malformed, or the backend refused to load it."""


class ModelFormatError(ModelLoadError):
    """The model's format could not be recognised, or no backend accepts it."""


class InputError(UnirtError, ValueError):
    """The inputs given to `Session.run` do not match what the model expects."""


class BackendUnavailableError(UnirtError):
    """The requested backend is not installed, failed to import, or cannot run here."""


class UnsupportedOptionError(UnirtError, ValueError):
    """An option (precision, device, threads, a backend option) is invalid or not supported by the backend."""


class RunError(UnirtError, RuntimeError):
    """The backend failed while running a model on inputs that passed unirt's checks."""


class BuffersRefusedError(RunError):
    """The engine refused the output arrays it was given to write into (their shapes are not what this run
    produces: the model's declared shapes do not hold). Raised by a plugin's `run_into`; a session then lets the
    engine allocate those outputs, from then on. Any other RunError is a real failure and is raised as is."""


class SessionClosedError(UnirtError):
    """The session was used after `close()`."""


class ConversionError(UnirtError):
    """Converting a model to another format failed, crashed, or produced a model whose outputs disagree."""


class FrontendMismatchError(ConversionError):
    """A backend reading a format it does not own through a frontend (OpenVINO on ONNX or TFLite, TensorRT from
    ONNX) disagrees with the format's reference engine beyond tolerance on the first run's inputs.
    `errors`: the measured error per output (`unirt.conversion.verify.OutputError`); `reference`: the engine."""

    def __init__(self, message: str, *, errors: tuple = (), reference: str | None = None) -> None:
        super().__init__(message)
        self.errors = errors
        self.reference = reference


class BackendCrashedError(RunError):
    """The backend's native code died (in an isolated child process); the session restarts it on the next call.

    `signal` is the signal that killed it (e.g. 11 for SIGSEGV, 6 for SIGABRT) and `signal_name` its name;
    `exitcode` is set instead when the process exited without one.
    """

    def __init__(self, message: str, *, signal: int | None = None, exitcode: int | None = None) -> None:
        super().__init__(message)
        self.signal = signal
        self.exitcode = exitcode

    @property
    def signal_name(self) -> str | None:
        if self.signal is None:
            return None
        import signal as _signal

        try:
            return _signal.Signals(self.signal).name
        except ValueError:
            return f"signal {self.signal}"


class ArenaBusyError(RunError):
    """A session ran while another session held the `unirt.Arena` they share (an arena made with blocking=False)."""
