"""The cluster's certificates: one throw-away CA, the API server's serving certificate, one
client certificate per component, and the service-account signing key.

Each component has its own identity (``system:kube-scheduler``, ``system:node:<host>``...), so
the API server's bootstrap RBAC roles and the Node authorizer apply as on any real cluster.
Keys are unencrypted and live only in the cluster's state directory: development use only.
``cryptography`` is imported when certificates are made, so the build needs only the standard
library.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ClientIdentity", "Pki", "ensure_pki"]


@dataclass(frozen=True)
class ClientIdentity:
    """A client certificate's subject: user name (CN) and groups (O)."""

    file_name: str
    user: str
    groups: tuple[str, ...] = ()


@dataclass(frozen=True)
class Pki:
    """Where the PEM files are."""

    directory: Path

    @property
    def ca_cert(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.directory / "ca.key"

    @property
    def service_account_key(self) -> Path:
        return self.directory / "service-account.key"

    @property
    def service_account_public(self) -> Path:
        return self.directory / "service-account.pub"

    def cert(self, name: str) -> Path:
        return self.directory / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.directory / f"{name}.key"


def ensure_pki(
    directory: Path,
    *,
    server_name: str,
    server_ips: Sequence[str],
    server_dns: Sequence[str],
    clients: Sequence[ClientIdentity],
    days: int = 3650,
) -> Pki:
    """Create whatever of the files is missing (the CA first, so it stays stable)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    pki = Pki(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    until = now + dt.timedelta(days=days)
    pem = serialization.Encoding.PEM

    def new_key(path: Path) -> ec.EllipticCurvePrivateKey:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            path,
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
        )
        return key

    def load_key(path: Path) -> Any:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)

    if not (pki.ca_cert.exists() and pki.ca_key.exists()):
        ca_key = new_key(pki.ca_key)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tradestats-kube CA")])
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(ca_name)
            .issuer_name(ca_name)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(x509, cert_sign=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
            .sign(ca_key, hashes.SHA256())
        )
        pki.ca_cert.write_bytes(ca_cert.public_bytes(pem))
    ca_key = load_key(pki.ca_key)
    ca_cert = x509.load_pem_x509_certificate(pki.ca_cert.read_bytes())

    def issue(name: str, subject: x509.Name, usage: Any, sans: list[Any] | None) -> None:
        if pki.cert(name).exists() and pki.key(name).exists():
            return
        key = new_key(pki.key(name))
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now)
            .not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(x509, cert_sign=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        pki.cert(name).write_bytes(builder.sign(ca_key, hashes.SHA256()).public_bytes(pem))

    issue(
        "apiserver",
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]),
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName(name) for name in server_dns]
        + [x509.IPAddress(ipaddress.ip_address(ip)) for ip in server_ips],
    )
    for client in clients:
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, client.user)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in client.groups]
        issue(client.file_name, x509.Name(attributes), ExtendedKeyUsageOID.CLIENT_AUTH, None)

    if not (pki.service_account_key.exists() and pki.service_account_public.exists()):
        signing = new_key(pki.service_account_key)
        pki.service_account_public.write_bytes(
            signing.public_key().public_bytes(pem, serialization.PublicFormat.SubjectPublicKeyInfo)
        )
    return pki


def _key_usage(x509: Any, *, cert_sign: bool) -> Any:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.write_bytes(data)
