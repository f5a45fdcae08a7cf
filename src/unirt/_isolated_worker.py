"""The child process of `isolate=True` (see unirt.isolation): loads one model with one plugin and runs it on
request. Commands come on stdin and replies go on stdout (both pipes to the parent; anything the engine prints
goes to stderr instead); tensors travel through shared-memory regions the parent owns.
"""

from __future__ import annotations

import os
import pickle
import signal
import struct
import sys
import threading
import time


def _exit_with_parent(parent: int) -> None:
    """End this process when the parent process dies, even mid-run in a hung engine (an idle worker already ends on
    the command pipe's EOF). Not PR_SET_PDEATHSIG: that fires when the *thread* that started the child exits, which
    would kill the worker of a session created in a short-lived thread."""

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent:  # re-parented: the parent is gone
                os._exit(0)

    threading.Thread(target=watch, name="unirt-parent-watch", daemon=True).start()


def main() -> int:
    commands = os.dup(0)
    replies = os.dup(1)
    os.set_blocking(commands, False)  # receive polls, then waits in select
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.dup2(2, 1)  # prints from the engine must not corrupt the reply pipe
    os.close(devnull)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    _exit_with_parent(os.getppid())

    import numpy as np

    from unirt.isolation import (
        ATTACH_INPUTS,
        ATTACH_OUTPUTS,
        CLOSE,
        ERROR,
        GROW,
        LOAD,
        OK,
        RUN,
        error_payload,
        receive,
        send,
    )
    from unirt.loading import load_runner
    from unirt.shm import SharedRegion, SharedTensors

    message = receive(commands)
    if message is None or message[0] != LOAD:
        return 0
    backend, model, options = pickle.loads(message[1])
    try:
        runner = load_runner(backend, model, options)
    except BaseException as exc:
        send(replies, ERROR, error_payload(exc))
        return 0
    names = [o.name for o in runner.outputs]
    send(
        replies,
        OK,
        pickle.dumps(
            {
                "inputs": list(runner.inputs),
                "outputs": list(runner.outputs),
                "device": str(getattr(runner, "device", options.device)),
                "precision": getattr(runner, "precision", None) or options.precision,
                "precision_info": getattr(runner, "precision_info", None),
            }
        ),
    )
    inputs: SharedTensors | None = None
    outputs: SharedTensors | None = None
    pending: dict | None = None  # results waiting for a larger output region
    while True:
        message = receive(commands)
        if message is None or message[0] == CLOSE:
            runner.close()
            return 0
        op, payload = message
        if op == ATTACH_INPUTS:
            inputs = SharedTensors(SharedRegion.attach(payload.decode()))
            send(replies, OK)
        elif op == ATTACH_OUTPUTS:
            outputs = SharedTensors(SharedRegion.attach(payload.decode()))
            if pending is not None:
                results, pending = pending, None
                outputs.rewrite(results)
            send(replies, OK)
        elif op == RUN:
            wanted = [names[i] for i in struct.unpack(f"<{len(payload) // 2}H", payload)]
            try:
                inputs.refresh()  # type: ignore[union-attr]
                values = runner.run(inputs.views(), wanted)  # type: ignore[union-attr]
                results = {n: np.asarray(v, order="C") for n, v in zip(wanted, values)}  # 0-d stays 0-d
            except BaseException as exc:
                send(replies, ERROR, error_payload(exc))
                continue
            if outputs is not None and outputs.rewrite(results):
                send(replies, OK)
            else:
                pending = results
                send(replies, GROW, struct.pack("<Q", SharedTensors.size_for(results)))
        else:
            send(replies, ERROR, error_payload(RuntimeError(f"unknown command {op!r}")))


if __name__ == "__main__":
    sys.exit(main())
