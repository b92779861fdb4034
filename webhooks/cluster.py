"""The webhook's view of the cluster: namespaces and Deployments, read from watch-fed
stores, never fetched during a review.

:class:`WatchedCluster` keeps two :class:`harbinger.kube.Reflector` caches (every
namespace, every Deployment) current; :class:`ClusterView` answers the hot path's
questions from whichever stores it is given, so the same code serves the real
apiserver and a test that fills the stores by hand.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger import contract
from harbinger.kube import KubeObject, Reflector, new_api_client
from harbinger.policy import CLUSTER_POLICIES, POLICIES, PolicyCache
from webhooks.review import Pod

log = logging.getLogger(__name__)

#: The label the ReplicaSet controller puts on a Deployment's pods; its value is the
#: suffix of the ReplicaSet's name, ``<deployment>-<pod-template-hash>``.
POD_TEMPLATE_HASH: str = "pod-template-hash"


class Store(Protocol):
    """A ``key -> object`` store; :class:`Reflector` is one. Read ``store`` on every access:
    a relist replaces the dict."""

    @property
    def store(self) -> dict[str, KubeObject]: ...


@dataclass
class StaticStore:
    """A store filled by hand (tests, benchmarks)."""

    store: dict[str, KubeObject] = field(default_factory=dict)

    def put(self, obj: KubeObject) -> None:
        meta = obj["metadata"]
        key = f"{meta['namespace']}/{meta['name']}" if meta.get("namespace") else meta["name"]
        self.store[key] = obj


def owning_deployment(pod: Pod) -> str | None:
    """The Deployment that owns a pod at CREATE, from its controlling ReplicaSet's name
    minus the ``-<pod-template-hash>`` suffix (no ReplicaSet cache needed)."""
    template_hash = (pod.metadata.labels or {}).get(POD_TEMPLATE_HASH)
    if not template_hash:
        return None
    for owner in pod.metadata.owner_references or []:
        if owner.kind == "ReplicaSet" and owner.controller is not False:
            suffix = "-" + template_hash
            if owner.name.endswith(suffix) and len(owner.name) > len(suffix):
                return owner.name[: -len(suffix)]
    return None


class ClusterView:
    def __init__(self, namespaces: Store, deployments: Store, policies: PolicyCache | None = None) -> None:
        self._namespaces = namespaces
        self._deployments = deployments
        #: HarbingerPolicies, by namespace (empty when the CRD is not installed).
        self.policies = policies or PolicyCache()

    def namespace_labels(self, name: str) -> dict[str, str] | None:
        """The namespace's labels, or None when the cache has not seen it yet."""
        namespace = self._namespaces.store.get(name)
        if namespace is None:
            return None
        labels = (namespace.get("metadata") or {}).get("labels") or {}
        return dict(labels)

    def deployment(self, namespace: str, name: str) -> KubeObject | None:
        return self._deployments.store.get(f"{namespace}/{name}")


def deployment_annotations(deployment: KubeObject | None) -> dict[str, str]:
    if deployment is None:
        return {}
    return dict((deployment.get("metadata") or {}).get("annotations") or {})


def deployment_replicas(deployment: KubeObject | None) -> Any:
    """``spec.replicas`` as the apiserver stores it (defaulted to 1)."""
    if deployment is None:
        return None
    return (deployment.get("spec") or {}).get("replicas", 1)


class _ReflectorStore:
    """The store of a reflector that starts later; empty until then."""

    def __init__(self) -> None:
        self.reflector: Reflector | None = None

    @property
    def store(self) -> dict[str, KubeObject]:
        return self.reflector.store if self.reflector else {}


class WatchedCluster:
    """Reflectors over one API client: namespaces, Deployments, and HarbingerPolicies when
    their CRD is installed (checked once at start). ``view`` can be handed out before
    :meth:`start`; it reads empty until the first lists arrive. Given ``api``, it uses that
    client (and leaves closing it to the caller); else it makes its own."""

    def __init__(self, kubeconfig: Path | None = None, context: str | None = None, *,
                 api: client.ApiClient | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._context = context
        self._given_api = api
        self._api: client.ApiClient | None = None
        self._namespaces = _ReflectorStore()
        self._deployments = _ReflectorStore()
        self._policies: list[Reflector] = []
        self.view = ClusterView(self._namespaces, self._deployments)

    def _reflectors(self) -> list[Reflector]:
        return [r for r in (self._namespaces.reflector, self._deployments.reflector, *self._policies) if r]

    async def start(self) -> None:
        self._api = self._given_api or await new_api_client(self._kubeconfig, self._context)
        self._namespaces.reflector = Reflector(client.CoreV1Api(self._api).list_namespace, name="namespaces")
        self._deployments.reflector = Reflector(
            client.AppsV1Api(self._api).list_deployment_for_all_namespaces, name="deployments"
        )
        served = await _served_policies(self._api)
        custom = client.CustomObjectsApi(self._api)
        for plural in (CLUSTER_POLICIES, POLICIES):
            if plural not in served:
                log.warning("the %s.%s CRD is not installed: those policies are not read; apply "
                            "manifests/base/crds and restart", plural, contract.API_GROUP)
                continue
            self._policies.append(Reflector(functools.partial(custom.list_cluster_custom_object, contract.API_GROUP,
                                                              contract.API_VERSION, plural),
                                            name=plural, on_event=self.view.policies.on_event))
        for reflector in self._reflectors():
            reflector.start()

    def synced(self) -> bool:
        reflectors = self._reflectors()
        return len(reflectors) >= 2 and all(r.synced.is_set() for r in reflectors)

    def fresh(self) -> bool:
        """Synced, and neither cache has lost the apiserver for longer than a watch may stay
        quiet: readiness. A stale webhook is better out of the Service (pods are then admitted
        unstamped, ``failurePolicy: Ignore``) than stamping from a picture of the past."""
        reflectors = self._reflectors()
        return len(reflectors) >= 2 and all(r.healthy() for r in reflectors)

    async def wait_synced(self, timeout: float) -> None:
        for reflector in self._reflectors():
            await reflector.wait_synced(timeout)

    async def stop(self) -> None:
        for reflector in self._reflectors():
            await reflector.stop()
        if self._api and self._api is not self._given_api:
            await self._api.close()
        self._api = None


async def _served_policies(api: client.ApiClient) -> set[str]:
    """Which policy resources the apiserver serves (whose CRDs are installed)."""
    try:
        resources = await client.CustomObjectsApi(api).get_api_resources(contract.API_GROUP, contract.API_VERSION)
    except ApiException as exc:
        if exc.status == 404:
            return set()
        raise
    return {r.name for r in resources.resources or []} & {POLICIES, CLUSTER_POLICIES}
