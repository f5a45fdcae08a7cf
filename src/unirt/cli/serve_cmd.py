"""`unirt serve`: a KServe v2 / Triton-protocol inference server over a model repository or one model file."""

from __future__ import annotations

import argparse
import sys

from ..errors import UnsupportedOptionError


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0..65535 (0 picks a free one), got {port}")
    return port


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "serve",
        help="serve models over the KServe v2 / Triton protocol (HTTP and gRPC)",
        description="Serve models to Triton / KServe v2 clients (tritonclient.http, "
        "tritonclient.grpc) over HTTP/REST and gRPC, with Prometheus metrics.",
    )
    p.add_argument("model", nargs="?", help="one model file to serve (the single-model shortcut)")
    p.add_argument(
        "--model-repository",
        metavar="DIR",
        help="Triton model repository: DIR/<model>/config.pbtxt and DIR/<model>/<version>/model.<ext>",
    )
    p.add_argument("--model-config", metavar="FILE", help="config.pbtxt for the single-model shortcut")
    p.add_argument("--model-name", help="name of the single model (default: the file's name without suffix)")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 serves the network)",
    )
    p.add_argument("--http-port", type=_port, default=8000, help="HTTP/REST port (default 8000; 0 = any free)")
    p.add_argument("--grpc-port", type=_port, default=8001, help="gRPC port (default 8001; 0 = any free)")
    p.add_argument("--metrics-port", type=_port, default=8002, help="Prometheus metrics port (default 8002)")
    p.add_argument("--allow-http", type=_bool, default=True, metavar="BOOL", help="serve HTTP/REST (default true)")
    p.add_argument("--allow-grpc", type=_bool, default=True, metavar="BOOL", help="serve gRPC (default true)")
    p.add_argument(
        "--allow-metrics", type=_bool, default=True, metavar="BOOL", help="serve Prometheus metrics (default true)"
    )
    p.add_argument(
        "--model-control-mode",
        choices=["none", "explicit"],
        default="none",
        help="none: load every model at start; explicit: only --load-model ones, then load/unload requests",
    )
    p.add_argument(
        "--load-model",
        action="append",
        default=[],
        metavar="NAME",
        help="with explicit control: a model to load at start (repeatable; '*' for all)",
    )
    p.add_argument(
        "--default-max-batch-size",
        type=int,
        default=4,
        metavar="N",
        help="max_batch_size given to models whose config is completed automatically and which can "
        "batch (default 4; 0 disables batching for them)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads per model instance where its config's parameters set none (default: the "
        "backend's; in a container, set it to the CPU limit)",
    )
    p.add_argument(
        "--max-request-size",
        type=int,
        default=128,
        metavar="MiB",
        help="largest request body or gRPC message accepted, in MiB (default 128)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on shutdown, how long in-flight requests may take to finish (default 30)",
    )
    p.add_argument(
        "--strict-readiness",
        type=_bool,
        default=True,
        metavar="BOOL",
        help="ready only when every model is loaded (default true, as Triton)",
    )
    p.add_argument(
        "--isolate",
        choices=["auto", "always", "never"],
        default="auto",
        help="run model instances in child processes, so that an engine crash fails only the requests "
        "it was running and the instance restarts: auto (default: the native engines ncnn, MNN, "
        'LiteRT; a config\'s parameters { key: "isolate" } decides for its model), always, never',
    )
    p.add_argument(
        "--max-queue-size",
        type=int,
        default=None,
        metavar="N",
        help="requests a model may hold waiting where its config sets no dynamic_batching "
        "default_queue_policy max_queue_size; over it requests get 503 / UNAVAILABLE (default: "
        "32 batches per instance, at least 64; 0: unbounded)",
    )
    p.set_defaults(handler=run)
    _add_network_flags(p)


def _add_network_flags(p: argparse.ArgumentParser) -> None:
    """A server on a network: TLS, restricted APIs (kept apart from the other flags)."""
    net = p.add_argument_group("network security", "TLS for every port, and Triton-style restricted APIs")
    net.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="serve HTTP, gRPC and metrics over TLS with this certificate (chain); needs --tls-key",
    )
    net.add_argument("--tls-key", metavar="PEM", help="the private key of --tls-cert")
    net.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="CA certificate(s) that client certificates must chain to (a client certificate given is then verified)",
    )
    net.add_argument(
        "--tls-client-auth", action="store_true", help="require a client certificate signed by --tls-ca (mutual TLS)"
    )
    net.add_argument(
        "--http-restricted-api",
        action="append",
        default=[],
        metavar="CATEGORIES:KEY=VALUE",
        help="answer the endpoints of CATEGORIES (comma-separated among health, metadata, inference, "
        "shared-memory, model-config, model-repository, statistics, trace, logging) only to "
        "requests with the HTTP header KEY: VALUE, 403 otherwise (repeatable, one key per "
        "category)",
    )
    net.add_argument(
        "--grpc-restricted-api",
        "--grpc-restricted-protocol",
        action="append",
        default=[],
        metavar="CATEGORIES:KEY=VALUE",
        help="the same for gRPC: the metadata key is triton-grpc-protocol-KEY (as Triton's "
        "--grpc-restricted-protocol); PERMISSION_DENIED otherwise",
    )


def run(args: argparse.Namespace) -> int:
    from .. import serve

    serve.require()
    from ..serve.server import InferenceServer, ServeOptions, is_loopback_host

    if (args.model is None) == (args.model_repository is None):
        raise UnsupportedOptionError("give either a model file (unirt serve model.onnx) or --model-repository DIR")
    if args.model_config and args.model is None:
        raise UnsupportedOptionError(
            "--model-config goes with a model file; a repository keeps config.pbtxt in each model's directory"
        )
    if args.max_request_size < 1 or args.default_max_batch_size < 0 or args.drain_timeout < 0:
        raise UnsupportedOptionError(
            "--max-request-size must be >= 1, --default-max-batch-size and --drain-timeout >= 0"
        )
    if args.max_queue_size is not None and args.max_queue_size < 0:
        raise UnsupportedOptionError(f"--max-queue-size must be >= 0 (0: unbounded), got {args.max_queue_size}")
    if args.threads is not None and args.threads < 1:
        raise UnsupportedOptionError(f"--threads must be >= 1, got {args.threads}")
    options = ServeOptions(
        model_repository=args.model_repository,
        model=args.model,
        model_config=args.model_config,
        model_name=args.model_name,
        host=args.host,
        http_port=args.http_port if args.allow_http else None,
        grpc_port=args.grpc_port if args.allow_grpc else None,
        metrics_port=args.metrics_port if args.allow_metrics else None,
        model_control_mode=args.model_control_mode,
        load_models=args.load_model,
        default_max_batch_size=args.default_max_batch_size,
        max_request_bytes=args.max_request_size * 1024 * 1024,
        default_threads=args.threads,
        drain_timeout=args.drain_timeout,
        strict_readiness=args.strict_readiness,
        isolate=args.isolate,
        max_queue_size=args.max_queue_size,
    )

    def started(server: InferenceServer) -> None:
        host = args.host if ":" not in args.host else f"[{args.host}]"
        for name, port in server.ports.items():
            print(f"unirt serve: {name} on {host}:{port}", flush=True)
        if not is_loopback_host(args.host):  # say what a client on the network can do
            for line in server.exposure():
                print(f"unirt serve: exposed: {line}", file=sys.stderr, flush=True)

    # a server on a network: TLS and restricted APIs
    options.tls_cert, options.tls_key, options.tls_ca = args.tls_cert, args.tls_key, args.tls_ca
    options.tls_client_auth = args.tls_client_auth
    options.http_restricted_api, options.grpc_restricted_api = args.http_restricted_api, args.grpc_restricted_api
    try:
        return InferenceServer(options).run(started)
    except OSError as exc:
        raise UnsupportedOptionError(f"cannot start the server: {exc}") from None
