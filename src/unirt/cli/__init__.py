"""The `unirt` command line: a thin layer over the public API, one module per command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .. import engine_logs
from ..errors import UnirtError
from . import (
    backends_cmd,
    bench_cmd,
    compare_cmd,
    convert_cmd,
    deploy_cmd,
    explain_cmd,
    info_cmd,
    optimize_cmd,
    quantize_cmd,
    run_cmd,
    serve_cmd,
)

COMMANDS = (
    backends_cmd,
    explain_cmd,
    run_cmd,
    info_cmd,
    bench_cmd,
    compare_cmd,
    optimize_cmd,
    quantize_cmd,
    convert_cmd,
    serve_cmd,
    deploy_cmd,
)


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__

    parser = argparse.ArgumentParser(
        prog="unirt", description="One API over ONNX Runtime, OpenVINO, TensorRT, TFLite, ncnn and MNN."
    )
    parser.add_argument("--version", action="version", version=f"unirt {__version__}")
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="log what unirt does, and let the engines' own log lines through (as UNIRT_ENGINE_LOGS=1)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, format="%(name)s: %(message)s")
    if not args.verbose:  # the engines' own log lines stay off the terminal unless asked for (-v, UNIRT_ENGINE_LOGS=1)
        engine_logs.quiet()
    try:
        code = int(args.handler(args) or 0)
        sys.stdout.flush()  # inside the try: a closed pipe shows here, not as a traceback at exit
        return code
    except BrokenPipeError:  # `unirt ... | head` closed the pipe: stop quietly, as a SIGPIPE'd tool would
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141
    except UnirtError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2  # like argparse's usage errors; 1 is left for a command's own "failed" (compare out of tolerance)
    except OSError as exc:  # a file the command reads or writes (e.g. --json PATH in a read-only place)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
