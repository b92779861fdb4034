"""Serving sets, host parsing and CA bundles, checked with real TLS handshakes."""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from pathlib import Path

import pytest
from cryptography import x509

from certs.authority import CertificateAuthority
from certs.bundle import merge_bundle, split_bundle
from certs.serving_set import issue_serving_set, parse_hosts
from harbinger.errors import InvalidInput


def test_parse_hosts_accepts_names_and_ips_and_names_the_bad_one() -> None:
    assert parse_hosts(" harbinger-webhook.harbinger-system.svc,127.0.0.1,::1,*.svc,127.0.0.1 ") == [
        "harbinger-webhook.harbinger-system.svc", "127.0.0.1", "::1", "*.svc"]
    for bad in ("under_score.svc", "-lead.svc", "a..b", "x" * 64 + ".svc", "http://a"):
        with pytest.raises(InvalidInput, match="--hosts") as error:
            parse_hosts(f"ok.svc,{bad}")
        assert bad in str(error.value)
    with pytest.raises(InvalidInput, match="at least one"):
        parse_hosts(" , ")


def handshake(cert_dir: Path, ca_file: Path, server_hostname: str) -> x509.Certificate:
    """A real TLS handshake on loopback: server from ``cert_dir``, client trusting ``ca_file``."""
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]

        def accept() -> None:
            conn, _ = listener.accept()
            try:
                with server_context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        client_context = ssl.create_default_context(cafile=str(ca_file))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                    client_context.wrap_socket(raw, server_hostname=server_hostname) as tls:
                der = tls.getpeercert(binary_form=True)
                tls.sendall(b"x")
        finally:
            thread.join(5)
    assert der
    return x509.load_der_x509_certificate(der)


def test_serving_set_is_trusted_through_its_ca_for_every_san(tmp_path: Path) -> None:
    hosts = ["harbinger-webhook.harbinger-system.svc", "localhost", "127.0.0.1"]
    serving = issue_serving_set(hosts)
    serving.write(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"tls.crt", "tls.key", "ca.crt"}
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600
    cert = x509.load_pem_x509_certificate(serving.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == hosts[:2]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    for name in ("localhost", "127.0.0.1"):
        assert handshake(tmp_path, tmp_path / "ca.crt", name).serial_number == cert.serial_number
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake(tmp_path, tmp_path / "ca.crt", "other.svc")
    other = tmp_path / "other"
    issue_serving_set(["127.0.0.1"]).write(other)
    with pytest.raises(ssl.SSLCertVerificationError):  # a different CA is not trusted
        handshake(tmp_path, other / "ca.crt", "127.0.0.1")


def test_a_merged_bundle_trusts_old_and_new_during_a_rotation(tmp_path: Path) -> None:
    old, new = issue_serving_set(["127.0.0.1"]), issue_serving_set(["127.0.0.1"])
    bundle = merge_bundle(new.ca_pem, old.ca_pem)
    (tmp_path / "bundle.crt").write_bytes(bundle)
    for serving, name in ((old, "old"), (new, "new")):
        serving.write(tmp_path / name)
        handshake(tmp_path / name, tmp_path / "bundle.crt", "127.0.0.1")
    assert [c.subject for c in split_bundle(bundle)] == [c.subject for c in split_bundle(new.ca_pem + old.ca_pem)]
    assert merge_bundle(new.ca_pem, bundle) == bundle  # no duplicate
    newest = issue_serving_set(["127.0.0.1"])
    assert len(split_bundle(merge_bundle(newest.ca_pem, bundle))) == 2  # at most the new and one previous
    assert merge_bundle(new.ca_pem, b"garbage") == new.ca_pem
    assert merge_bundle(new.ca_pem, b"") == new.ca_pem


def test_expired_cas_are_dropped_from_the_bundle() -> None:
    old = CertificateAuthority.create(days=1).cert_pem
    new = CertificateAuthority.create().cert_pem
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert merge_bundle(new, old, now=later) == new
    with pytest.raises(InvalidInput, match="one CA"):
        merge_bundle(new + old, b"")
