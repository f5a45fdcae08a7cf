"""The server's lifecycle: bind the HTTP, gRPC and metrics ports, load the models, serve, and shut down
gracefully (stop accepting, finish in-flight requests, drain the model queues, close the Sessions).

`InferenceServer` runs on an asyncio loop (uvicorn for HTTP and metrics, grpc.aio for gRPC, one loop for all);
`InferenceServer.run()` is the blocking entry point of `unirt serve` (SIGINT/SIGTERM stop it gracefully, a second
signal stops it at once); `ServerThread` runs one in a background thread (tests, benchmarks, embedding).

On a network: TLS for every port from PEM files (`tls_cert`, `tls_key`; `tls_ca` + `tls_client_auth` to require
client certificates signed by that CA), Triton-style restricted APIs per protocol (`restricted.py`), and
`exposure()` says what a client reaching the ports can do without a key.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import signal
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import uvicorn
from prometheus_client import make_asgi_app

from ..errors import UnsupportedOptionError
from .context import ServerContext
from .errors import NotFound
from .grpc_servicer import add_servicer
from .http_app import build_http_app
from .manager import ModelManager
from .metrics import make_registry
from .repository import DirectoryRepository, Repository, SingleModelRepository
from .restricted import RestrictedApis

__all__ = ["ServeOptions", "InferenceServer", "ServerThread", "is_loopback_host"]
log = logging.getLogger(__name__)


@dataclass
class ServeOptions:
    """What `unirt serve` takes on its command line. Port 0 picks a free port; None disables that endpoint."""

    model_repository: str | Path | None = None
    model: str | Path | None = None  # the single-model shortcut: one model file
    model_config: str | Path | None = None  # config.pbtxt for the single-model shortcut
    model_name: str | None = None
    host: str = "127.0.0.1"
    http_port: int | None = 8000
    grpc_port: int | None = 8001
    metrics_port: int | None = 8002
    model_control_mode: str = "none"  # "none": load everything at start; "explicit": load/unload requests
    load_models: list[str] = field(default_factory=list)
    default_max_batch_size: int = 4
    default_threads: int | None = None  # CPU threads per model instance where its config sets none
    # TLS on the HTTP, gRPC and metrics ports (PEM files); tls_ca: the CA client certificates must chain to
    tls_cert: str | Path | None = None
    tls_key: str | Path | None = None
    tls_ca: str | Path | None = None
    tls_client_auth: bool = False  # require a client certificate (needs tls_ca)
    # Triton's '<category>[,<category>...]:<key>=<value>' groups, per protocol
    http_restricted_api: list[str] = field(default_factory=list)
    grpc_restricted_api: list[str] = field(default_factory=list)
    max_request_bytes: int = 128 * 1024 * 1024
    drain_timeout: float = 30.0
    strict_readiness: bool = True
    isolate: str = "auto"  # run model instances in child processes: auto (per backend), always, never
    max_queue_size: int | None = None  # queue bound where a config sets none (None: per model default, 0: none)

    def repository(self) -> Repository:
        if (self.model_repository is None) == (self.model is None):
            raise ValueError("give exactly one of a model repository or a model file")
        if self.model is not None:
            return SingleModelRepository(self.model, self.model_name, self.model_config)
        return DirectoryRepository(self.model_repository)  # type: ignore[arg-type]


def _read(path: str | Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise UnsupportedOptionError(f"{what} {str(path)!r}: cannot read it: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class _Tls:
    """TLS files, read and checked once at start: a wrong file is a clear error, not a handshake failure later."""

    cert: str
    key: str
    ca: str | None
    client_auth: bool
    cert_pem: bytes
    key_pem: bytes
    ca_pem: bytes | None

    @classmethod
    def of(cls, o: ServeOptions) -> _Tls | None:
        if o.tls_cert is None and o.tls_key is None:
            if o.tls_ca is not None or o.tls_client_auth:
                raise UnsupportedOptionError("--tls-ca and --tls-client-auth need TLS: give --tls-cert and --tls-key")
            return None
        if o.tls_cert is None or o.tls_key is None:
            raise UnsupportedOptionError(
                "TLS needs both --tls-cert (the server's certificate chain, PEM) and --tls-key (its private key, PEM)"
            )
        if o.tls_client_auth and o.tls_ca is None:
            raise UnsupportedOptionError(
                "--tls-client-auth needs --tls-ca: the CA (PEM) client certificates must be signed by"
            )
        cert, key = _read(o.tls_cert, "--tls-cert"), _read(o.tls_key, "--tls-key")
        ca = _read(o.tls_ca, "--tls-ca") if o.tls_ca is not None else None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(str(o.tls_cert), str(o.tls_key))
        except (ssl.SSLError, ValueError) as exc:
            raise UnsupportedOptionError(
                f"--tls-cert {str(o.tls_cert)!r} / --tls-key {str(o.tls_key)!r}: not a PEM "
                f"certificate and its matching private key ({exc})"
            ) from None
        if o.tls_ca is not None:
            try:
                context.load_verify_locations(str(o.tls_ca))
            except (ssl.SSLError, ValueError) as exc:
                raise UnsupportedOptionError(f"--tls-ca {str(o.tls_ca)!r}: not PEM CA certificates ({exc})") from None
        return cls(
            str(o.tls_cert),
            str(o.tls_key),
            None if o.tls_ca is None else str(o.tls_ca),
            bool(o.tls_client_auth),
            cert,
            key,
            ca,
        )

    def uvicorn_kwargs(self) -> dict[str, Any]:
        reqs = ssl.CERT_REQUIRED if self.client_auth else ssl.CERT_OPTIONAL if self.ca else ssl.CERT_NONE
        return {"ssl_certfile": self.cert, "ssl_keyfile": self.key, "ssl_ca_certs": self.ca, "ssl_cert_reqs": reqs}

    def grpc_credentials(self) -> Any:
        return grpc.ssl_server_credentials(
            [(self.key_pem, self.cert_pem)], root_certificates=self.ca_pem, require_client_auth=self.client_auth
        )

    def describe(self) -> str:
        if self.client_auth:
            return "TLS on, client certificates required"
        return "TLS on, client certificates verified when given" if self.ca else "TLS on"


def is_loopback_host(host: str) -> bool:
    """True when binding `host` serves this machine only (127.x, ::1, localhost); 0.0.0.0, :: and real addresses
    serve the network."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0].split("%")[0]).is_loopback for i in infos)


class _Uvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: the InferenceServer owns shutdown and its order."""

    @contextlib.contextmanager
    def capture_signals(self):  # uvicorn: no signal handlers in a thread
        yield


def _bind(host: str, port: int) -> socket.socket:
    family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(addr)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(False)
    return sock


def _http_impl() -> str:
    try:
        import httptools  # noqa: F401 - probed: uvicorn uses it when importable
    except ImportError:
        return "h11"
    return "httptools"


class InferenceServer:
    """A KServe v2 inference server over one model repository."""

    def __init__(self, options: ServeOptions) -> None:
        self.options = options
        self.tls = _Tls.of(options)  # checked first: a wrong file or flag fails before anything is read
        self.restricted = {
            "http": RestrictedApis(options.http_restricted_api, "http"),
            "grpc": RestrictedApis(options.grpc_restricted_api, "grpc"),
        }
        repository = options.repository()
        explicit = options.model_control_mode == "explicit"
        if options.model_control_mode not in ("none", "explicit"):
            raise ValueError(f"model control mode must be 'none' or 'explicit', got {options.model_control_mode!r}")
        if options.load_models and not explicit:
            raise UnsupportedOptionError(
                "--load-model needs --model-control-mode=explicit (without it every model in the repository is loaded)"
            )
        if explicit and "*" not in options.load_models:
            known = set(repository.names())
            missing = [n for n in options.load_models if n not in known]
            if missing:  # as Triton: a model named to load at start that is not there stops the server
                raise NotFound(
                    f"--load-model {', '.join(map(repr, missing))}: no such model in the repository; "
                    f"its models are: {', '.join(sorted(known)) or 'none'}"
                )
        self.manager = ModelManager(
            repository,
            explicit=explicit,
            default_max_batch_size=options.default_max_batch_size,
            drain_timeout=options.drain_timeout,
            default_threads=options.default_threads,
            isolate=options.isolate,
            max_queue_size=options.max_queue_size,
        )
        self.ctx = ServerContext(self.manager, max_request_bytes=options.max_request_bytes)
        if not options.strict_readiness:
            self.ctx.is_ready = lambda: self.ctx.ready  # type: ignore[method-assign]
        self.ports: dict[str, int] = {}
        self._http: _Uvicorn | None = None
        self._metrics: _Uvicorn | None = None
        self._grpc: Any = None
        self._tasks: list[asyncio.Task] = []
        self._http_task: asyncio.Task | None = None
        self._stopped = False

    def _uvicorn(self, app: Any, sock: socket.socket, graceful: float) -> tuple[_Uvicorn, asyncio.Task]:
        tls = self.tls.uvicorn_kwargs() if self.tls is not None else {}
        config = uvicorn.Config(
            app,
            log_config=None,
            log_level="warning",
            access_log=False,
            lifespan="off",
            http=_http_impl(),
            timeout_graceful_shutdown=graceful,
            timeout_keep_alive=30,
            **tls,
        )
        server = _Uvicorn(config)
        return server, asyncio.ensure_future(server.serve(sockets=[sock]))

    async def start(self, load: bool = True) -> None:
        """Bind every endpoint, then load the models (the server answers health checks while they load)."""
        o = self.options
        sockets = {}
        try:
            for name, port in (("http", o.http_port), ("metrics", o.metrics_port)):
                if port is not None:
                    sockets[name] = _bind(o.host, port)
                    self.ports[name] = sockets[name].getsockname()[1]
        except OSError:
            for sock in sockets.values():
                sock.close()
            raise
        if o.grpc_port is not None:
            limit = o.max_request_bytes
            self._grpc = grpc.aio.server(
                options=[
                    ("grpc.max_receive_message_length", limit),
                    ("grpc.max_send_message_length", 2**31 - 1),
                    ("grpc.so_reuseport", 0),
                ]
            )
            add_servicer(self._grpc, self.ctx, self.restricted["grpc"])
            host = f"[{o.host}]" if ":" in o.host else o.host
            if self.tls is not None:
                port = self._grpc.add_secure_port(f"{host}:{o.grpc_port}", self.tls.grpc_credentials())
            else:
                port = self._grpc.add_insecure_port(f"{host}:{o.grpc_port}")
            if not port:
                for sock in sockets.values():
                    sock.close()
                raise OSError(f"cannot bind the gRPC port {o.host}:{o.grpc_port}")
            self.ports["grpc"] = port
            await self._grpc.start()
        if "http" in sockets:
            self._http, self._http_task = self._uvicorn(
                build_http_app(self.ctx, self.restricted["http"]), sockets["http"], o.drain_timeout
            )
            self._tasks.append(self._http_task)
        if "metrics" in sockets:
            self._metrics, task = self._uvicorn(make_asgi_app(make_registry(self.manager)), sockets["metrics"], 1.0)
            self._tasks.append(task)
        for server in (self._http, self._metrics):
            while server is not None and not server.started:
                if any(t.done() for t in self._tasks):
                    for t in self._tasks:
                        if t.done() and t.exception():
                            raise t.exception()  # type: ignore[misc]
                await asyncio.sleep(0.005)
        if load:
            await self.load_models()

    def exposure(self) -> list[str]:
        """What a client that reaches the ports can do: per port, TLS or not and which endpoint categories answer
        without a key. `unirt serve` prints it when bound to a non-loopback address."""
        o = self.options
        tls = self.tls.describe() if self.tls is not None else "TLS off: plain text, no client authentication"
        where = "this machine only" if is_loopback_host(o.host) else "the network"
        lines = [f"listening on {o.host} (reachable from {where}); {tls}"]
        for protocol in ("http", "grpc"):
            if protocol not in self.ports:
                continue
            restricted = self.restricted[protocol]
            opened = restricted.open_categories()
            line = f"{protocol} port {self.ports[protocol]}: open without a key: {', '.join(opened) or 'nothing'}"
            if restricted:
                line += f"; restricted: {restricted.describe()}"
            lines.append(line)
        if "metrics" in self.ports:
            lines.append(f"metrics port {self.ports['metrics']}: Prometheus metrics open to any client that reaches it")
        lines.append("shared-memory registration: accepted from loopback / local sockets only")
        return lines

    async def load_models(self) -> None:
        o = self.options
        if o.model_control_mode == "explicit":
            names = None if "*" in o.load_models else o.load_models
            if names is None or names:
                await asyncio.to_thread(self.manager.load_all, names)
        else:
            await asyncio.to_thread(self.manager.load_all)
        self.ctx.ready = True

    async def stop(self) -> None:
        """Graceful: not ready, stop accepting, finish in-flight requests, drain queues, close everything."""
        if self._stopped:
            return
        self._stopped = True
        self.ctx.ready = False
        grace = self.options.drain_timeout
        waits = []
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            waits.append(self._grpc.stop(grace))
        if self._http_task is not None:
            waits.append(self._http_task)
        await asyncio.gather(*waits, return_exceptions=True)
        await asyncio.to_thread(self.manager.close)
        self.ctx.shm.close()
        if self._metrics is not None:
            self._metrics.should_exit = True
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.ctx.live = False

    def run(self, on_started: Callable[[InferenceServer], None] | None = None) -> int:
        """Serve until SIGINT or SIGTERM, then shut down gracefully. Blocking; for the command line."""

        async def main() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()

            def first_signal() -> None:
                log.warning("shutting down: finishing in-flight requests (signal again to stop at once)")
                stop.set()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, lambda: os._exit(130))

            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, first_signal)
            try:
                await self.start(load=False)
                if on_started is not None:
                    on_started(self)
                loader = asyncio.ensure_future(self.load_models())
                await stop.wait()
                if not loader.done():
                    await loader
            finally:
                await self.stop()

        asyncio.run(main())
        return 0


class ServerThread:
    """An InferenceServer on its own event loop in a background thread: `start()` returns when it is serving
    (models loaded), `stop()` shuts it down gracefully. Also a context manager."""

    def __init__(self, options: ServeOptions) -> None:
        self.server = InferenceServer(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="unirt-serve", daemon=True)

    @property
    def ports(self) -> dict[str, int]:
        return self.server.ports

    def _call(self, coro: Any, timeout: float | None) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def start(self, timeout: float | None = 120.0) -> ServerThread:
        self._thread.start()
        try:
            self._call(self.server.start(), timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self, timeout: float | None = 60.0) -> None:
        if not self._thread.is_alive():
            return
        try:
            self._call(self.server.stop(), timeout)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)
            if not self._thread.is_alive():
                self._loop.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
