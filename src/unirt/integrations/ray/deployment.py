"""The Ray Serve deployment: one unirt Session per replica, concurrent requests merged by `@serve.batch` into
`Session.run_many`, answered to Python handles (numpy in, numpy out) and to HTTP (the v2 protocol).

    serve run unirt.integrations.ray:app model=model.onnx threads=2 num_replicas=2

    from unirt.integrations.ray import build
    handle = serve.run(build("model.onnx", threads=2, num_replicas=2))
    outputs = handle.remote({"x": x}).result()          # {"y": ndarray}
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray import serve
from ray.serve import Application
from starlette.requests import Request

from ...errors import InputError, SessionClosedError
from .http import V2HttpFrontEnd
from .options import ReplicaOptions, app_flag, checked_model, deployment_options, live_options, parse_app_args
from .replica import Failed, Replica

__all__ = ["UnirtDeployment", "build", "app"]
log = logging.getLogger(__name__)


@serve.deployment
class UnirtDeployment:
    """A replica serving one model. Call it through a handle with what `Session.run` takes (a dict of arrays, or
    one array for a single-input model) and optional `output_names`; HTTP requests get the v2 protocol.

    The deployment's `user_config` tunes request merging: `{"max_batch_size": 16, "batch_wait_timeout_s": 0.01}`
    (other keys are refused). Ray hands it to `reconfigure` when a replica starts and, on a lightweight update (a
    Serve config file whose only change is user_config), to the running replicas. A larger `max_batch_size` than
    the replica's `max_ongoing_requests` admits cannot fill: raise that too (by default it follows the build's
    `user_config` or `max_batch_size`)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        opts = ReplicaOptions(**options)
        try:
            replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # only for the logs and stats; absent outside a Serve replica
            replica_id = ""
        self._replica = Replica(opts, replica_id)
        self._merged.set_max_batch_size(opts.max_batch_size)
        self._merged.set_batch_wait_timeout_s(opts.batch_wait_timeout_s)
        self._http = V2HttpFrontEnd(self._replica, self._run)
        self._output_names = [o.name for o in self._replica.session.outputs]

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _merged(self, requests: list[Any]) -> list[dict[str, np.ndarray] | Failed]:
        # In a worker thread: the replica's event loop keeps queueing the next batch while this one runs.
        return await asyncio.to_thread(self._replica.run_batch, requests)

    async def _run(self, feeds: Any) -> dict[str, np.ndarray]:
        result = await self._merged(feeds)
        if isinstance(result, Failed):
            raise result.error
        return result

    def reconfigure(self, user_config: Any) -> None:
        """Ray calls this with the deployment's `user_config` when a replica starts and whenever it changes."""
        live = live_options(user_config)
        if "max_batch_size" in live:
            self._merged.set_max_batch_size(live["max_batch_size"])
        if "batch_wait_timeout_s" in live:
            self._merged.set_batch_wait_timeout_s(live["batch_wait_timeout_s"])
        if live:
            log.info("replica %s: batching retuned to %s", self._replica.replica_id or "?", live)

    async def infer(self, feeds: Any, output_names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Run one request (merged with concurrent ones); the outputs asked for, all by default."""
        if output_names is None:
            return await self._run(feeds)
        if isinstance(output_names, str):
            names = [output_names]
        elif isinstance(output_names, (list, tuple)) and all(isinstance(n, str) for n in output_names):
            names = list(output_names)
        else:
            raise InputError(
                f"output_names must be an output name or a list of output names, got "
                f"{output_names!r}; the model's outputs are: {', '.join(self._output_names)}"
            )
        unknown = [n for n in names if n not in self._output_names]
        if unknown:
            raise InputError(
                f"unknown output(s) {', '.join(map(repr, unknown))}; the model's outputs are: "
                f"{', '.join(self._output_names)}"
            )
        outputs = await self._run(feeds)
        return {n: outputs[n] for n in names}

    async def __call__(self, request: Any, output_names: Sequence[str] | None = None) -> Any:
        if isinstance(request, Request):
            return await self._http(request)
        return await self.infer(request, output_names)

    def stats(self) -> dict[str, Any]:
        """This replica's id, pid, backend and batching figures (see `Replica.stats`)."""
        return self._replica.stats()

    def check_health(self) -> None:
        if self._replica.session.closed:
            raise SessionClosedError("the replica's session is closed")

    def __del__(self) -> None:
        replica = getattr(self, "_replica", None)
        if replica is not None:
            replica.close()


def build(
    model: str,
    *,
    name: str = "",
    backend: str = "auto",
    device: str = "cpu",
    threads: int = 1,
    precision: str = "fp32",
    backend_options: Mapping[str, Any] | None = None,
    max_batch: int | None = None,
    batched: bool | None = None,
    max_batch_size: int = 8,
    batch_wait_timeout_s: float = 0.005,
    max_request_bytes: int = 128 * 1024 * 1024,
    check_model: bool = True,
    **ray_options: Any,
) -> Application:
    """A Serve application serving `model`: pass it to `serve.run`. Session options as `unirt.Session` takes
    them; Ray Serve's deployment options (`num_replicas`, `autoscaling_config`, `max_ongoing_requests`,
    `ray_actor_options`, `user_config`, ...: what the installed Ray's `Deployment.options` takes) pass through.
    Replicas reserve `threads` CPUs and, with `device="cuda"`, one GPU.

    The model file is opened here (a missing or damaged file is a `ModelLoadError` now, not replicas failing to
    start later) and its absolute path handed to the replicas. On a multi-node cluster where only the worker
    nodes hold the file, pass `check_model=False`: the path then goes to the replicas as given."""
    options = ReplicaOptions(
        model=str(model),
        name=name,
        backend=backend,
        device=device,
        threads=threads,
        precision=precision,
        backend_options=dict(backend_options or {}),
        max_batch=max_batch,
        batched=batched,
        max_batch_size=max_batch_size,
        batch_wait_timeout_s=batch_wait_timeout_s,
        max_request_bytes=max_request_bytes,
    )
    ray_options = deployment_options(options, ray_options)
    return _application(checked_model(options, check_model), ray_options)


def app(args: dict[str, Any]) -> Application:
    """The application builder for Ray's CLI: `serve run unirt.integrations.ray:app model=m.onnx threads=2
    num_replicas=2 backend_options='{"...": ...}'` (or a Serve config file's `args`); `check_model=false` as in
    `build`."""
    check = True
    if isinstance(args, Mapping):
        check = app_flag(args)
        args = {k: v for k, v in args.items() if k != "check_model"}
    options, ray_options = parse_app_args(args)
    return _application(checked_model(options, check), ray_options)


def _application(options: ReplicaOptions, ray_options: dict[str, Any]) -> Application:
    log.info("unirt Ray Serve application: %s with %s", options, ray_options)
    return UnirtDeployment.options(**ray_options).bind(options.to_dict())
