"""``harbinger certs --out DIR --hosts NAMES [--secret NS/NAME --kubeconfig K] [--inject-webhook NAME]``.

Makes a CA and a serving certificate for NAMES, then, in this order so that a failure
half-way leaves every server still trusted: injects the CA into the webhook
configuration's ``caBundle`` (next to the previous CA), stores the set as a Secret,
writes ``tls.crt``, ``tls.key`` and ``ca.crt`` into DIR. Every argument is checked,
and the webhook configuration looked up, before anything is written.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from certs.cluster import inject_ca_bundle, parse_secret_ref, read_webhook_configuration, served_ca, store_secret
from certs.serving_set import ServingSet, issue_serving_set, parse_hosts
from harbinger.clock import format_time
from harbinger.errors import InvalidInput
from harbinger.events import record_event
from harbinger.flags import KUBE_FLAGS, add_json_flag, add_kube_flags
from harbinger.kube import api_client
from harbinger.settings import settings_from_flags


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory for tls.crt, tls.key and ca.crt")
    parser.add_argument("--hosts", required=True,
                        help="comma-separated DNS names and IPs for the certificate "
                             "(e.g. harbinger-webhook.harbinger-system.svc,127.0.0.1)")
    parser.add_argument("--days", type=int, default=365, help="validity of the serving certificate (default 365)")
    parser.add_argument("--secret", help="also store the set as this kubernetes.io/tls Secret (NAMESPACE/NAME)")
    parser.add_argument("--inject-webhook", metavar="NAME",
                        help="put the CA into this MutatingWebhookConfiguration's caBundle")
    add_kube_flags(parser)
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    hosts = parse_hosts(args.hosts)
    if not 1 <= args.days <= 3650:
        raise InvalidInput(f"{args.days} is outside 1..3650", source="--days")
    if args.out.exists() and not args.out.is_dir():
        raise InvalidInput("exists and is not a directory", source=f"--out {args.out}")
    secret = parse_secret_ref(args.secret) if args.secret else None
    serving = issue_serving_set(hosts, days=args.days)
    done: dict[str, Any] = {"hosts": hosts}
    if secret or args.inject_webhook:
        asyncio.run(_apply(args, serving, secret, done))
    serving.write(args.out)
    done["directory"] = str(args.out)
    if args.json:
        print(json.dumps(done))
    else:
        print(f"wrote {args.out}/tls.crt, tls.key, ca.crt for {', '.join(hosts)}")
    return 0


async def tell_rotated(api: client.ApiClient, secret: tuple[str, str], serving: ServingSet, hosts: list[str],
                       webhook: str | None) -> None:
    """A ``CertificateRotated`` Event on the Secret, so ``kubectl describe`` shows when the
    webhook's certificate last changed and until when it is good. Best effort: the rotation
    itself is done and must not be reported as failed for want of an Event."""
    leaf = x509.load_pem_x509_certificate(serving.cert_pem)
    message = (f"new serving certificate for {', '.join(hosts)}, valid until "
               f"{format_time(leaf.not_valid_after_utc)}" + (f"; CA injected into {webhook}" if webhook else ""))
    involved = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": secret[1], "namespace": secret[0]}}
    try:
        await record_event(api, involved, "CertificateRotated", message, datetime.now(UTC), component="harbinger-certs",
                           instance=socket.gethostname(), action="Rotate")
    except (ApiException, OSError, TimeoutError) as exc:
        print(f"warning: could not record the CertificateRotated Event: {exc}", file=sys.stderr)


async def _apply(args: argparse.Namespace, serving: ServingSet, secret: tuple[str, str] | None,
                 done: dict[str, Any]) -> None:
    kube = settings_from_flags(args, KUBE_FLAGS).kube
    async with api_client(kube.kubeconfig, kube.context) as api:
        if args.inject_webhook:
            await read_webhook_configuration(api, args.inject_webhook)  # fail before writing anything
            # The CA of the certificate still served stays trusted until the Secret holds the
            # new one, however many times this Job is retried in between.
            served = await served_ca(api, *secret) if secret else b""
            await inject_ca_bundle(api, args.inject_webhook, serving.ca_pem, served_ca_pem=served)
            done["injected_webhook"] = args.inject_webhook
            if not args.json:
                print(f"injected the CA into MutatingWebhookConfiguration {args.inject_webhook}")
        if secret:
            await store_secret(api, *secret, serving)
            done["secret"] = f"{secret[0]}/{secret[1]}"
            if not args.json:
                print(f"stored Secret {secret[0]}/{secret[1]}")
            await tell_rotated(api, secret, serving, done["hosts"], args.inject_webhook)
