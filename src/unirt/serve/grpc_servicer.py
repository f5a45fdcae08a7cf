"""The KServe v2 gRPC API (`inference.GRPCInferenceService`, stubs from tritonclient) on grpc.aio.

Same semantics as the HTTP API, through the same `ServerContext`; errors become gRPC status codes with the
message (INVALID_ARGUMENT, NOT_FOUND, UNAVAILABLE, RESOURCE_EXHAUSTED, UNIMPLEMENTED, INTERNAL).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc as pb_grpc

from ..errors import UnirtError
from .context import ServerContext
from .datatypes import DATATYPES, encode_raw
from .errors import BadRequest, Unsupported, status_of
from .inference import InferRequest, InferResponse, InputTensor, RequestedOutput
from .restricted import RestrictedApis
from .shm import check_local_peer

__all__ = ["InferenceServicer", "add_servicer"]
log = logging.getLogger(__name__)

# InferTensorContents field holding each datatype (FP16 and BF16 travel only as raw bytes)
_CONTENTS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _param_value(p: Any) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def _params(mapping: Any) -> dict[str, Any]:
    return {k: _param_value(v) for k, v in mapping.items()}


def _shm_ref(params: dict[str, Any], what: str) -> tuple[str, int, int] | None:
    region = params.get("shared_memory_region")
    if region is None:
        return None
    if not isinstance(region, str):
        raise BadRequest(f"{what}: shared_memory_region must be a string")
    size, offset = params.get("shared_memory_byte_size"), params.get("shared_memory_offset", 0)
    if isinstance(size, bool) or not isinstance(size, int) or isinstance(offset, bool) or not isinstance(offset, int):
        raise BadRequest(f"{what}: shared_memory_byte_size (required) and shared_memory_offset must be integers")
    return region, offset, size


def decode_request(msg: Any) -> InferRequest:
    request = InferRequest(msg.model_name, msg.model_version, msg.id)
    params = _params(msg.parameters)
    if params.get("sequence_id") not in (None, 0, ""):
        raise Unsupported("sequence_id: sequence batching is not supported by unirt serve")
    request.parameters = params
    raw = msg.raw_input_contents  # indexed once per input: one bytes object each, which numpy then views
    raw_pos = 0
    for i, t in enumerate(msg.inputs):
        if not t.name:
            raise BadRequest(f"inputs[{i}]: name is missing")
        what = f"input {t.name!r}"
        if t.datatype not in DATATYPES:
            raise BadRequest(f"{what}: datatype {t.datatype!r} is not one of {', '.join(DATATYPES)}")
        if any(d < 0 for d in t.shape):
            raise BadRequest(f"{what}: shape {list(t.shape)} has a negative dim")
        tensor = InputTensor(t.name, t.datatype, tuple(t.shape))
        tensor.shm = _shm_ref(_params(t.parameters), what)
        if tensor.shm is None:
            if t.HasField("contents"):
                if raw:
                    raise BadRequest(f"{what}: use either raw_input_contents or contents for all inputs, not both")
                tensor.json = _contents_values(t, what)
            else:
                if raw_pos >= len(raw):
                    raise BadRequest(
                        f"{what} has no data: raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs"
                    )
                tensor.raw = raw[raw_pos]
                raw_pos += 1
        request.inputs.append(tensor)
    if raw_pos != len(raw):
        raise BadRequest(f"raw_input_contents has {len(raw)} entries, the inputs use {raw_pos}")
    if len(msg.outputs):
        request.outputs = []
        for o in msg.outputs:
            what = f"output {o.name!r}"
            oparams = _params(o.parameters)
            count = oparams.get("classification", 0)
            if isinstance(count, bool) or not isinstance(count, int):
                raise BadRequest(f"{what}: classification must be an integer")
            request.outputs.append(RequestedOutput(o.name, True, count, _shm_ref(oparams, what)))
    request.binary_output = True
    return request


def _contents_values(t: Any, what: str) -> list:
    field_name = _CONTENTS.get(t.datatype)
    if field_name is None:
        raise BadRequest(f"{what}: {t.datatype} data must be sent in raw_input_contents")
    values = list(getattr(t.contents, field_name))
    return values


def encode_response(response: InferResponse) -> Any:
    msg = pb.ModelInferResponse(model_name=response.model_name, model_version=response.model_version, id=response.id)
    pending_empty = 0
    for out in response.outputs:
        tensor = msg.outputs.add(name=out.name, datatype=out.datatype, shape=list(out.shape))
        if out.shm is not None:
            tensor.parameters["shared_memory_region"].string_param = out.shm[0]
            tensor.parameters["shared_memory_byte_size"].int64_param = out.shm[1]
            pending_empty += 1  # keeps raw_output_contents aligned with outputs if a later one has data
        else:
            msg.raw_output_contents.extend([b""] * pending_empty)
            pending_empty = 0
            raw = encode_raw(out.array, out.datatype)
            msg.raw_output_contents.append(raw if isinstance(raw, bytes) else raw.tobytes())
    return msg


Method = Callable[[Any, Any], Awaitable[Any]]

# The restricted-API category of each RPC (Triton's grouping; ModelReady is a health check in KServe v2)
CATEGORY = {
    "ServerLive": "health",
    "ServerReady": "health",
    "ModelReady": "health",
    "ServerMetadata": "metadata",
    "ModelMetadata": "metadata",
    "ModelInfer": "inference",
    "ModelStreamInfer": "inference",
    "ModelConfig": "model-config",
    "ModelStatistics": "statistics",
    "RepositoryIndex": "model-repository",
    "RepositoryModelLoad": "model-repository",
    "RepositoryModelUnload": "model-repository",
    "SystemSharedMemoryStatus": "shared-memory",
    "SystemSharedMemoryRegister": "shared-memory",
    "SystemSharedMemoryUnregister": "shared-memory",
    "CudaSharedMemoryStatus": "shared-memory",
    "CudaSharedMemoryRegister": "shared-memory",
    "CudaSharedMemoryUnregister": "shared-memory",
    "TraceSetting": "trace",
    "LogSettings": "logging",
}


def _metadata_getter(context: Any) -> Callable[[str], str | None]:
    def get(key: str) -> str | None:
        for k, v in context.invocation_metadata() or ():
            if k.lower() == key:
                return v if isinstance(v, str) else None
        return None

    return get


def _rpc(fn: Method) -> Method:
    category = CATEGORY[fn.__name__]

    async def wrapped(self: InferenceServicer, request: Any, context: Any) -> Any:
        try:
            if category in self.restricted_categories:
                self.restricted.check(category, _metadata_getter(context))
            return await fn(self, request, context)
        except UnirtError as exc:
            await context.abort(getattr(grpc.StatusCode, status_of(exc)[1]), str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception as exc:  # a bug must still answer the client
            log.exception("internal error in %s", fn.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}: {exc}")

    wrapped.__name__ = fn.__name__
    return wrapped


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, ctx: ServerContext, restricted: RestrictedApis | None = None) -> None:
        self.ctx = ctx
        self.restricted = restricted or RestrictedApis(protocol="grpc")
        self.restricted_categories = frozenset(self.restricted.by_category)

    @_rpc
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return pb.ServerLiveResponse(live=self.ctx.live)

    @_rpc
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return pb.ServerReadyResponse(ready=self.ctx.is_ready())

    @_rpc
    async def ModelReady(self, request: Any, context: Any) -> Any:
        return pb.ModelReadyResponse(ready=self.ctx.manager.is_ready(request.name, request.version))

    @_rpc
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return pb.ServerMetadataResponse(**self.ctx.server_metadata())

    @_rpc
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.ctx.model_metadata(request.name, request.version), pb.ModelMetadataResponse())

    @_rpc
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        return pb.ModelConfigResponse(config=self.ctx.model_config(request.name, request.version))

    @_rpc
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        return json_format.ParseDict(self.ctx.statistics(request.name, request.version), pb.ModelStatisticsResponse())

    @_rpc
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        response = await self.ctx.service.infer(decode_request(request))
        return encode_response(response)

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[Any]:
        """Bidirectional stream: requests run concurrently; each answer (or error) is sent when ready."""
        if "inference" in self.restricted_categories:
            try:
                self.restricted.check("inference", _metadata_getter(context))
            except UnirtError as exc:
                await context.abort(getattr(grpc.StatusCode, status_of(exc)[1]), str(exc))
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def one(msg: Any) -> None:
            try:
                answer = pb.ModelStreamInferResponse(
                    infer_response=encode_response(await self.ctx.service.infer(decode_request(msg)))
                )
            except UnirtError as exc:
                answer = pb.ModelStreamInferResponse(error_message=str(exc))
            except Exception as exc:
                log.exception("internal error in ModelStreamInfer")
                answer = pb.ModelStreamInferResponse(error_message=f"internal error: {type(exc).__name__}: {exc}")
            await answers.put(answer)

        async def reader() -> None:
            async for msg in request_iterator:
                task = asyncio.ensure_future(one(msg))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            await answers.put(None)

        read = asyncio.ensure_future(reader())
        try:
            finished = False
            while not (finished and not tasks and answers.empty()):
                answer = await answers.get()
                if answer is None:
                    finished = True
                    if tasks:
                        await asyncio.wait(set(tasks))
                    continue
                yield answer
        finally:
            read.cancel()
            for task in list(tasks):
                task.cancel()

    @_rpc
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        rows = self.ctx.manager.index(request.ready)
        return pb.RepositoryIndexResponse(models=[pb.RepositoryIndexResponse.ModelIndex(**row) for row in rows])

    @_rpc
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        config, files = None, {}
        for key, p in request.parameters.items():
            value = p.WhichOneof("parameter_choice")
            if key == "config":
                if value != "string_param":
                    raise BadRequest("load request: parameters['config'] must be a string holding the config JSON")
                config = p.string_param
            elif key.startswith("file:"):
                files[key] = p.bytes_param
        await asyncio.to_thread(self.ctx.manager.load, request.model_name, config, files or None)
        return pb.RepositoryModelLoadResponse()

    @_rpc
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        await asyncio.to_thread(self.ctx.manager.unload, request.model_name)
        return pb.RepositoryModelUnloadResponse()

    @_rpc
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        response = pb.SystemSharedMemoryStatusResponse()
        for row in self.ctx.shm_status(request.name):
            response.regions[row["name"]].CopyFrom(pb.SystemSharedMemoryStatusResponse.RegionStatus(**row))
        return response

    @_rpc
    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        check_local_peer(context.peer(), "shared memory registration")
        await asyncio.to_thread(self.ctx.shm.register, request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @_rpc
    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        check_local_peer(context.peer(), "shared memory unregistration")
        self.ctx.shm.unregister(request.name or None)
        return pb.SystemSharedMemoryUnregisterResponse()

    @_rpc
    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        raise Unsupported("CUDA shared memory is not supported by unirt serve; use system shared memory")

    @_rpc
    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        raise Unsupported("CUDA shared memory is not supported by unirt serve; use system shared memory")

    @_rpc
    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        raise Unsupported("CUDA shared memory is not supported by unirt serve; use system shared memory")

    @_rpc
    async def TraceSetting(self, request: Any, context: Any) -> Any:
        raise Unsupported("trace settings are not supported by unirt serve")

    @_rpc
    async def LogSettings(self, request: Any, context: Any) -> Any:
        raise Unsupported("log settings are not supported by unirt serve")


def add_servicer(server: Any, ctx: ServerContext, restricted: RestrictedApis | None = None) -> None:
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(ctx, restricted), server)
