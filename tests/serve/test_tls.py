"""TLS on HTTP and gRPC, with and without client certificates, through the real tritonclient (its ssl options):
a throwaway CA, server and client certificates made with `cryptography`, a server on 127.0.0.1."""

from __future__ import annotations

import http.client
import ssl
from pathlib import Path

import numpy as np
import pytest

from unirt.testing import models
from unirt.testing.pki import make_pki

pytest.importorskip("cryptography")
grpcclient = pytest.importorskip("tritonclient.grpc")
httpclient = pytest.importorskip("tritonclient.http")
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

REFUSED = (HTTPConnectionClosed, ssl.SSLError, ConnectionError)  # what tritonclient.http meets when dropped

X = np.random.default_rng(7).standard_normal((2, 8)).astype(np.float32)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    return models.dynamic_mlp(tmp_path_factory.mktemp("tls_model") / "mlp.onnx", seed=11)


@pytest.fixture(scope="module")
def expected(model_file) -> np.ndarray:
    import unirt

    return unirt.Session(model_file, backend="onnxruntime").run({"x": X})["probs"]


def _serve(model_file: Path, metrics: bool = False, **tls):
    from unirt.serve import ServeOptions, ServerThread

    return ServerThread(
        ServeOptions(
            model=model_file,
            model_name="mlp",
            http_port=0,
            grpc_port=0,
            metrics_port=0 if metrics else None,
            drain_timeout=5,
            **tls,
        )
    )


def _http_infer(port: int, **kw) -> np.ndarray:
    client = httpclient.InferenceServerClient(
        f"localhost:{port}", ssl=True, network_timeout=20, connection_timeout=10, **kw
    )
    try:
        inp = httpclient.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X, binary_data=True)
        return client.infer("mlp", [inp], outputs=[httpclient.InferRequestedOutput("probs")]).as_numpy("probs")
    finally:
        client.close()


def _grpc_infer(port: int, **kw) -> np.ndarray:
    client = grpcclient.InferenceServerClient(f"localhost:{port}", ssl=True, **kw)
    try:
        inp = grpcclient.InferInput("x", list(X.shape), "FP32")
        inp.set_data_from_numpy(X)
        return client.infer("mlp", [inp], client_timeout=20).as_numpy("probs")
    finally:
        client.close()


def test_inference_over_tls_and_plain_text_refused(pki, model_file, expected):
    with _serve(model_file, metrics=True, tls_cert=pki["cert"], tls_key=pki["key"]) as server:
        http_port, grpc_port = server.ports["http"], server.ports["grpc"]
        np.testing.assert_allclose(
            _http_infer(http_port, ssl_options={"ca_certs": str(pki["ca"])}), expected, rtol=1e-6
        )
        np.testing.assert_allclose(_grpc_infer(grpc_port, root_certificates=str(pki["ca"])), expected, rtol=1e-6)

        # plain HTTP to the TLS port: no HTTP answer (the server speaks TLS only)
        conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=10)
        with pytest.raises((http.client.HTTPException, ConnectionError, OSError)):
            conn.request("GET", "/v2/health/ready")
            conn.getresponse()
        conn.close()
        # plain gRPC to the TLS port fails too
        plain = grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            plain.is_server_live(client_timeout=5)
        plain.close()
        # the metrics port speaks TLS too
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        conn = http.client.HTTPSConnection("localhost", server.ports["metrics"], timeout=10, context=ctx)
        conn.request("GET", "/metrics")
        resp = conn.getresponse()
        assert resp.status == 200 and b"nv_inference_request_success" in resp.read()
        conn.close()
        # a client that does not trust the server's CA refuses it
        with pytest.raises(ssl.SSLCertVerificationError):
            _http_infer(http_port)  # the system's CAs only


def test_client_certificates_required(pki, model_file, expected):
    with _serve(model_file, tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=pki["ca"], tls_client_auth=True) as server:
        http_port, grpc_port = server.ports["http"], server.ports["grpc"]
        mine = {"ca_certs": str(pki["ca"]), "certfile": str(pki["client_cert"]), "keyfile": str(pki["client_key"])}
        np.testing.assert_allclose(_http_infer(http_port, ssl_options=mine), expected, rtol=1e-6)
        np.testing.assert_allclose(
            _grpc_infer(
                grpc_port,
                root_certificates=str(pki["ca"]),
                private_key=str(pki["client_key"]),
                certificate_chain=str(pki["client_cert"]),
            ),
            expected,
            rtol=1e-6,
        )

        # no client certificate: the handshake is refused on both protocols
        with pytest.raises(REFUSED):
            _http_infer(http_port, ssl_options={"ca_certs": str(pki["ca"])})
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            _grpc_infer(grpc_port, root_certificates=str(pki["ca"]))
        # a certificate from another CA is refused as well
        stranger = {"ca_certs": str(pki["ca"]), "certfile": str(pki["other_cert"]), "keyfile": str(pki["other_key"])}
        with pytest.raises(REFUSED):
            _http_infer(http_port, ssl_options=stranger)
        with pytest.raises(InferenceServerException, match="UNAVAILABLE"):
            _grpc_infer(
                grpc_port,
                root_certificates=str(pki["ca"]),
                private_key=str(pki["other_key"]),
                certificate_chain=str(pki["other_cert"]),
            )

        # the same refusal seen from the standard library: the server asks for a certificate and drops us
        ctx = ssl.create_default_context(cafile=str(pki["ca"]))
        conn = http.client.HTTPSConnection("localhost", http_port, timeout=10, context=ctx)
        with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException, OSError)):
            conn.request("GET", "/v2/health/live")
            conn.getresponse()
        conn.close()


def test_bad_tls_options_are_clear_errors(pki, model_file, tmp_path):
    from unirt.errors import UnsupportedOptionError
    from unirt.serve import InferenceServer, ServeOptions

    def options(**kw):
        return ServeOptions(model=model_file, http_port=0, grpc_port=0, metrics_port=None, **kw)

    with pytest.raises(UnsupportedOptionError, match="--tls-key"):
        InferenceServer(options(tls_cert=pki["cert"]))
    with pytest.raises(UnsupportedOptionError, match="--tls-client-auth needs --tls-ca"):
        InferenceServer(options(tls_cert=pki["cert"], tls_key=pki["key"], tls_client_auth=True))
    with pytest.raises(UnsupportedOptionError, match="need TLS"):
        InferenceServer(options(tls_ca=pki["ca"]))
    with pytest.raises(UnsupportedOptionError, match="cannot read"):
        InferenceServer(options(tls_cert=tmp_path / "missing.pem", tls_key=pki["key"]))
    with pytest.raises(UnsupportedOptionError, match="matching private key"):  # another certificate's key
        InferenceServer(options(tls_cert=pki["cert"], tls_key=pki["client_key"]))
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello")
    with pytest.raises(UnsupportedOptionError, match="--tls-ca"):
        InferenceServer(options(tls_cert=pki["cert"], tls_key=pki["key"], tls_ca=not_pem))


def test_cli_tls_flags(pki, model_file):
    import os
    import shutil
    import subprocess
    import sys

    unirt_cli = shutil.which("unirt", path=os.path.dirname(sys.executable)) or shutil.which("unirt") or "unirt"
    proc = subprocess.run(
        [
            unirt_cli,
            "serve",
            str(model_file),
            "--http-port",
            "0",
            "--grpc-port",
            "0",
            "--metrics-port",
            "0",
            "--tls-cert",
            str(pki["cert"]),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "--tls-key" in proc.stderr and "Traceback" not in proc.stderr
