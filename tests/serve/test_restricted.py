"""Restricted APIs (Triton's `--http-restricted-api` / `--grpc-restricted-protocol`), shared-memory registration
refused from remote peers, and what a server bound to a network address says it exposes. Loopback only: the
remote peer is a peer address handed to the code that reads it, never real traffic."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

import unirt
from unirt.errors import UnsupportedOptionError
from unirt.serve.restricted import CATEGORIES, Forbidden, RestrictedApis
from unirt.serve.shm import SharedMemoryRegistry, check_local_peer, is_local_peer
from unirt.testing import models
from unirt.testing.pki import make_pki

ADMIN = "model-repository,shared-memory,statistics,model-config:admin-key=s3cret"
INFER = "inference:infer-key=abc"
# the installed console script, as a user runs it
UNIRT = shutil.which("unirt", path=os.path.dirname(sys.executable)) or shutil.which("unirt") or "unirt"
X = np.random.default_rng(5).standard_normal((3, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    return models.dynamic_mlp(tmp_path_factory.mktemp("restricted") / "mlp.onnx", seed=21)


@pytest.fixture(scope="module")
def expected(model_file):
    with unirt.Session(model_file, backend="onnxruntime") as sess:
        return sess.run({"x": X})["probs"]


@pytest.fixture(scope="module")
def restricted_server(model_file):
    from unirt.serve import ServeOptions, ServerThread

    options = ServeOptions(
        model=model_file,
        model_name="mlp",
        http_port=0,
        grpc_port=0,
        metrics_port=None,
        model_control_mode="explicit",
        load_models=["*"],
        drain_timeout=5,
        http_restricted_api=[ADMIN, INFER],
        grpc_restricted_api=[ADMIN, INFER],
    )
    with ServerThread(options) as running:
        yield running


def _http_get(port: int, path: str, headers: dict | None = None, method: str = "GET", body: str | None = None):
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def test_http_restricted_endpoints(restricted_server, expected):
    port = restricted_server.ports["http"]
    admin = {"admin-key": "s3cret"}
    # health and metadata are open (named in no group)
    assert _http_get(port, "/v2/health/live")[0] == 200
    assert _http_get(port, "/v2/health/ready")[0] == 200
    assert _http_get(port, "/v2/models/mlp/ready")[0] == 200
    assert _http_get(port, "/v2/models/mlp")[0] == 200
    # restricted ones answer 403 naming the header, without the key or with a wrong value
    for path in ("/v2/models/stats", "/v2/models/mlp/stats", "/v2/models/mlp/config", "/v2/systemsharedmemory/status"):
        status, body = _http_get(port, path)
        assert status == 403, (path, status, body)
        assert json.loads(body)["error"].startswith("This API is restricted, expecting header 'admin-key'")
        assert _http_get(port, path, {"admin-key": "wrong"})[0] == 403
        assert _http_get(port, path, {"Admin-Key": "s3cret"})[0] == 200  # header names are case-insensitive
    assert _http_get(port, "/v2/repository/index", method="POST", body="{}")[0] == 403
    status, body = _http_get(port, "/v2/repository/index", admin, method="POST", body="{}")
    assert status == 200 and json.loads(body)[0]["name"] == "mlp"
    # the admin key does not open inference: each group has its own key
    assert _http_get(port, "/v2/models/mlp/infer", admin, method="POST", body="{}")[0] == 403

    client = httpclient.InferenceServerClient(f"127.0.0.1:{port}", network_timeout=20)
    try:
        inp = httpclient.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException, match="expecting header 'infer-key'") as denied:
            client.infer("mlp", [inp])
        assert denied.value.status() == "403"
        got = client.infer("mlp", [inp], headers={"infer-key": "abc"}).as_numpy("probs")
        np.testing.assert_allclose(got, expected, rtol=1e-6)
        assert client.is_server_live() and client.get_server_metadata()["name"] == "unirt"
        with pytest.raises(InferenceServerException, match="restricted"):
            client.get_inference_statistics("mlp")
        stats = client.get_inference_statistics("mlp", headers=admin)
        assert stats["model_stats"][0]["inference_stats"]["success"]["count"] >= 1
    finally:
        client.close()


def test_grpc_restricted_endpoints(restricted_server, expected):
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{restricted_server.ports['grpc']}")
    admin = {"triton-grpc-protocol-admin-key": "s3cret"}
    infer_key = {"triton-grpc-protocol-infer-key": "abc"}
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("mlp")
        assert client.get_model_metadata("mlp").name == "mlp"
        for call in (
            lambda h: client.get_inference_statistics("mlp", headers=h),
            lambda h: client.get_model_config("mlp", headers=h),
            lambda h: client.get_model_repository_index(headers=h),
            lambda h: client.get_system_shared_memory_status(headers=h),
        ):
            with pytest.raises(
                InferenceServerException, match="expecting header 'triton-grpc-protocol-admin-key'"
            ) as denied:
                call(None)
            assert denied.value.status() == "StatusCode.PERMISSION_DENIED"
            with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
                call({"triton-grpc-protocol-admin-key": "nope"})
            call(admin)  # answers
        inp = grpcclient.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
            client.infer("mlp", [inp], client_timeout=20)
        with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):  # another group's key
            client.infer("mlp", [inp], headers=admin, client_timeout=20)
        got = client.infer("mlp", [inp], headers=infer_key, client_timeout=20).as_numpy("probs")
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    finally:
        client.close()


def test_grpc_stream_restricted(restricted_server, expected):
    import queue

    results: queue.Queue = queue.Queue()
    inp = grpcclient.InferInput("x", list(X.shape), "FP32")
    inp.set_data_from_numpy(X)
    for headers, ok in ((None, False), ({"triton-grpc-protocol-infer-key": "abc"}, True)):
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{restricted_server.ports['grpc']}")
        try:
            client.start_stream(callback=lambda result, error: results.put((result, error)), headers=headers)
            try:
                client.async_stream_infer("mlp", [inp])
            except InferenceServerException as exc:  # refused before the request could be sent
                assert not ok and "no longer in valid state" in str(exc)
            result, error = results.get(timeout=20)
        finally:
            client.stop_stream()
            client.close()
        if ok:
            assert error is None
            np.testing.assert_allclose(result.as_numpy("probs"), expected, rtol=1e-6)
        else:
            assert error is not None and "PERMISSION_DENIED" in str(error.status()) + str(error)


def test_health_restricted_only_when_named(model_file):
    from unirt.serve import ServeOptions, ServerThread

    options = ServeOptions(
        model=model_file,
        model_name="mlp",
        http_port=0,
        grpc_port=0,
        metrics_port=None,
        drain_timeout=5,
        http_restricted_api=["health:probe=yes"],
        grpc_restricted_api=["health:probe=yes"],
    )
    with ServerThread(options) as server:
        assert _http_get(server.ports["http"], "/v2/health/live")[0] == 403
        assert _http_get(server.ports["http"], "/v2/health/ready", {"probe": "yes"})[0] == 200
        assert _http_get(server.ports["http"], "/v2/models/mlp/config")[0] == 200  # not named: open
        client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.ports['grpc']}")
        try:
            with pytest.raises(InferenceServerException, match="PERMISSION_DENIED"):
                client.is_server_live()
            assert client.is_server_live(headers={"triton-grpc-protocol-probe": "yes"})
        finally:
            client.close()


def test_restricted_api_parsing():
    apis = RestrictedApis([ADMIN, "inference,metadata:X-Infer=v=1"], "grpc")
    assert apis.by_category["inference"].header == "triton-grpc-protocol-x-infer"
    assert apis.by_category["metadata"].value == b"v=1"  # the value is everything after the first '='
    assert set(apis.open_categories()) == {"health", "trace", "logging"}
    assert not RestrictedApis([], "http") and RestrictedApis([], "http").open_categories() == list(CATEGORIES)
    for spec, message in (
        ("bogus:k=v", "unknown category 'bogus'"),
        ("health", "expected <category>"),
        ("health:k", "expected <category>"),
        ("health:=v", "expected <category>"),
        (":k=v", "no category"),
        ("health:k y=v", "header key"),
    ):
        with pytest.raises(UnsupportedOptionError, match=message):
            RestrictedApis([spec], "http")
    with pytest.raises(UnsupportedOptionError, match="more than one group"):
        RestrictedApis(["health,statistics:a=1", "statistics:b=2"], "http")
    apis = RestrictedApis(["statistics:a=1"], "http")
    apis.check("health", lambda key: None)  # open
    apis.check("statistics", {"a": "1"}.get)
    with pytest.raises(Forbidden, match="expecting header 'a'"):
        apis.check("statistics", {"a": "2"}.get)


def test_cli_rejects_bad_restriction(model_file):
    proc = subprocess.run(
        [
            UNIRT,
            "serve",
            str(model_file),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--http-restricted-api",
            "models:k=v",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "unknown category 'models'" in proc.stderr


# -- shared memory from remote peers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "peer, local",
    [
        (None, True),
        ("unix:/tmp/s.sock", True),
        ("127.0.0.1", True),
        ("127.3.4.5", True),
        ("::1", True),
        ("ipv4:127.0.0.1:5555", True),
        ("ipv6:[::1]:5555", True),
        ("ipv6:[::ffff:127.0.0.1]:1", True),
        ("10.0.0.7", False),
        ("192.168.1.2", False),
        ("ipv4:10.1.2.3:4444", False),
        ("ipv6:[2001:db8::1]:80", False),
        ("ipv6:[::ffff:10.0.0.1]:1", False),
        ("0.0.0.0", False),
        ("testclient", False),
        ("", False),
    ],
)
def test_local_peer(peer, local):
    assert is_local_peer(peer) is local
    if local:
        check_local_peer(peer, "shared memory registration")
    else:
        with pytest.raises(Forbidden, match="only from this machine"):
            check_local_peer(peer, "shared memory registration")


def _asgi_post(app, path: str, body: bytes, client: tuple[str, int] | None, headers: dict | None = None):
    """One HTTP request straight into the ASGI app, with the peer address uvicorn would give it."""
    hdrs = [(k.lower().encode(), v.encode()) for k, v in {"content-length": str(len(body)), **(headers or {})}.items()]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": hdrs,
        "client": client,
        "server": ("127.0.0.1", 8000),
    }
    sent = []
    chunks = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return chunks.pop(0) if chunks else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


class _FakeGrpcContext:
    """The two things the servicer reads from grpc.aio's context: the peer and the metadata; abort raises."""

    def __init__(self, peer: str) -> None:
        self._peer = peer
        self.code = None

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self):
        return ()

    async def abort(self, code, message):
        self.code, self.message = code, message
        raise RuntimeError("aborted")


@pytest.mark.skipif(not SharedMemoryRegistry.available(), reason="needs POSIX shared memory (/dev/shm)")
def test_shm_registration_refused_from_remote_peers(model_file):
    import grpc
    from tritonclient.grpc import service_pb2 as pb

    from unirt.serve.context import ServerContext
    from unirt.serve.grpc_servicer import InferenceServicer
    from unirt.serve.http_app import build_http_app
    from unirt.serve.manager import ModelManager
    from unirt.serve.repository import SingleModelRepository

    key = f"/unirt_h7_remote_{os.getpid()}"
    handle = shm.create_shared_memory_region("remote", key, 64)
    ctx = ServerContext(ModelManager(SingleModelRepository(model_file, "mlp", None)))
    try:
        app = build_http_app(ctx)
        body = json.dumps({"key": key, "offset": 0, "byte_size": 64}).encode()
        path = "/v2/systemsharedmemory/region/r/register"
        status, answer = _asgi_post(app, path, body, ("10.20.30.40", 5555))
        assert status == 403 and "only from this machine" in json.loads(answer)["error"]
        assert ctx.shm.status() == []  # nothing mapped
        status, _ = _asgi_post(app, "/v2/systemsharedmemory/unregister", b"{}", ("10.20.30.40", 5555))
        assert status == 403
        # whatever the restricted-API settings: the right key does not make a remote peer local
        keyed = build_http_app(ctx, RestrictedApis(["shared-memory:k=v"], "http"))
        assert _asgi_post(keyed, path, body, ("10.20.30.40", 5555), {"k": "v"})[0] == 403
        assert _asgi_post(keyed, path, body, ("127.0.0.1", 5555))[0] == 403  # local, but without the key
        assert _asgi_post(keyed, path, body, ("127.0.0.1", 5555), {"k": "v"})[0] == 200
        assert [r.name for r in ctx.shm.status()] == ["r"]
        assert _asgi_post(app, "/v2/systemsharedmemory/unregister", b"{}", None)[0] == 200  # a local socket
        assert ctx.shm.status() == []

        servicer = InferenceServicer(ctx)
        request = pb.SystemSharedMemoryRegisterRequest(name="g", key=key, offset=0, byte_size=64)
        fake = _FakeGrpcContext("ipv4:10.20.30.40:5555")
        with pytest.raises(RuntimeError, match="aborted"):
            asyncio.run(servicer.SystemSharedMemoryRegister(request, fake))
        assert fake.code == grpc.StatusCode.PERMISSION_DENIED and "only from this machine" in fake.message
        assert ctx.shm.status() == []
        asyncio.run(servicer.SystemSharedMemoryRegister(request, _FakeGrpcContext("ipv6:[::1]:5555")))
        assert [r.name for r in ctx.shm.status()] == ["g"]
    finally:
        ctx.shm.close()
        shm.destroy_shared_memory_region(handle)


@pytest.mark.skipif(not SharedMemoryRegistry.available(), reason="needs POSIX shared memory (/dev/shm)")
def test_shm_registration_over_loopback_still_works(restricted_server, expected):
    """End to end over 127.0.0.1 with the real tritonclient: register (with the admin key), infer in place."""
    key = f"/unirt_h7_loop_{os.getpid()}"
    handle = shm.create_shared_memory_region("loop_in", key, X.nbytes)
    shm.set_shared_memory_region(handle, [X])
    admin = {"admin-key": "s3cret"}
    client = httpclient.InferenceServerClient(f"127.0.0.1:{restricted_server.ports['http']}", network_timeout=20)
    try:
        with pytest.raises(InferenceServerException, match="restricted"):
            client.register_system_shared_memory("loop_in", key, X.nbytes)
        client.register_system_shared_memory("loop_in", key, X.nbytes, headers=admin)
        inp = httpclient.InferInput("x", list(X.shape), "FP32")
        inp.set_shared_memory("loop_in", X.nbytes)
        got = client.infer("mlp", [inp], headers={"infer-key": "abc"}).as_numpy("probs")
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    finally:
        client.unregister_system_shared_memory(headers=admin)
        client.close()
        shm.destroy_shared_memory_region(handle)


# -- what a network-bound server says it exposes ---------------------------------------------------------------


def test_is_loopback_host():
    from unirt.serve.server import is_loopback_host

    for host in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"):
        assert is_loopback_host(host), host
    for host in ("0.0.0.0", "::", "10.1.2.3", "192.0.2.1"):
        assert not is_loopback_host(host), host


def test_exposure_report(model_file, tmp_path):
    pytest.importorskip("cryptography")
    from unirt.serve import InferenceServer, ServeOptions

    # not started: nothing is bound to the network address; the ports are what it would print them with
    server = InferenceServer(ServeOptions(model=model_file, host="0.0.0.0", http_restricted_api=[ADMIN]))
    server.ports = {"http": 8000, "grpc": 8001, "metrics": 8002}
    lines = server.exposure()
    assert (
        lines[0] == "listening on 0.0.0.0 (reachable from the network); TLS off: plain text, no client authentication"
    )
    http_line = next(line for line in lines if line.startswith("http port 8000"))
    assert "open without a key: health, metadata, inference, trace, logging" in http_line
    assert "model-repository, shared-memory, statistics, model-config need header 'admin-key'" in http_line
    grpc_line = next(line for line in lines if line.startswith("grpc port 8001"))
    assert "open without a key: " + ", ".join(CATEGORIES) in grpc_line and "restricted" not in grpc_line
    assert any(line.startswith("metrics port 8002") for line in lines)
    assert lines[-1] == "shared-memory registration: accepted from loopback / local sockets only"

    pki = make_pki(tmp_path)
    server = InferenceServer(
        ServeOptions(
            model=model_file,
            host="0.0.0.0",
            tls_cert=pki["cert"],
            tls_key=pki["key"],
            tls_ca=pki["ca"],
            tls_client_auth=True,
        )
    )
    assert server.exposure()[0].endswith("TLS on, client certificates required")
