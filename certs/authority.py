"""A small certificate authority built on ``cryptography``.

Harbinger needs three kinds of certificate: serving certificates (the webhook, the
extender, the local kube-apiserver), client certificates (the local control plane's
admin and components), and the CA that signs both and goes into a ``caBundle``.
ECDSA P-256 keys: small, fast to make, and accepted by Go's and Python's TLS stacks.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harbinger.documents import write_atomic

#: Long enough that a local cluster or a demo never sees expiry; rotation is for the webhook.
DEFAULT_CA_DAYS = 3650
DEFAULT_LEAF_DAYS = 365
#: Backdating absorbs clock skew between the signer and the verifier.
_BACKDATE = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    """A certificate with its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    def write(self, cert_path: Path, key_path: Path) -> None:
        """Write both files; the key readable by its owner only."""
        cert_path.parent.mkdir(parents=True, exist_ok=True)
        # Write the key first and atomically, so a reader never pairs a new cert with an old key.
        write_atomic(key_path, self.key_pem, mode=0o600)
        write_atomic(cert_path, self.cert_pem, mode=0o644)



def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _san(hosts: list[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


class CertificateAuthority:
    """A CA that can issue serving and client certificates."""

    def __init__(self, keypair: KeyPair) -> None:
        self.keypair = keypair
        self._cert = keypair.certificate
        key = serialization.load_pem_private_key(keypair.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key must be an ECDSA key")
        self._key = key

    @classmethod
    def create(cls, common_name: str = "harbinger-ca", days: int = DEFAULT_CA_DAYS) -> CertificateAuthority:
        key = _new_key()
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = dt.datetime.now(dt.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                    key_encipherment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key)))

    @classmethod
    def load(cls, cert_path: Path, key_path: Path) -> CertificateAuthority:
        return cls(KeyPair(cert_path.read_bytes(), key_path.read_bytes()))

    @property
    def cert_pem(self) -> bytes:
        return self.keypair.cert_pem

    def issue(
        self,
        common_name: str,
        *,
        hosts: list[str] | None = None,
        organizations: list[str] | None = None,
        server: bool = True,
        client: bool = False,
        days: int = DEFAULT_LEAF_DAYS,
    ) -> KeyPair:
        """Issue a leaf certificate signed by this CA.

        ``hosts`` become subjectAltNames (IP addresses or DNS names); TLS clients match
        only those, never the common name. ``organizations`` become O= entries, which
        Kubernetes reads as group names for client certificates.
        """
        if not server and not client:
            raise ValueError("a certificate must be for a server, a client, or both")
        if server and not hosts:
            raise ValueError("a serving certificate needs at least one host name or IP address")
        key = _new_key()
        attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations or []]
        attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        now = dt.datetime.now(dt.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _BACKDATE)
            .not_valid_after(min(now + dt.timedelta(days=days), self._cert.not_valid_after_utc))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True, key_encipherment=False, key_cert_sign=False, crl_sign=False,
                    content_commitment=False, data_encipherment=False, key_agreement=False,
                    encipher_only=False, decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False
            )
        )
        if hosts:
            builder = builder.add_extension(_san(hosts), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def new_signing_key_pem() -> tuple[bytes, bytes]:
    """A key pair for signing service-account tokens: (private PEM, public PEM)."""
    key = _new_key()
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return _key_pem(key), public
