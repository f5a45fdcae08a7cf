"""unirt on Ray Serve: two replicas of a model, each with its own Session; concurrent requests merged into
`Session.run_many` batches; called from Python (numpy in, numpy out) and over HTTP with a Triton client.

    python examples/ray_serve.py                # starts a local Ray instance (2 CPUs) and stops it at the end
    RAY_ADDRESS=auto python examples/ray_serve.py   # or deploys on a running Ray cluster

The same application from Ray's own command line, started outside the source tree's root (Ray puts the working
directory on sys.path, where ./unirt has no compiled core):

    cd examples && serve run unirt.integrations.ray:app model=models/classifier.onnx num_replicas=2

Needs the ray extra: pip install '.[ray]' (from unirt's source checkout).
"""

from __future__ import annotations

import logging
import os

# Quiet, as the unirt command is: Ray and tritonclient import gRPC, whose fork handlers print "Other threads are
# currently calling into gRPC, skipping fork() handlers" each time unirt starts a helper process (fork+exec, no
# gRPC in the child). Read when gRPC is imported, so set first.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import socket
from pathlib import Path

import numpy as np
import ray
import tritonclient.http as httpclient
from ray import serve

import unirt
from unirt.integrations.ray import RetryingHandle, build

HERE = Path(__file__).resolve().parent
MODEL = HERE / "models" / "classifier.onnx"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    # Ray puts the driver's working directory first on its workers' sys.path; from the root of a unirt source
    # checkout the replicas would import the uncompiled ./unirt rather than the installed package.
    os.chdir(HERE)
    local = "RAY_ADDRESS" not in os.environ
    ray.init(num_cpus=2 if local else None, include_dashboard=False, log_to_driver=False, configure_logging=False)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # Serve's INFO lines ("Started Serve ...")
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        # Each replica: one Session with 1 thread, so Ray reserves 1 CPU for it; up to 16 concurrent requests
        # merged into one run_many, waiting at most 5 ms for a batch to fill.
        app = build(MODEL, threads=1, num_replicas=2, max_batch_size=16, batch_wait_timeout_s=0.005)
        handle = serve.run(app, name="classifier", route_prefix="/")

        rng = np.random.default_rng(0)
        requests = [rng.standard_normal((1 + i % 3, 4)).astype(np.float32) for i in range(64)]
        responses = [handle.remote(x) for x in requests]  # all in flight at once
        answers = [r.result(timeout_s=60) for r in responses]
        with unirt.Session(MODEL, threads=1) as sess:
            for x, answer in zip(requests, answers):
                np.testing.assert_allclose(answer["probs"], sess.run(x)["probs"], rtol=1e-6)
        print(f"{len(requests)} requests through the handle: answers equal a local Session's")

        # A RetryingHandle re-sends a request whose replica died meanwhile (inference is safe to repeat).
        probs = RetryingHandle(handle).infer(requests[0], ["probs"])["probs"]
        print("probs of request 0:", np.array2string(probs, precision=4))

        # The same deployment over HTTP: the KServe v2 protocol, as `unirt serve` speaks it.
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = httpclient.InferInput("x", [2, 4], "FP32")
        tensor.set_data_from_numpy(requests[1])
        result = client.infer("classifier", [tensor])
        np.testing.assert_allclose(result.as_numpy("probs"), answers[1]["probs"], rtol=1e-6)
        print(
            f"HTTP on 127.0.0.1:{port}: model metadata {client.get_model_metadata('classifier')['inputs']}, "
            "answers equal"
        )
        client.close()

        for _ in range(4):  # requests go to either replica; each reports its own figures
            stats = handle.stats.remote().result(timeout_s=30)
            print(
                f"replica {stats['replica']} (pid {stats['pid']}): {stats['requests']} requests in "
                f"{stats['batches']} batches, sizes {stats['batch_sizes']}"
            )
    finally:
        # A local instance goes with its Ray: ray.shutdown() alone stops it without the "(raylet) Task
        # ServeController.listen_for_change failed ... killed by `ray.kill`" lines that serve.shutdown() leaves.
        # On a shared cluster, only this example's application is removed.
        if not local:
            serve.delete("classifier")
        ray.shutdown()


if __name__ == "__main__":
    main()
