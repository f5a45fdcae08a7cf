"""unirt inside an application: one Session loaded at start-up, shared by every request handler, with
concurrent requests merged into batches in-process (what a server's dynamic batcher does, without a server).

    python examples/in_process_app.py [MODEL]

`Classifier` is what an app (web handlers, a queue consumer, a GUI) keeps for its lifetime. Handlers on many
threads call `predict`; a small batcher thread collects what arrives within 2 ms and hands it to
`Session.run_many`, which packs the requests into as few backend runs as the model allows.
"""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from queue import Empty, Queue

import numpy as np

import unirt

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "classifier.onnx"


class Classifier:
    """The app's model: loaded once, thread-safe `predict`, closed with the app."""

    def __init__(self, model: Path, max_wait_s: float = 0.002, max_requests: int = 32) -> None:
        self.session = unirt.Session(model, threads=2)  # backend and device chosen from the file and machine
        self.input = self.session.inputs[0]
        self._queue: Queue[tuple[np.ndarray, Future] | None] = Queue()
        self._max_wait_s, self._max_requests = max_wait_s, max_requests
        self._batcher = threading.Thread(target=self._run_batches, name="classifier-batcher", daemon=True)
        self._batcher.start()

    def predict(self, rows: np.ndarray) -> np.ndarray:
        """Class probabilities for `rows` (float32[n, features]); called from any thread."""
        future: Future = Future()
        self._queue.put((rows, future))
        return future.result()["probs"]

    def _run_batches(self) -> None:
        while (first := self._queue.get()) is not None:
            batch = [first]
            deadline = time.perf_counter() + self._max_wait_s
            while len(batch) < self._max_requests and (left := deadline - time.perf_counter()) > 0:
                try:
                    item = self._queue.get(timeout=left)
                except Empty:
                    break
                if item is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(item)
            try:
                results = self.session.run_many([rows for rows, _ in batch])
            except unirt.UnirtError:  # one bad request must not fail its neighbours: run each on its own
                for rows, future in batch:
                    try:
                        future.set_result(self.session.run(rows))
                    except unirt.UnirtError as exc:
                        future.set_exception(exc)
                continue
            for (_, future), result in zip(batch, results):
                future.set_result(result)

    def close(self) -> None:
        self._queue.put(None)
        self._batcher.join()
        self.session.close()


def main(model: Path = DEFAULT_MODEL, handlers: int = 16, requests: int = 2000) -> None:
    app = Classifier(model)
    print(app.session, end="\n\n")
    features = app.input.shape[1]
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((1 + i % 4, features)).astype(np.float32) for i in range(requests)]

    started = time.perf_counter()
    with ThreadPoolExecutor(handlers) as pool:  # the app's request handlers
        answers = list(pool.map(app.predict, inputs))
    seconds = time.perf_counter() - started

    # Every answer equals a run of its own request on the session.
    for x, probs in zip(inputs[:50], answers[:50]):
        np.testing.assert_allclose(probs, app.session.run(x)["probs"], rtol=1e-5, atol=1e-7)
    stats = app.session.batch_stats()
    print(
        f"{requests} requests from {handlers} handler threads in {seconds:.2f} s ({requests / seconds:,.0f} requests/s)"
    )
    print(f"run_many packed {stats.requests} requests ({stats.rows} rows) into {stats.backend_runs} backend runs")
    print("first answer:", np.array2string(answers[0], precision=3))
    app.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_MODEL)
