"""CA bundles (concatenated PEM certificates) as a ``caBundle`` holds them.

During a rotation the apiserver must trust both the CA of the leaf still being served
and the CA of the new one, so the bundle carries the new CA first, then the CA of the
certificate the webhook serves now (always: a rotation that injected its CA but failed
before storing its Secret, and was retried, must not push that one out), then the previous
ones, dropping expired ones and keeping at most ``keep`` in all (the served one always).
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from harbinger.errors import InvalidInput

#: The new CA and the one before it: enough for one rotation in flight.
DEFAULT_KEEP = 2


def split_bundle(pem: bytes, *, source: str = "caBundle") -> list[x509.Certificate]:
    if not pem.strip():
        return []
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError as exc:
        raise InvalidInput(f"not a PEM bundle of certificates: {exc}", source=source) from exc


def merge_bundle(new_ca_pem: bytes, previous_bundle: bytes, *, keep: int = DEFAULT_KEEP,
                 now: dt.datetime | None = None, served_ca_pem: bytes = b"") -> bytes:
    """``new_ca_pem``, then the CA of what is served now (``served_ca_pem``, when valid), then
    the still-valid certificates of ``previous_bundle`` (unreadable previous bundles are
    dropped: the new CA alone is always correct)."""
    now = now or dt.datetime.now(dt.UTC)
    new = split_bundle(new_ca_pem, source="new CA")
    if len(new) != 1:
        raise InvalidInput(f"expected one CA certificate, found {len(new)}", source="new CA")
    try:
        previous = split_bundle(previous_bundle)
    except InvalidInput:
        previous = []
    try:
        served = [c for c in split_bundle(served_ca_pem, source="served CA") if c.not_valid_after_utc > now]
    except InvalidInput:
        served = []
    merged = [new[0]]
    for cert in served:
        if cert not in merged:
            merged.append(cert)
    limit = max(keep, len(merged))
    for cert in previous:
        if len(merged) >= limit:
            break
        if cert.not_valid_after_utc > now and cert not in merged:
            merged.append(cert)
    return b"".join(cert.public_bytes(serialization.Encoding.PEM) for cert in merged)
