"""Throwaway certificates for TLS tests: a CA, a server certificate for 127.0.0.1/localhost, a client certificate
it signed, and one from a CA nobody trusts, as PEM files (needs the `cryptography` package)."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

__all__ = ["make_pki"]


def _name(cn: str):
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _cert(subject: str, key, issuer_name, issuer_key, *, ca: bool = False, server: bool = False):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import ExtendedKeyUsageOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    if not ca:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(d: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost and a client certificate, as PEM files in `d`."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    def write(name: str, obj) -> Path:
        path = d / name
        if hasattr(obj, "private_bytes"):
            path.write_bytes(
                obj.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
        else:
            path.write_bytes(obj.public_bytes(serialization.Encoding.PEM))
        return path

    ca_key, server_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    ca = _cert("unirt test CA", ca_key, _name("unirt test CA"), ca_key, ca=True)
    server = _cert("localhost", server_key, ca.subject, ca_key, server=True)
    client = _cert("unirt test client", client_key, ca.subject, ca_key)
    other_key = ec.generate_private_key(ec.SECP256R1())  # a client certificate from a CA the server does not know
    other = _cert("stranger", other_key, _name("stranger"), other_key)
    return {
        "ca": write("ca.pem", ca),
        "cert": write("server.pem", server),
        "key": write("server.key", server_key),
        "client_cert": write("client.pem", client),
        "client_key": write("client.key", client_key),
        "other_cert": write("other.pem", other),
        "other_key": write("other.key", other_key),
    }
