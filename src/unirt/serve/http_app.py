"""The KServe v2 HTTP/REST API as a Starlette app (served by uvicorn), speaking what `tritonclient.http` sends.

Every error is answered with the v2 error body `{"error": "..."}` and a 4xx/5xx status; nothing a client sends
can crash the server or leave its connection hanging. Request bodies are limited in size, compressed bodies
(gzip/deflate) included, before they are parsed.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import zlib
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import UnirtError
from .config import config_to_dict
from .context import ServerContext
from .errors import BadRequest, QueueFull, TooLarge, Unsupported, status_of
from .http_codec import encode_infer_response, parse_infer_request, parse_json_object
from .inference import ClientGone, InferResponse, cancel_on_disconnect
from .restricted import RestrictedApis
from .shm import check_local_peer

#: An all-JSON infer body this big is parsed on a worker thread: its number arrays are read in C++ without the
#: GIL (`http_codec`), so the event loop goes on with other requests meanwhile
PARSE_IN_THREAD_MIN = 256 * 1024

__all__ = ["build_http_app", "read_body", "infer_response", "error_response"]
log = logging.getLogger(__name__)
Handler = Callable[[Request], Awaitable[Response]]


def _error(status: int, message: str, **headers: str) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def _json(value: Any, status: int = 200) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), status_code=status, media_type="application/json")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, at most `limit` bytes after inflating gzip/deflate (TooLarge, BadRequest otherwise)."""
    length = request.headers.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise BadRequest(f"Content-Length must be a number, got {length!r}")
        if int(length) > limit:
            raise TooLarge(f"request body of {int(length)} bytes exceeds the server's limit of {limit} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLarge(f"request body exceeds the server's limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in ("gzip", "deflate"):
        raise BadRequest(f"Content-Encoding {encoding!r} is not supported; use gzip, deflate or none")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | (16 if encoding == "gzip" else 0))
    try:
        data = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"request body is not valid {encoding} data: {exc}") from None
    if len(data) > limit or inflater.unconsumed_tail:
        raise TooLarge(f"decompressed request body exceeds the server's limit of {limit} bytes")
    if not inflater.eof:
        raise BadRequest(f"request body is truncated {encoding} data")
    return data


def infer_response(response: InferResponse, accept_encoding: str = "") -> Response:
    """The HTTP response for an inference result: JSON, or JSON then binary tensors; compressed if accepted."""
    chunks, header_length = encode_infer_response(response)
    payload = b"".join(chunks)
    headers = {}
    if header_length is not None:
        headers["Inference-Header-Content-Length"] = str(header_length)
    if "gzip" in accept_encoding:
        payload, headers["Content-Encoding"] = gzip.compress(payload, compresslevel=1), "gzip"
    elif "deflate" in accept_encoding:
        payload, headers["Content-Encoding"] = zlib.compress(payload, 1), "deflate"
    media = "application/json" if header_length is None else "application/octet-stream"
    return Response(payload, headers=headers, media_type=media)


def error_response(exc: BaseException) -> Response:
    """The v2 error body for an exception, with its status (a too-large body also closes the connection)."""
    if isinstance(exc, TooLarge):  # the body may be unread: close the connection rather than drain it
        return _error(exc.status, str(exc), connection="close")
    if isinstance(exc, QueueFull):  # overloaded: tell the client when to come back
        return _error(exc.status, str(exc), **{"retry-after": str(exc.retry_after)})
    return _error(status_of(exc)[0], str(exc))


def _peer(request: Request) -> str | None:
    """The client's address as the server sees it (None over a Unix-domain socket)."""
    client = request.client
    return None if client is None else client.host


def build_http_app(ctx: ServerContext, restricted: RestrictedApis | None = None) -> Starlette:
    """The v2 app; `restricted` names the endpoint categories that need a header key/value (403 without)."""
    limit = ctx.max_request_bytes

    def endpoint(fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except UnirtError as exc:
                return error_response(exc)
            except (ClientDisconnect, ClientGone):  # the client went away mid-request: nobody to answer
                log.debug("client disconnected during %s %s", request.method, request.url.path)
                return Response(status_code=499)
            except Exception as exc:  # a bug must still answer the client
                log.exception("internal error on %s %s", request.method, request.url.path)
                return _error(500, f"internal error: {type(exc).__name__}: {exc}")

        return wrapped

    def names(request: Request) -> tuple[str, str]:
        return request.path_params.get("name", ""), request.path_params.get("version", "")

    @endpoint
    async def live(request: Request) -> Response:
        return Response(status_code=200 if ctx.live else 503)

    @endpoint
    async def ready(request: Request) -> Response:
        return Response(status_code=200 if ctx.is_ready() else 503)

    @endpoint
    async def server_metadata(request: Request) -> Response:
        return _json(ctx.server_metadata())

    @endpoint
    async def model_metadata(request: Request) -> Response:
        return _json(ctx.model_metadata(*names(request)))

    @endpoint
    async def model_ready(request: Request) -> Response:
        name, version = names(request)
        if ctx.manager.is_ready(name, version):
            return Response(status_code=200)
        ctx.manager.check_ready(name, version)  # raises the reason (unknown model: 404, not ready: 503)
        return Response(status_code=400)  # pragma: no cover - get() raised

    @endpoint
    async def model_config(request: Request) -> Response:
        return _json(config_to_dict(ctx.model_config(*names(request))))

    @endpoint
    async def statistics(request: Request) -> Response:
        return _json(ctx.statistics(*names(request)))

    @endpoint
    async def infer(request: Request) -> Response:
        name, version = names(request)
        body = await read_body(request, limit)
        header_length = request.headers.get("inference-header-content-length")
        if header_length is None and len(body) >= PARSE_IN_THREAD_MIN:  # JSON tensors: most of it runs without the GIL
            infer_request = await run_in_threadpool(parse_infer_request, body, None, name, version)
        else:
            infer_request = parse_infer_request(body, header_length, name, version)
        response = await cancel_on_disconnect(request.receive, ctx.service.infer(infer_request))
        return infer_response(response, request.headers.get("accept-encoding", ""))

    @endpoint
    async def repository_index(request: Request) -> Response:
        doc = parse_json_object(await read_body(request, limit), "repository index request")
        ready_only = doc.get("ready", False)
        if not isinstance(ready_only, bool):
            raise BadRequest("repository index request: 'ready' must be true or false")
        return _json(ctx.manager.index(ready_only))

    @endpoint
    async def repository_load(request: Request) -> Response:
        name = request.path_params["name"]
        doc = parse_json_object(await read_body(request, limit), "load request")
        params = doc.get("parameters", {})
        if not isinstance(params, dict):
            raise BadRequest("load request: parameters must be a JSON object")
        config = params.get("config")
        if config is not None and not isinstance(config, str):
            raise BadRequest("load request: parameters.config must be a JSON string holding the model config")
        files = {}
        for key, value in params.items():
            if key.startswith("file:"):
                try:
                    files[key] = base64.b64decode(value, validate=True)
                except (ValueError, TypeError):
                    raise BadRequest(f"load request: {key} must be base64") from None
        await run_in_threadpool(ctx.manager.load, name, config, files or None)
        return Response(status_code=200)

    @endpoint
    async def repository_unload(request: Request) -> Response:
        name = request.path_params["name"]
        parse_json_object(await read_body(request, limit), "unload request")
        await run_in_threadpool(ctx.manager.unload, name)
        return Response(status_code=200)

    @endpoint
    async def shm_status(request: Request) -> Response:
        return _json(ctx.shm_status(request.path_params.get("region", "")))

    @endpoint
    async def shm_register(request: Request) -> Response:
        check_local_peer(_peer(request), "shared memory registration")
        doc = parse_json_object(await read_body(request, limit), "shared memory register request")
        for key in ("key", "byte_size"):
            if key not in doc:
                raise BadRequest(f"shared memory register request: {key!r} is required")
        await run_in_threadpool(
            ctx.shm.register, request.path_params["region"], doc["key"], doc.get("offset", 0), doc["byte_size"]
        )
        return Response(status_code=200)

    @endpoint
    async def shm_unregister(request: Request) -> Response:
        check_local_peer(_peer(request), "shared memory unregistration")
        ctx.shm.unregister(request.path_params.get("region") or None)
        return Response(status_code=200)

    @endpoint
    async def cuda_shm(request: Request) -> Response:
        raise Unsupported("CUDA shared memory is not supported by unirt serve; use system shared memory")

    @endpoint
    async def not_supported(request: Request) -> Response:
        raise Unsupported(f"{request.url.path} is not supported by unirt serve")

    async def not_found(request: Request, exc: Exception) -> Response:
        return _error(404, f"no such endpoint: {request.method} {request.url.path}")

    async def method_not_allowed(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 405)
        if status == 404:
            return await not_found(request, exc)
        return _error(status, f"{request.method} is not allowed on {request.url.path}")

    def route(path: str, handler: Handler, category: str, methods: list[str]) -> Route:
        if restricted is None or category not in restricted.by_category:
            return Route(path, handler, methods=methods)  # open: no per-request check at all

        async def guarded(request: Request) -> Response:
            try:
                restricted.check(category, request.headers.get)
            except UnirtError as exc:
                return error_response(exc)
            return await handler(request)

        return Route(path, guarded, methods=methods)

    model = "/v2/models/{name}"
    version = "/v2/models/{name}/versions/{version}"
    get, post, both = ["GET"], ["POST"], ["GET", "POST"]
    routes = [
        route("/v2/health/live", live, "health", get),
        route("/v2/health/ready", ready, "health", get),
        route("/v2", server_metadata, "metadata", get),
        route("/v2/models/stats", statistics, "statistics", get),
        route("/v2/repository/index", repository_index, "model-repository", post),
        route("/v2/repository/models/{name}/load", repository_load, "model-repository", post),
        route("/v2/repository/models/{name}/unload", repository_unload, "model-repository", post),
        route("/v2/systemsharedmemory/status", shm_status, "shared-memory", get),
        route("/v2/systemsharedmemory/region/{region}/status", shm_status, "shared-memory", get),
        route("/v2/systemsharedmemory/region/{region}/register", shm_register, "shared-memory", post),
        route("/v2/systemsharedmemory/unregister", shm_unregister, "shared-memory", post),
        route("/v2/systemsharedmemory/region/{region}/unregister", shm_unregister, "shared-memory", post),
        route("/v2/cudasharedmemory/{rest:path}", cuda_shm, "shared-memory", both),
        route("/v2/trace/setting", not_supported, "trace", both),
        route("/v2/logging", not_supported, "logging", both),
    ]
    for base in (model, version):
        routes += [
            route(base, model_metadata, "metadata", get),
            route(base + "/ready", model_ready, "health", get),
            route(base + "/config", model_config, "model-config", get),
            route(base + "/stats", statistics, "statistics", get),
            route(base + "/infer", infer, "inference", post),
            route(base + "/trace/setting", not_supported, "trace", both),
        ]
    return Starlette(routes=routes, exception_handlers={404: not_found, 405: method_not_allowed})
