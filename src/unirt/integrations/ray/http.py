"""The replica's HTTP front end: the KServe v2 routes for its one model, with unirt serve's own codec.

Ray Serve's proxy hands each HTTP request to the replica as a Starlette `Request`. The body is read, parsed,
checked and answered by the same functions `unirt serve` uses (`unirt.serve.http_app.read_body`, `http_codec`,
`inference.prepare_request` / `build_response`), so a v2 client such as `tritonclient.http` gets the same bodies
from either. Only the transport differs: no shared memory (replicas may sit on other machines), no repository API.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from ... import __version__
from ...errors import UnirtError
from ...serve.config import config_to_dict
from ...serve.context import model_metadata
from ...serve.errors import NotFound, Unsupported
from ...serve.http_app import error_response, infer_response, read_body
from ...serve.http_codec import parse_infer_request
from ...serve.inference import build_response, prepare_request
from .replica import Replica

__all__ = ["V2HttpFrontEnd", "EXTENSIONS"]
log = logging.getLogger(__name__)

EXTENSIONS = ["classification", "binary_tensor_data", "model_configuration", "parameters"]
_MODEL = re.compile(r"/v2/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?P<rest>/[a-z]+)?/?")
Infer = Callable[[dict[str, np.ndarray]], Awaitable[dict[str, np.ndarray]]]


def _json(value: Any) -> Response:
    return Response(json.dumps(value, separators=(",", ":")), media_type="application/json")


class V2HttpFrontEnd:
    """Answers the v2 health, metadata, config and infer routes for `replica`'s model; `infer` runs feeds
    through the replica's batching."""

    version = "1"

    def __init__(self, replica: Replica, infer: Infer) -> None:
        self.replica = replica
        self.infer = infer
        self.name = replica.options.name

    async def __call__(self, request: Request) -> Response:
        try:
            return await self._route(request)
        except UnirtError as exc:
            return error_response(exc)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as exc:  # a bug must still answer with the v2 error body
            log.exception("internal error on %s %s", request.method, request.url.path)
            return Response(
                json.dumps({"error": f"internal error: {type(exc).__name__}: {exc}"}),
                status_code=500,
                media_type="application/json",
            )

    async def _route(self, request: Request) -> Response:
        path = request.url.path
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :] or "/"
        method = request.method
        if path.rstrip("/") in ("/v2/health/live", "/v2/health/ready"):
            return self._only(method, "GET", path) or Response(status_code=200)
        if path.rstrip("/") == "/v2":
            return self._only(method, "GET", path) or _json(
                {"name": "unirt", "version": __version__, "extensions": EXTENSIONS}
            )
        match = _MODEL.fullmatch(path)
        if match is None:
            raise NotFound(f"no such endpoint: {method} {path}")
        self._check_model(match["name"], match["version"])
        rest = match["rest"] or ""
        if rest == "/infer":
            return self._only(method, "POST", path) or await self._infer(request)
        if rest in ("", "/ready", "/config"):
            wrong = self._only(method, "GET", path)
            if wrong:
                return wrong
            if rest == "/ready":
                return Response(status_code=200)
            spec = self.replica.spec
            return _json(config_to_dict(spec.config) if rest == "/config" else model_metadata(spec, [self.version]))
        if rest in ("/stats", "/trace"):
            raise Unsupported(f"{path} is not supported by unirt's Ray Serve deployment")
        raise NotFound(f"no such endpoint: {method} {path}")

    @staticmethod
    def _only(method: str, allowed: str, path: str) -> Response | None:
        if method == allowed:
            return None
        return Response(
            json.dumps({"error": f"{method} is not allowed on {path}"}), status_code=405, media_type="application/json"
        )

    def _check_model(self, name: str, version: str | None) -> None:
        if name != self.name:
            raise NotFound(f"unknown model {name!r}; this deployment serves {self.name!r}")
        if version not in (None, "", self.version):
            raise NotFound(f"model {name!r} has no version {version!r}; it has version {self.version}")

    async def _infer(self, request: Request) -> Response:
        spec = self.replica.spec
        body = await read_body(request, self.replica.options.max_request_bytes)
        decoded = parse_infer_request(
            body, request.headers.get("inference-header-content-length"), self.name, self.version
        )
        feeds, _, wanted = prepare_request(spec, decoded)
        results = await self.infer(feeds)
        response = build_response(self.name, self.version, spec, decoded, wanted, results)
        return infer_response(response, request.headers.get("accept-encoding", ""))
