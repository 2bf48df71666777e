"""Certificates for TLS tests, generated with ``cryptography`` (EC P-256: fast to make).

``make_pki(directory)`` writes a small PKI as PEM files and returns their paths:

- ``ca`` / ``ca_key``: the trusted root.
- ``server`` / ``server_key``: signed by ``ca``, SANs ``localhost``, ``127.0.0.1``, ``::1``.
- ``cloud`` / ``cloud_key``: signed by ``ca``, SAN ``streamer-cloud.test`` only (for the
  ``:authority`` override test: valid for that name, not for the address dialled).
- ``expired`` / ``expired_key``: like ``server`` but no longer valid.
- ``client`` / ``client_key``: the gateway's certificate (CN ``gateway-1``), signed by ``ca``.
- ``other_ca`` / ``rogue`` / ``rogue_key``: a second CA and a server certificate it signed,
  valid for loopback but not trusted by anyone who trusts ``ca``.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["LOOPBACK_SANS", "Issuer", "issue", "make_pki", "pem"]

Key = ec.EllipticCurvePrivateKey
Issuer = tuple[x509.Certificate, Key]

LOOPBACK_SANS: tuple[x509.GeneralName, ...] = (
    x509.DNSName("localhost"),
    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
    x509.IPAddress(ipaddress.ip_address("::1")),
)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(
    cn: str,
    issuer: Issuer | None = None,
    *,
    ca: bool = False,
    sans: Sequence[x509.GeneralName] = (),
    client: bool = False,
    valid_days: tuple[float, float] = (-1, 1),
) -> Issuer:
    """A new key and a certificate for it, signed by ``issuer`` (self-signed when None).

    ``valid_days`` is (not before, not after) relative to now, in days.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_name = issuer[0].subject if issuer else _name(cn)
    signer = issuer[1] if issuer else key
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=valid_days[0]))
        .not_valid_after(now + datetime.timedelta(days=valid_days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    else:
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    # Key identifiers: Python 3.13's ssl verifies strictly (VERIFY_X509_STRICT) and refuses a
    # chain whose certificates lack an Authority Key Identifier, as real CAs always set.
    builder = builder.add_extension(
        x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
    ).add_extension(
        x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), critical=False
    )
    return builder.sign(signer, hashes.SHA256()), key


def pem(obj: x509.Certificate | Key) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_pki(directory: Path) -> dict[str, Path]:
    """Write the PKI described in the module docstring; returns name -> PEM file path."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = issue("streamer-test-ca", ca=True, valid_days=(-1, 30))
    other_ca = issue("some-other-ca", ca=True, valid_days=(-1, 30))
    made: dict[str, Issuer] = {
        "ca": ca,
        "other_ca": other_ca,
        "server": issue("localhost", ca, sans=LOOPBACK_SANS),
        "cloud": issue("streamer-cloud.test", ca, sans=[x509.DNSName("streamer-cloud.test")]),
        "expired": issue("localhost", ca, sans=LOOPBACK_SANS, valid_days=(-10, -2)),
        "client": issue("gateway-1", ca, client=True),
        "rogue": issue("localhost", other_ca, sans=LOOPBACK_SANS),
    }
    paths: dict[str, Path] = {}
    for name, (cert, key) in made.items():
        paths[name] = directory / f"{name}.pem"
        paths[name].write_bytes(pem(cert))
        paths[f"{name}_key"] = directory / f"{name}.key"
        paths[f"{name}_key"].write_bytes(pem(key))
    return paths
