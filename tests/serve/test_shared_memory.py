"""System shared memory: regions created by tritonclient's own shared_memory utility, registered over HTTP and
gRPC, with inputs read and outputs written in place."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

import unirt
from unirt.serve.errors import BadRequest, NotFound
from unirt.serve.shm import SharedMemoryRegistry

pytestmark = pytest.mark.skipif(not SharedMemoryRegistry.available(), reason="needs POSIX shared memory (/dev/shm)")


@pytest.fixture
def regions():
    made = []

    def make(name: str, size: int):
        handle = shm.create_shared_memory_region(name, f"/{name}_{os.getpid()}", size)
        made.append(handle)
        return handle, f"/{name}_{os.getpid()}"

    yield make
    for handle in made:
        shm.destroy_shared_memory_region(handle)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_infer_through_shared_memory(protocol, regions, repository, http_client, grpc_client):
    client, mod = (http_client, httpclient) if protocol == "http" else (grpc_client, grpcclient)
    x = np.random.default_rng(30).standard_normal((4, 8)).astype(np.float32)
    in_handle, in_key = regions(f"in_{protocol}", 64 + x.nbytes)
    out_handle, out_key = regions(f"out_{protocol}", 4 * 3 * 4 + 16)
    shm.set_shared_memory_region(in_handle, [x], offset=64)
    client.unregister_system_shared_memory()
    client.register_system_shared_memory(f"in_{protocol}", in_key, 64 + x.nbytes)
    client.register_system_shared_memory(f"out_{protocol}", out_key, 4 * 3 * 4 + 16, offset=0)
    try:
        status = client.get_system_shared_memory_status()
        names = {r["name"] for r in status} if protocol == "http" else set(status.regions)
        assert names == {f"in_{protocol}", f"out_{protocol}"}
        tensor = mod.InferInput("x", [4, 8], "FP32")
        tensor.set_shared_memory(f"in_{protocol}", x.nbytes, offset=64)
        out = mod.InferRequestedOutput("probs")
        out.set_shared_memory(f"out_{protocol}", 4 * 3 * 4, offset=16)
        logits = mod.InferRequestedOutput("logits")
        result = client.infer("mlp", [tensor], outputs=[out, logits])
        with unirt.Session(repository / "mlp" / "2" / "model.onnx") as sess:
            expected = sess.run({"x": x})
        got = shm.get_contents_as_numpy(out_handle, np.float32, [4, 3], offset=16)
        np.testing.assert_allclose(got, expected["probs"], rtol=1e-6)
        np.testing.assert_allclose(result.as_numpy("logits"), expected["logits"], rtol=1e-6)
        # too little room for the output: a clear 400, nothing written past it
        out.set_shared_memory(f"out_{protocol}", 8, offset=16)
        with pytest.raises(InferenceServerException, match="needs 48 bytes"):
            client.infer("mlp", [tensor], outputs=[out])
        tensor.set_shared_memory(f"in_{protocol}", x.nbytes, offset=128)
        with pytest.raises(InferenceServerException, match="outside shared memory region"):
            client.infer("mlp", [tensor])
        tensor.set_shared_memory("never_registered", x.nbytes)
        with pytest.raises(InferenceServerException, match="no system shared memory region named"):
            client.infer("mlp", [tensor])
        with pytest.raises(InferenceServerException, match="already registered"):
            client.register_system_shared_memory(f"in_{protocol}", in_key, 16)
        with pytest.raises(InferenceServerException, match="no such shared-memory object"):
            client.register_system_shared_memory("ghost", "/unirt_no_such_key", 16)
    finally:
        client.unregister_system_shared_memory(f"in_{protocol}")
        client.unregister_system_shared_memory()
    status = client.get_system_shared_memory_status()
    assert (len(status) if protocol == "http" else len(status.regions)) == 0


def test_registry_reads_in_place_and_checks_bounds(regions):
    handle, key = regions("unit", 4096 + 256)
    registry = SharedMemoryRegistry()
    try:
        registry.register("r", key, 4096 + 16, 128)  # an offset that is not page-aligned
        registry.write("r", 0, 128, np.arange(8, dtype=np.float32))
        np.testing.assert_array_equal(
            shm.get_contents_as_numpy(handle, np.float32, [8], offset=4096 + 16), np.arange(8, dtype=np.float32)
        )
        view = np.frombuffer(registry.read("r", 0, 32), np.float32)
        shm.set_shared_memory_region(handle, [np.full(8, 7, np.float32)], offset=4096 + 16)
        np.testing.assert_array_equal(view, np.full(8, 7, np.float32))  # a view of the memory, not a copy
        with pytest.raises(BadRequest, match="outside shared memory region"):
            registry.read("r", 100, 64)
        with pytest.raises(BadRequest, match="exceeds the object's size"):
            registry.register("big", key, 4096, 4096)
        with pytest.raises(BadRequest, match="POSIX shared-memory name"):
            registry.register("bad", "/../etc/passwd", 0, 16)
        with pytest.raises(NotFound):
            registry.status("missing")
        registry.unregister("r")  # a numpy view is still alive: unmapped when it goes
        assert registry.status() == []
        del view
    finally:
        registry.close()
