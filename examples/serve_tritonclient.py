"""`unirt serve` with a Triton client: start the server on a model, talk to it with `tritonclient` over HTTP and
gRPC, check the answers against the model run in-process, stop the server.

    python examples/serve_tritonclient.py                      # starts `unirt serve` on examples/models
    python examples/serve_tritonclient.py --url 127.0.0.1:8000 --grpc-url 127.0.0.1:8001   # an existing server

Needs the serve extra: pip install '.[serve]' from unirt's source checkout (it brings tritonclient).
"""

from __future__ import annotations

import argparse
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

import unirt

MODEL = Path(__file__).resolve().parent / "models" / "classifier.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: Path) -> tuple[subprocess.Popen, str, str]:
    """`unirt serve MODEL` on free loopback ports; returns when it is ready (or raises with its output)."""
    http_port, grpc_port, metrics_port = free_port(), free_port(), free_port()
    log = tempfile.TemporaryFile()  # the server's output, shown if it fails to start
    cli = Path(sys.executable).with_name("unirt")  # the command installed beside this Python
    server = subprocess.Popen(
        [
            str(cli) if cli.exists() else "unirt",
            "serve",
            str(model),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--metrics-port",
            str(metrics_port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"127.0.0.1:{http_port}"
    client = httpclient.InferenceServerClient(url)
    deadline = time.monotonic() + 60
    while True:
        try:
            if client.is_server_ready():
                break
        except Exception:  # not listening yet
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            server.wait()
            log.seek(0)
            raise RuntimeError(f"unirt serve did not become ready:\n{log.read().decode(errors='replace')}")
        time.sleep(0.1)
    client.close()
    return server, url, f"127.0.0.1:{grpc_port}"


def main(url: str | None = None, grpc_url: str | None = None) -> None:
    server = None
    if url is None:
        server, url, grpc_url = start_server(MODEL)
        print(f"started: unirt serve {MODEL.name} (HTTP {url}, gRPC {grpc_url})")
    try:
        x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
        with unirt.Session(MODEL) as sess:
            expected = sess.run(x)["probs"]

        http = httpclient.InferenceServerClient(url)
        meta = http.get_model_metadata("classifier")
        print(f"model {meta['name']}: inputs {meta['inputs']}, outputs {[o['name'] for o in meta['outputs']]}")
        inp = httpclient.InferInput("x", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)  # sent as binary tensor data
        result = http.infer("classifier", [inp], outputs=[httpclient.InferRequestedOutput("probs")])
        np.testing.assert_allclose(result.as_numpy("probs"), expected, rtol=1e-5)
        print("HTTP probs:\n", np.array2string(result.as_numpy("probs"), precision=4))
        http.close()

        if grpc_url is not None:
            grpc = grpcclient.InferenceServerClient(grpc_url)
            inp = grpcclient.InferInput("x", list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            result = grpc.infer("classifier", [inp])
            np.testing.assert_allclose(result.as_numpy("probs"), expected, rtol=1e-5)
            print("gRPC probs equal HTTP's and the in-process Session's")
            stats = grpc.get_inference_statistics("classifier", as_json=True)["model_stats"][0]
            print(f"server statistics: {stats['inference_count']} inferences in {stats['execution_count']} runs")
            grpc.close()
    finally:
        if server is not None:
            server.send_signal(signal.SIGINT)  # finishes in-flight requests, then exits
            server.wait(30)
            print(f"stopped unirt serve (exit code {server.returncode})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="HTTP address of a running server (default: start one)")
    parser.add_argument("--grpc-url", help="its gRPC address")
    args = parser.parse_args()
    main(args.url, args.grpc_url)
