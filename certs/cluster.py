"""Putting certificates on the cluster: a ``kubernetes.io/tls`` Secret, and the CA into a
MutatingWebhookConfiguration's ``caBundle``.

Both writes are conditional on the ``resourceVersion`` read just before (a JSONPatch
``test`` op, or a replace carrying it), so a concurrent writer is never overwritten:
the write is retried on the fresh object instead.
"""

from __future__ import annotations

import base64
import logging
from typing import Any

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from certs.bundle import merge_bundle
from certs.serving_set import ServingSet
from harbinger.errors import Conflict, InvalidInput
from harbinger.httpserver import CA_FILE, CERT_FILE, KEY_FILE
from harbinger.kube import api_error, get_or_none

log = logging.getLogger(__name__)

_ATTEMPTS = 5


def parse_secret_ref(text: str) -> tuple[str, str]:
    """``NAMESPACE/NAME``."""
    namespace, _, name = text.partition("/")
    if not namespace or not name or "/" in name:
        raise InvalidInput(f"{text!r} is not NAMESPACE/NAME", source="--secret")
    return namespace, name


async def read_webhook_configuration(api: client.ApiClient, name: str) -> dict[str, Any]:
    admission = client.AdmissionregistrationV1Api(api)
    what = f"MutatingWebhookConfiguration {name!r}"
    config = await get_or_none(admission.read_mutating_webhook_configuration(name, _preload_content=False), what)
    if config is None:
        raise InvalidInput(f"{what} does not exist", source="--inject-webhook")
    return config


async def served_ca(api: client.ApiClient, namespace: str, name: str) -> bytes:
    """The CA (``ca.crt``) of the certificate the webhook serves now, from its Secret; empty
    when there is none yet."""
    core = client.CoreV1Api(api)
    secret = await get_or_none(core.read_namespaced_secret(name, namespace, _preload_content=False),
                               f"Secret {namespace}/{name}")
    encoded = ((secret or {}).get("data") or {}).get(CA_FILE) or ""
    try:
        return base64.b64decode(encoded, validate=True)
    except ValueError:
        return b""


async def inject_ca_bundle(api: client.ApiClient, name: str, ca_pem: bytes, *, served_ca_pem: bytes = b"") -> bytes:
    """Put ``ca_pem`` (plus the CA of what is served now and the previous, still-valid CA) into
    every webhook of the MutatingWebhookConfiguration ``name``; returns the bundle written."""
    admission = client.AdmissionregistrationV1Api(api)
    for _attempt in range(_ATTEMPTS):
        config = await read_webhook_configuration(api, name)
        webhooks = config.get("webhooks") or []
        if not webhooks:
            raise InvalidInput(f"MutatingWebhookConfiguration {name!r} has no webhooks", source="--inject-webhook")
        patch: list[dict[str, Any]] = [
            {"op": "test", "path": "/metadata/resourceVersion", "value": config["metadata"]["resourceVersion"]}
        ]
        bundle = b""
        for index, webhook in enumerate(webhooks):
            previous = base64.b64decode((webhook.get("clientConfig") or {}).get("caBundle") or "")
            bundle = merge_bundle(ca_pem, previous, served_ca_pem=served_ca_pem)
            patch.append({"op": "add", "path": f"/webhooks/{index}/clientConfig/caBundle",
                          "value": base64.b64encode(bundle).decode()})
        try:
            # A list body is sent as application/json-patch+json.
            await admission.patch_mutating_webhook_configuration(name, patch)
            return bundle
        except ApiException as exc:
            # A failed 'test' (someone wrote in between) comes back as 422 or 409: read again.
            if exc.status not in (409, 422):
                raise api_error(exc, "patch", f"MutatingWebhookConfiguration {name!r}") from exc
            log.info("MutatingWebhookConfiguration %s changed while patching; retrying", name)
    raise Conflict("patch", f"MutatingWebhookConfiguration {name!r}", 409,
                   f"it kept changing; gave up after {_ATTEMPTS} tries")


async def store_secret(api: client.ApiClient, namespace: str, name: str, serving: ServingSet) -> None:
    """Create or update the ``kubernetes.io/tls`` Secret with tls.crt, tls.key and ca.crt."""
    core = client.CoreV1Api(api)
    data = {key: base64.b64encode(value).decode() for key, value in
            ((CERT_FILE, serving.cert_pem), (KEY_FILE, serving.key_pem), (CA_FILE, serving.ca_pem))}
    labels = {"app.kubernetes.io/part-of": "harbinger"}
    for _attempt in range(_ATTEMPTS):
        current = await get_or_none(core.read_namespaced_secret(name, namespace, _preload_content=False),
                                    f"Secret {namespace}/{name}")
        try:
            if current is None:
                await core.create_namespaced_secret(namespace, client.V1Secret(
                    metadata=client.V1ObjectMeta(name=name, namespace=namespace, labels=labels),
                    type="kubernetes.io/tls", data=data))
                return
            if current.get("type") != "kubernetes.io/tls":
                raise InvalidInput(f"Secret {namespace}/{name} exists with type {current.get('type')!r}, "
                                   "not kubernetes.io/tls; delete it or name another", source="--secret")
            meta = current["metadata"]
            await core.replace_namespaced_secret(name, namespace, client.V1Secret(
                metadata=client.V1ObjectMeta(
                    name=name, namespace=namespace, labels={**(meta.get("labels") or {}), **labels},
                    annotations=meta.get("annotations"),
                    resource_version=meta["resourceVersion"],  # conflicts (409) if it changed since
                ),
                type="kubernetes.io/tls", data=data))
            return
        except ApiException as exc:
            if exc.status == 404 and "namespaces" in str(exc.body):
                raise InvalidInput(f"namespace {namespace!r} does not exist", source="--secret") from exc
            if exc.status != 409:
                raise api_error(exc, "write", f"Secret {namespace}/{name}") from exc
    raise Conflict("write", f"Secret {namespace}/{name}", 409, f"it kept changing; gave up after {_ATTEMPTS} tries")
