"""Throw-away CA and server certificate for the dev broker's TLS listeners.

Kafka accepts PEM key stores (``ssl.keystore.type=PEM``), so generating PEM files with
``cryptography`` is enough: no keytool, no JKS/PKCS12 passwords. The private keys are
unencrypted and live only in the state directory: dev use only.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class TlsFiles:
    """Where the generated PEM files are."""

    ca_cert: Path
    """CA certificate: what clients trust (``ssl.create_default_context(cafile=...)``)."""
    server_keystore: Path
    """Server private key followed by its certificate chain (``ssl.keystore.location``)."""

    @classmethod
    def in_dir(cls, directory: Path) -> TlsFiles:
        return cls(ca_cert=directory / "ca.pem", server_keystore=directory / "server-keystore.pem")

    def exist(self) -> bool:
        return self.ca_cert.is_file() and self.server_keystore.is_file()


def ensure_tls_files(directory: Path, *, days: int = 3650) -> TlsFiles:
    """Create the CA and a server certificate for 127.0.0.1/localhost unless present.

    Reusing existing files keeps the CA stable across restarts, so a client that loaded the CA
    once keeps working after ``restart()``.
    """
    files = TlsFiles.in_dir(directory)
    if files.exist():
        return files
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "the dev broker's TLS listeners need the 'cryptography' package"
        ) from exc

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tradestats dev CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(until)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    key_pem = key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Write the keystore first and the CA last: exist() then only sees complete sets.
    chain = cert.public_bytes(pem) + ca_cert.public_bytes(pem)
    _write_private(files.server_keystore, key_pem + chain)
    files.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    return files


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
