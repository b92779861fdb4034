"""A serving certificate set for one TLS server: a fresh CA, the leaf it signs, and the
CA bundle clients must trust.

Every issue makes a new CA and throws its key away once the leaf is signed: nothing
can sign another certificate later, so no CA key needs guarding. Rotation is issuing
again; :func:`certs.bundle.merge_bundle` keeps the previous CA trusted while pods move
to the new leaf, so no call fails in between.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

from certs.authority import DEFAULT_LEAF_DAYS, CertificateAuthority
from harbinger.documents import write_atomic
from harbinger.errors import InvalidInput
from harbinger.httpserver import CA_FILE, CERT_FILE, KEY_FILE

_DNS_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_DNS_NAME = re.compile(rf"^(\*\.)?{_DNS_LABEL}(\.{_DNS_LABEL})*$")


@dataclass(frozen=True)
class ServingSet:
    ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path) -> None:
        """``tls.key``, ``tls.crt`` and ``ca.crt``; the key first, each atomically, so a
        server reloading mid-write never pairs a new certificate with an old key for long."""
        directory.mkdir(parents=True, exist_ok=True)
        for name, data, mode in ((KEY_FILE, self.key_pem, 0o600), (CERT_FILE, self.cert_pem, 0o644),
                                 (CA_FILE, self.ca_pem, 0o644)):
            write_atomic(directory / name, data, mode=mode)


def parse_hosts(text: str, *, source: str = "--hosts") -> list[str]:
    """Comma-separated DNS names and IP addresses, each checked, duplicates dropped."""
    hosts: list[str] = []
    for raw in text.split(","):
        host = raw.strip().lower()
        if not host:
            continue
        try:
            ipaddress.ip_address(host)
        except ValueError:
            if len(host) > 253 or not _DNS_NAME.match(host):
                raise InvalidInput(f"{raw.strip()!r} is neither an IP address nor a DNS name", source=source) from None
        if host not in hosts:
            hosts.append(host)
    if not hosts:
        raise InvalidInput("at least one DNS name or IP address is needed", source=source)
    return hosts


def issue_serving_set(hosts: list[str], *, common_name: str | None = None, days: int = DEFAULT_LEAF_DAYS) -> ServingSet:
    """A new CA and a serving certificate for ``hosts`` (subjectAltNames, in order)."""
    if not hosts:
        raise InvalidInput("a serving certificate needs at least one host", source="hosts")
    ca = CertificateAuthority.create("harbinger-webhook-ca", days=days + 1)
    leaf = ca.issue(common_name or hosts[0], hosts=hosts, days=days)
    return ServingSet(ca.cert_pem, leaf.cert_pem, leaf.key_pem)
