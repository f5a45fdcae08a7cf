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
from tritonclient.grpc import service_pb2_grpc as pb_grpc  # the servicer's base class

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
    """An `InferRequest` from a parsed `ModelInferRequest`; the v2 rules for raw and typed contents checked."""
    params = _params(msg.parameters) if msg.parameters else {}
    if params and params.get("sequence_id") not in (None, 0, ""):
        raise Unsupported("sequence_id: sequence batching is not supported by unirt serve")
    raw = msg.raw_input_contents  # indexed once per input: one bytes object each, which numpy then views
    count = len(raw)
    raw_pos = 0
    inputs = []
    for i, t in enumerate(msg.inputs):
        name, datatype, shape = t.name, t.datatype, tuple(t.shape)
        if not name:
            raise BadRequest(f"inputs[{i}]: name is missing")
        if datatype not in DATATYPES:
            raise BadRequest(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
        if shape and min(shape) < 0:
            raise BadRequest(f"input {name!r}: shape {list(shape)} has a negative dim")
        tensor = InputTensor(name, datatype, shape)
        if t.parameters:
            tensor.shm = _shm_ref(_params(t.parameters), f"input {name!r}")
        if tensor.shm is None:
            if t.HasField("contents"):
                if count:
                    raise BadRequest(
                        f"input {name!r}: use either raw_input_contents or contents for all inputs, not both"
                    )
                tensor.json = _contents_values(t, f"input {name!r}")
            else:
                if raw_pos >= count:
                    raise BadRequest(
                        f"input {name!r} has no data: raw_input_contents has {count} entries "
                        f"for {len(msg.inputs)} inputs"
                    )
                tensor.raw = raw[raw_pos]
                raw_pos += 1
        inputs.append(tensor)
    if raw_pos != count:
        raise BadRequest(f"raw_input_contents has {count} entries, the inputs use {raw_pos}")
    outputs = None
    if msg.outputs:
        outputs = []
        for o in msg.outputs:
            shm_ref, classes = None, 0
            if o.parameters:
                what = f"output {o.name!r}"
                oparams = _params(o.parameters)
                classes = oparams.get("classification", 0)
                if isinstance(classes, bool) or not isinstance(classes, int):
                    raise BadRequest(f"{what}: classification must be an integer")
                shm_ref = _shm_ref(oparams, what)
            outputs.append(RequestedOutput(o.name, True, classes, shm_ref))
    return InferRequest(msg.model_name, msg.model_version, msg.id, inputs, outputs, True, params)


def _contents_values(t: Any, what: str) -> list:
    field_name = _CONTENTS.get(t.datatype)
    if field_name is None:
        raise BadRequest(f"{what}: {t.datatype} data must be sent in raw_input_contents")
    values = list(getattr(t.contents, field_name))
    return values


# -- ModelInferResponse, encoded by hand: the message is a few strings, shapes and byte strings, and building it
# as a protobuf message first costs more than the whole encoding (tests/serve/test_grpc_wire.py checks it against
# service_pb2). Field numbers from grpc_service.proto.
_SMALL = [bytes((i,)) for i in range(128)]
_CACHE_MAX = 4096  # bound on each cache below: their keys come from the models and the requests' shapes


def _varint(n: int) -> bytes:
    if n < 128:
        return _SMALL[n] if n >= 0 else _varint(n & 0xFFFFFFFFFFFFFFFF)  # int64: two's complement, 10 bytes
    out = bytearray()
    while n > 127:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: int, data: bytes) -> bytes:
    """A length-delimited field (string, bytes, message); `tag` is (field number << 3) | 2."""
    return _SMALL[tag] + _varint(len(data)) + data


def _text(tag: int, text: str) -> bytes:
    return _field(tag, text.encode()) if text else b""


_heads: dict[tuple[str, str], bytes] = {}  # (model name, version) -> fields 1 and 2 of the response
_tensors: dict[tuple[str, str, tuple[int, ...]], bytes] = {}  # an output's name, datatype and shape fields


def _response_head(name: str, version: str) -> bytes:
    head = _heads.get((name, version))
    if head is None:
        head = _text(0x0A, name) + _text(0x12, version)
        if len(_heads) < _CACHE_MAX:
            _heads[(name, version)] = head
    return head


def _tensor_fields(name: str, datatype: str, shape: tuple[int, ...]) -> bytes:
    key = (name, datatype, shape)
    fields = _tensors.get(key)
    if fields is None:
        fields = _text(0x0A, name) + _text(0x12, datatype)
        if shape:  # packed int64
            fields += _field(0x1A, b"".join(_varint(d) for d in shape))
        if len(_tensors) < _CACHE_MAX:
            _tensors[key] = fields
    return fields


def _shm_params(region: str, written: int) -> bytes:
    """The parameters map of an output written to shared memory (two map entries, in key order as protobuf's
    deterministic serialization writes them)."""
    region_entry = _text(0x0A, "shared_memory_region") + _field(0x12, _text(0x1A, region) or b"\x1a\x00")
    size_entry = _text(0x0A, "shared_memory_byte_size") + _field(0x12, b"\x10" + _varint(written))
    return _field(0x22, size_entry) + _field(0x22, region_entry)


def encode_response(response: InferResponse) -> bytes:
    """The serialized `ModelInferResponse` of `response`: outputs written to shared memory carry their region and
    size as parameters and an empty raw entry where a later output has data (the entries stay aligned)."""
    parts = [_response_head(response.model_name, response.model_version)]
    if response.id:
        parts.append(_text(0x1A, response.id))
    raws: list[Any] = []
    pending_empty = 0
    for out in response.outputs:
        fields = _tensor_fields(out.name, out.datatype, tuple(out.shape))
        if out.shm is not None:
            fields += _shm_params(out.shm[0], out.shm[1])
            pending_empty += 1  # keeps raw_output_contents aligned with outputs if a later one has data
        else:
            if pending_empty:
                raws.extend([b""] * pending_empty)
                pending_empty = 0
            raws.append(encode_raw(out.array, out.datatype))  # type: ignore[arg-type]
        parts.append(_field(0x2A, fields))
    for raw in raws:
        parts.append(_SMALL[0x32])
        parts.append(_varint(len(raw)))  # a memoryview from encode_raw is cast to bytes: len is its size
        parts.append(raw)
    return b"".join(parts)


def _stream_answer(encoded: bytes) -> bytes:
    """A `ModelStreamInferResponse` holding an encoded `ModelInferResponse` (its field 2)."""
    return _SMALL[0x12] + _varint(len(encoded)) + encoded


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
    async def ModelInfer(self, request: Any, context: Any) -> bytes:
        """Answers the serialized response (registered without a response serializer, see `add_servicer`)."""
        return encode_response(await self.ctx.service.infer(decode_request(request)))

    async def ModelStreamInfer(self, request_iterator: AsyncIterator[Any], context: Any) -> AsyncIterator[bytes]:
        """Bidirectional stream: requests run concurrently; each answer (or error) is sent when ready, serialized
        (registered without a response serializer, see `add_servicer`)."""
        if "inference" in self.restricted_categories:
            try:
                self.restricted.check("inference", _metadata_getter(context))
            except UnirtError as exc:
                await context.abort(getattr(grpc.StatusCode, status_of(exc)[1]), str(exc))
        answers: asyncio.Queue = asyncio.Queue()
        tasks: set[asyncio.Task] = set()

        async def one(msg: Any) -> None:
            try:
                answer = _stream_answer(encode_response(await self.ctx.service.infer(decode_request(msg))))
            except UnirtError as exc:
                answer = pb.ModelStreamInferResponse(error_message=str(exc)).SerializeToString()
            except Exception as exc:
                log.exception("internal error in ModelStreamInfer")
                answer = pb.ModelStreamInferResponse(
                    error_message=f"internal error: {type(exc).__name__}: {exc}"
                ).SerializeToString()
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
    """Register the v2 service on a grpc.aio server, one handler per RPC of its protobuf service. ModelInfer and
    ModelStreamInfer answer bytes that `encode_response` wrote (no response serializer); every request is parsed
    by protobuf."""
    servicer = InferenceServicer(ctx, restricted)
    service = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"]
    handlers = {
        m.name: grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name),
            request_deserializer=getattr(pb, m.input_type.name).FromString,
            response_serializer=getattr(pb, m.output_type.name).SerializeToString,
        )
        for m in service.methods
        if m.name not in ("ModelInfer", "ModelStreamInfer")  # the only streaming RPC is ModelStreamInfer
    }
    handlers["ModelInfer"] = grpc.unary_unary_rpc_method_handler(
        servicer.ModelInfer, request_deserializer=pb.ModelInferRequest.FromString
    )
    handlers["ModelStreamInfer"] = grpc.stream_stream_rpc_method_handler(
        servicer.ModelStreamInfer, request_deserializer=pb.ModelInferRequest.FromString
    )
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    if hasattr(server, "add_registered_method_handlers"):  # grpcio 1.63+: found without the generic lookup
        server.add_registered_method_handlers(service.full_name, handlers)
