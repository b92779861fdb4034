"""``harbinger certs``: files, a Secret and caBundle injection on the real apiserver, and
bad input refused (exit 2) before anything is written."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from pathlib import Path

import pytest
from cryptography import x509

from certs.cluster import inject_ca_bundle, served_ca
from certs.serving_set import issue_serving_set, parse_hosts
from harbinger.cli import main
from harbinger.kube import api_client
from harbinger_dev.localcluster import LocalCluster

HOSTS = "harbinger-webhook.harbinger-system.svc,127.0.0.1"


def test_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--hosts", HOSTS, "--days", "30"]) == 0
    cert = x509.load_pem_x509_certificate((out / "tls.crt").read_bytes())
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert.verify_directly_issued_by(ca)
    assert (cert.not_valid_after_utc - cert.not_valid_before_utc).days == 30
    assert "harbinger-webhook.harbinger-system.svc" in capsys.readouterr().out


def test_json_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--hosts", HOSTS, "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result == {"hosts": HOSTS.split(","), "directory": str(out)}


@pytest.mark.parametrize("args, message", [
    (["--hosts", "bad_host"], "--hosts"),
    (["--hosts", HOSTS, "--days", "0"], "--days"),
    (["--hosts", HOSTS, "--secret", "no-slash"], "--secret"),
    (["--hosts", HOSTS, "--kubeconfig", "/nonexistent/kubeconfig", "--inject-webhook", "x"], "kubeconfig"),
])
def test_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), *args]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def webhook_configuration(name: str) -> str:
    return f"""
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {name}}}
webhooks:
  - name: a.harbinger.io
    clientConfig: {{url: "https://127.0.0.1:1/mutate"}}
    rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
    namespaceSelector: {{matchLabels: {{cert-test: {name}}}}}
    failurePolicy: Ignore
    sideEffects: None
    admissionReviewVersions: [v1]
  - name: b.harbinger.io
    clientConfig: {{url: "https://127.0.0.1:1/mutate"}}
    rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
    namespaceSelector: {{matchLabels: {{cert-test: {name}}}}}
    failurePolicy: Ignore
    sideEffects: None
    admissionReviewVersions: [v1]
"""


def bundle_of(cluster: LocalCluster, name: str, index: int) -> list[x509.Certificate]:
    path = "jsonpath={.webhooks[" + str(index) + "].clientConfig.caBundle}"
    encoded = cluster.kubectl("get", "mutatingwebhookconfiguration", name, "-o", path).stdout
    return x509.load_pem_x509_certificates(base64.b64decode(encoded))


def test_secret_and_ca_bundle_on_the_cluster(cluster: LocalCluster, tmp_path: Path) -> None:
    name = f"harbinger-certs-test-{uuid.uuid4().hex[:6]}"
    namespace = f"certs-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("apply", "-f", "-", input=webhook_configuration(name))
    try:
        args = ["certs", "--out", str(tmp_path / "1"), "--hosts", HOSTS, "--kubeconfig", str(cluster.kubeconfig),
                "--secret", f"{namespace}/webhook-tls", "--inject-webhook", name]
        assert main(args) == 0
        first_ca = x509.load_pem_x509_certificate((tmp_path / "1" / "ca.crt").read_bytes())
        for index in (0, 1):
            assert bundle_of(cluster, name, index) == [first_ca]
        secret_type = cluster.kubectl("get", "secret", "-n", namespace, "webhook-tls", "-o", "jsonpath={.type}")
        assert secret_type.stdout == "kubernetes.io/tls"
        events = cluster.kubectl("get", "events", "-n", namespace, "--field-selector",
                                 "involvedObject.name=webhook-tls,reason=CertificateRotated", "-o",
                                 "jsonpath={.items[*].message}").stdout
        assert "new serving certificate for harbinger-webhook.harbinger-system.svc, 127.0.0.1, valid until" in events

        # Rotation: the new CA first, the previous one kept so that old pods stay trusted.
        args[2] = str(tmp_path / "2")
        assert main(args) == 0
        second_ca = x509.load_pem_x509_certificate((tmp_path / "2" / "ca.crt").read_bytes())
        assert bundle_of(cluster, name, 0) == [second_ca, first_ca]
        stored = cluster.kubectl("get", "secret", "-n", namespace, "webhook-tls",
                                 "-o", "jsonpath={.data.tls\\.crt}").stdout
        assert base64.b64decode(stored) == (tmp_path / "2" / "tls.crt").read_bytes()

        # Two rotations that inject their CA and die before storing their Secret (a Job retried):
        # the CA of the certificate still served stays in the bundle throughout.
        async def inject_then_die() -> x509.Certificate:
            # What 'harbinger certs' does up to storing the Secret, where the Job dies.
            fresh = issue_serving_set(parse_hosts(HOSTS), days=90)
            async with api_client(cluster.kubeconfig) as api:
                await inject_ca_bundle(api, name, fresh.ca_pem,
                                       served_ca_pem=await served_ca(api, namespace, "webhook-tls"))
            return x509.load_pem_x509_certificate(fresh.ca_pem)

        failed = [asyncio.run(inject_then_die()) for _ in range(2)]
        assert bundle_of(cluster, name, 0) == [failed[1], second_ca]
        args[2] = str(tmp_path / "2c")
        assert main(args) == 0
        newest = x509.load_pem_x509_certificate((tmp_path / "2c" / "ca.crt").read_bytes())
        assert bundle_of(cluster, name, 0) == [newest, second_ca]

        # A configuration that does not exist: refused before any Secret or file is written.
        args[2] = str(tmp_path / "3")
        args[-1] = "no-such-webhook"
        args[args.index("--secret") + 1] = f"{namespace}/never"
        assert main(args) == 2
        assert not (tmp_path / "3").exists()
        assert cluster.kubectl("get", "secret", "-n", namespace, "never", check=False).returncode != 0
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", name, "--ignore-not-found")
        cluster.kubectl("delete", "namespace", namespace, "--wait=false")


def test_a_missing_namespace_for_the_secret_is_named(cluster: LocalCluster, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["certs", "--out", str(tmp_path / "x"), "--hosts", HOSTS, "--kubeconfig", str(cluster.kubeconfig),
            "--secret", "no-such-namespace/tls"]
    assert main(args) == 2
    assert "no-such-namespace" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
