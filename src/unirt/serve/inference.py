"""Inference, independent of the protocol: check a decoded request against the model, run it, shape the outputs.

The HTTP and gRPC layers decode their wire formats into an `InferRequest` (tensors as raw bytes, JSON data or
shared-memory references), call `InferenceService.infer`, and encode the `InferResponse` it returns.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError, RunError, UnirtError
from .config import ModelSpec, TensorSpec
from .datatypes import byte_size, bytes_for_model, decode_json_data, decode_raw, element_count, encode_raw
from .errors import BadRequest, ServeError, TimedOut, Unsupported
from .manager import ModelManager
from .shm import SharedMemoryRegistry

__all__ = [
    "InputTensor",
    "RequestedOutput",
    "InferRequest",
    "OutputTensor",
    "InferResponse",
    "InferenceService",
    "prepare_request",
    "build_response",
    "request_timeout_us",
    "cancel_on_disconnect",
    "ClientGone",
]

_NO_DATA = object()


@dataclass
class InputTensor:
    """One input as sent: exactly one of `raw` (binary), `json` (the JSON data field) or `shm` is set."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | memoryview | None = None
    json: Any = _NO_DATA
    shm: tuple[str, int, int] | None = None  # region, offset, byte_size


@dataclass
class RequestedOutput:
    name: str
    binary: bool | None = None  # None: the request's default
    class_count: int = 0
    shm: tuple[str, int, int] | None = None


@dataclass
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: list[InputTensor] = field(default_factory=list)
    outputs: list[RequestedOutput] | None = None  # None: every output
    binary_output: bool = False
    parameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray | None  # None when written to shared memory
    binary: bool = False
    shm: tuple[str, int] | None = None  # region, bytes written


@dataclass
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[OutputTensor]


class InferenceService:
    """Runs v2 inference requests on the manager's models."""

    def __init__(self, manager: ModelManager, shm: SharedMemoryRegistry) -> None:
        self.manager = manager
        self.shm = shm

    async def infer(self, request: InferRequest) -> InferResponse:
        """Run one request. Cancelling the awaiting task (the client went away) drops the request if it is still
        queued; a request still queued when its timeout passes is dropped and answered `TimedOut`."""
        started = time.perf_counter_ns()
        model = self.manager.get(request.model_name, request.model_version)
        future = None
        try:
            timeout = model.timeout_s(request_timeout_us(request.parameters))
            feeds, size, wanted = prepare_request(model.spec, request, self.shm)
            done = model.run_inline(feeds, size)  # a cheap model with nothing queued: no thread hop
            if done is None and timeout:
                future, waiting = model.submit_async(feeds, size)
                try:
                    done = await asyncio.wait_for(asyncio.shield(waiting), timeout)
                except asyncio.TimeoutError:
                    if not future.cancel():  # already running: a timeout drops queued work only (as Triton)
                        done = await waiting
                    else:
                        model.stats.drop("timeout")
                        raise TimedOut(
                            f"model {model.name!r}: request timeout expired: still queued after {timeout * 1e6:.0f} us"
                        ) from None
            elif done is None:
                future, waiting = model.submit_async(feeds, size)
                done = await waiting
            response = build_response(
                model.name, str(model.version), model.spec, request, wanted, done.outputs, self.shm
            )
        except BaseException as exc:
            if isinstance(exc, asyncio.CancelledError) and future is not None and future.cancel():
                model.stats.drop("cancelled")  # the client went away while it was queued: it will not run
            model.stats.failure(time.perf_counter_ns() - started, _reason(exc))
            if isinstance(exc, (UnirtError, asyncio.CancelledError)):
                raise
            raise RunError(f"model {model.name!r}: {type(exc).__name__}: {exc}") from exc
        model.stats.success(
            time.perf_counter_ns() - started, done.queue_ns, done.input_ns, done.infer_ns, done.output_ns
        )
        return response


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was ready (its queued request was dropped)."""


async def cancel_on_disconnect(receive: Any, awaitable: Any, after: float = 0.02) -> Any:
    """Await `awaitable` (an inference) in the current task, cancelling it if the ASGI client disconnects first,
    then raise ClientGone. Once the body is read, `receive` returns `http.disconnect` when the client goes away;
    it is watched only from `after` seconds on, so a quick request pays for a timer, not for a watching task."""
    loop = asyncio.get_running_loop()
    current = asyncio.current_task()
    gone = False
    watcher: asyncio.Task | None = None

    async def watch() -> None:
        nonlocal gone
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        except Exception:  # cannot watch this connection: just answer it
            return
        gone = True
        current.cancel()  # type: ignore[union-attr]

    def start() -> None:
        nonlocal watcher
        watcher = loop.create_task(watch())

    timer = loop.call_later(after, start)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if not gone:
            raise
        uncancel = getattr(current, "uncancel", None)  # Python 3.11+: this cancellation is handled here
        if uncancel is not None:
            uncancel()
        raise ClientGone() from None
    finally:
        timer.cancel()
        if watcher is not None:
            watcher.cancel()


def request_timeout_us(parameters: dict[str, Any]) -> int:
    """The v2 request parameter `timeout` (microseconds, as Triton clients send it); 0 when absent."""
    value = parameters.get("timeout")
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequest(f"parameters.timeout must be a non-negative integer (microseconds), got {value!r}")
    return value


# -- request -> feeds, outputs -> response: shared by unirt serve and the Ray Serve deployment ----------------------
def prepare_request(
    spec: ModelSpec, request: InferRequest, shm: SharedMemoryRegistry | None = None
) -> tuple[dict[str, np.ndarray], int, list]:
    """Check a decoded request against the model's spec and decode its tensors: (feeds, batch size, outputs wanted).
    Without `shm` (a front end that has no shared-memory registry) a shared-memory reference is refused."""
    inputs = spec.input_map
    given: dict[str, InputTensor] = {}
    for tensor in request.inputs:
        if tensor.name in given:
            raise BadRequest(f"input {tensor.name!r} is given twice")
        if tensor.name not in inputs:
            raise BadRequest(
                f"unexpected input {tensor.name!r} for model {spec.name!r}; its inputs are: {', '.join(inputs)}"
            )
        given[tensor.name] = tensor
    missing = len(given) < len(inputs) and [n for n, t in inputs.items() if n not in given and not t.optional]
    if missing:
        raise BadRequest(
            f"model {spec.name!r}: missing input(s) {', '.join(map(repr, missing))}; its inputs "
            f"are: {', '.join(inputs)}"
        )
    batched = spec.max_batch_size > 0
    size = None
    feeds = {}
    for name, spec_t in inputs.items():
        tensor = given.get(name)
        if tensor is None:
            continue
        shape = _check_shape(spec, spec_t, tensor, batched)
        if batched:
            if size is None:
                size = shape[0]
            elif shape[0] != size:
                raise BadRequest(f"input {name!r}: batch size {shape[0]} differs from the other inputs' {size}")
        array = _decode(tensor, shape, shm)
        if tensor.datatype == "BYTES":
            array = bytes_for_model(name, array)
        if spec_t.reshaped:
            array = _reshape(name, array, shape[:1] + spec_t.model_dims if batched else spec_t.model_dims, spec_t)
        feeds[name] = array
    wanted = _wanted_outputs(spec, request)
    if shm is None and any(out.shm is not None for out in wanted):
        raise Unsupported("shared memory outputs are not available here; ask for the outputs in the response")
    return feeds, (size or 1) if batched else 1, wanted


def _check_shape(spec: ModelSpec, spec_t: TensorSpec, tensor: InputTensor, batched: bool) -> tuple[int, ...]:
    name = tensor.name
    if tensor.datatype != spec_t.datatype:
        raise BadRequest(f"input {name!r}: datatype {tensor.datatype}, expected {spec_t.datatype}")
    shape = tensor.shape
    dims = spec_t.dims
    if len(shape) != len(dims) + batched or (shape and min(shape) < 0):
        raise BadRequest(
            f"input {name!r}: shape {list(shape)}, expected {([-1] if batched else []) + list(dims)}"
            + (" (the batch dim first, as max_batch_size > 0)" if batched else "")
        )
    if batched and not 1 <= shape[0] <= spec.max_batch_size:
        raise BadRequest(f"input {name!r}: batch size {shape[0]} is outside 1..max_batch_size ({spec.max_batch_size})")
    body = shape[1:] if batched else shape
    if body != dims and any(want != -1 and want != have for want, have in zip(dims, body)):
        raise BadRequest(f"input {name!r}: shape {list(shape)}, expected {([-1] if batched else []) + list(dims)}")
    return tuple(shape)


def _reshape(name: str, array: np.ndarray, target: tuple[int, ...], spec_t: TensorSpec) -> np.ndarray:
    """The config's `reshape` of an input, refused (not a backend failure) when the request's size cannot fill it."""
    fixed = spec_t.model_fixed_count * (target[0] if len(target) > len(spec_t.model_dims) else 1)  # >= 1
    if (array.size % fixed != 0) if -1 in target else array.size != fixed:
        raise BadRequest(
            f"input {name!r}: shape {list(array.shape)} ({array.size} elements) cannot be reshaped to "
            f"{list(target)} as the model's config asks (reshape {{ shape: {list(spec_t.model_dims)} }})"
        )
    return array.reshape(target)


def _decode(tensor: InputTensor, shape: tuple[int, ...], shm: SharedMemoryRegistry | None) -> np.ndarray:
    if tensor.shm is not None:
        if shm is None:
            raise Unsupported(
                f"input {tensor.name!r}: shared memory is not available here; send the data in the request"
            )
        region, offset, nbytes = tensor.shm
        return decode_raw(
            tensor.name, tensor.datatype, shape, shm.read(region, offset, nbytes, f"input {tensor.name!r}")
        )
    if tensor.raw is not None:
        return decode_raw(tensor.name, tensor.datatype, shape, tensor.raw)
    if tensor.json is not _NO_DATA:
        return decode_json_data(tensor.name, tensor.datatype, shape, tensor.json)
    if element_count(shape) == 0:
        return decode_raw(tensor.name, tensor.datatype, shape, b"")
    raise BadRequest(f"input {tensor.name!r} has no data")


def _wanted_outputs(spec: ModelSpec, request: InferRequest) -> list[RequestedOutput]:
    outputs = spec.output_map
    if request.outputs is None:
        return [RequestedOutput(name) for name in outputs]
    seen = set()
    for out in request.outputs:
        if out.name not in outputs:
            raise BadRequest(
                f"unexpected output {out.name!r} for model {spec.name!r}; its outputs are: {', '.join(outputs)}"
            )
        if out.name in seen:
            raise BadRequest(f"output {out.name!r} is requested twice")
        seen.add(out.name)
        if out.class_count < 0:
            raise BadRequest(f"output {out.name!r}: classification count must be >= 0")
    return request.outputs


def build_response(
    model_name: str,
    model_version: str,
    spec: ModelSpec,
    request: InferRequest,
    wanted: list[RequestedOutput],
    results: dict[str, np.ndarray],
    shm: SharedMemoryRegistry | None = None,
) -> InferResponse:
    """The v2 response for a run's outputs: reshaped per the config, classified, binary or JSON, or into shm."""
    batched = spec.max_batch_size > 0
    outs = []
    for req in wanted:
        spec_t = spec.output_map[req.name]
        array = np.asarray(results[req.name])
        if spec_t.reshaped and list(spec_t.dims).count(-1) <= 1:
            array = array.reshape((array.shape[0],) + spec_t.dims if batched else spec_t.dims)
        datatype = spec_t.datatype
        if req.class_count:
            array = _classify(array, req.class_count, spec_t.labels, batched, req.name)
            datatype = "BYTES"
        binary = request.binary_output if req.binary is None else req.binary
        if req.shm is not None and shm is not None:
            region, offset, room = req.shm
            written = shm.write(region, offset, room, encode_raw(array, datatype), f"output {req.name!r}")
            outs.append(OutputTensor(req.name, datatype, array.shape, None, False, (region, written)))
        else:
            outs.append(OutputTensor(req.name, datatype, array.shape, array, binary))
    return InferResponse(model_name, model_version, request.id, outs)


def _classify(array: np.ndarray, count: int, labels: tuple[str, ...], batched: bool, name: str) -> np.ndarray:
    """Triton's classification extension: the top `count` classes as "value:index[:label]" strings."""
    if array.dtype.kind not in "biuf":
        raise BadRequest(f"output {name!r}: classification needs a numeric output, it is {array.dtype}")
    rows = array.reshape(array.shape[0], -1) if batched else array.reshape(1, -1)
    k = min(count, rows.shape[1])
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, row in enumerate(rows):
        top = np.argsort(-row.astype(np.float64), kind="stable")[:k]
        for j, idx in enumerate(top):
            text = f"{float(row[idx]):f}:{int(idx)}"
            if labels and idx < len(labels):
                text += f":{labels[idx]}"
            out[r, j] = text.encode()
    return out if batched else out.reshape(k)


def _reason(exc: BaseException) -> str:
    """Triton's failure reasons for nv_inference_request_failure."""
    if isinstance(exc, asyncio.CancelledError):
        return "CANCELED"
    if isinstance(exc, (ServeError, InputError)) and not isinstance(exc, RunError):
        return "REJECTED"
    return "BACKEND"


def output_byte_size(tensor: OutputTensor) -> int:
    assert tensor.array is not None
    return byte_size(tensor.array, tensor.datatype)
