"""What the webhook gives back on ``harbinger uninstall`` (:mod:`harbinger.uninstall`): its
configuration, so no pod is stamped any more, and the pods it sent to Harbinger's scheduler
that are still waiting for it (their controllers make them again, unstamped)."""

from __future__ import annotations

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger.uninstall import Scope


async def give_back(api: client.ApiClient, scope: Scope) -> list[str]:
    admission = client.AdmissionregistrationV1Api(api)
    done = []
    configs = await admission.list_mutating_webhook_configuration(label_selector=scope.selector)
    for config in configs.items:
        await admission.delete_mutating_webhook_configuration(config.metadata.name)
        done.append(f"MutatingWebhookConfiguration {config.metadata.name} deleted")
    scheduler = scope.settings.webhook.scheduler_name or scope.settings.extender.scheduler_name
    core = client.CoreV1Api(api)
    pods = await core.list_pod_for_all_namespaces(field_selector="status.phase=Pending")
    for pod in pods.items:
        meta = pod.metadata
        if (pod.spec.scheduler_name != scheduler or not meta.owner_references
                or (scope.namespaces is not None and meta.namespace not in scope.namespaces)):
            continue
        try:
            await core.delete_namespaced_pod(meta.name, meta.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
        done.append(f"Pending pod {meta.namespace}/{meta.name} (waiting for {scheduler}) deleted, to be made again")
    return done
