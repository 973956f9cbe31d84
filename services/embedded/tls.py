"""A local certificate authority and the brokers' certificates, in PEM, for the embedded cluster.

The CA is made once and kept under ``home/cluster/ca`` (its key readable by the owner only), so
clients keep trusting the same file across restarts; node certificates are issued anew at every
start. Kafka reads PEM directly (``ssl.keystore.type=PEM``), so no Java keystore is written.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from services.core.errors import EmbeddedStackError
from services.embedded.private import write_private

CA_CERT, CA_KEY = "ca.pem", "ca-key.pem"
CA_DAYS, NODE_DAYS = 3650, 30


def _name(cn: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "streamscore local"),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    # Unencrypted PKCS#8: Kafka's PEM keystore reads it without ssl.key.password; the file
    # mode (0600) is its protection, as for any local server key.
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def ensure_ca(ca_dir: Path) -> Path:
    """The CA certificate under ``ca_dir``, made when absent; returns the certificate's path.

    Raises:
        EmbeddedStackError: the directory holds a certificate without its key, or one that
            cannot be read.
    """
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if cert_path.exists() and key_path.exists():
        _load_ca(ca_dir)  # fails now, with a clear line, rather than at the first node
        return cert_path
    if cert_path.exists() != key_path.exists():
        raise EmbeddedStackError(
            f"{ca_dir} holds a CA certificate or key without the other; remove the folder "
            "(clients must then trust the new CA)"
        )
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("streamscore local CA"))
        .issuer_name(_name("streamscore local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    write_private(key_path, _key_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        cert = x509.load_pem_x509_certificate((ca_dir / CA_CERT).read_bytes())
        key = serialization.load_pem_private_key((ca_dir / CA_KEY).read_bytes(), None)
    except (OSError, ValueError) as exc:
        raise EmbeddedStackError(f"cannot read the local CA in {ca_dir}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise EmbeddedStackError(f"the local CA key in {ca_dir} is not an EC key")
    return cert, key


def issue_node_cert(ca_dir: Path, out: Path, common_name: str) -> Path:
    """Write ``out``: a key and certificate (then the CA's) for a node on loopback.

    The certificate names 127.0.0.1 and localhost, so clients verify the host as well as the
    chain, and serves both as a server and as a client certificate (the controllers ask the
    brokers for one).
    """
    ca_cert, ca_key = _load_ca(ca_dir)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=NODE_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    chain = cert.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(
        serialization.Encoding.PEM
    )
    write_private(out, _key_pem(key) + chain)
    return out
