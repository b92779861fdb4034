"""The extender's HTTP server and the watches that feed it.

``POST /filter`` and ``POST /prioritize`` answer kube-scheduler; ``/healthz``,
``/readyz`` and ``/metrics`` come from :mod:`harbinger.httpserver`. Until both watch
caches have listed once, the verbs answer 503: with ``ignorable: true`` the scheduler
then places pods as if the extender were absent, instead of the extender rejecting
every node it has not heard of yet.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiohttp import web
from kubernetes_asyncio import client

from extender import metrics
from extender.answer import Answer, Extender
from extender.state import ClusterState
from extender.wire import encode_error
from harbinger.httpserver import add_standard_routes, serve
from harbinger.kube import Reflector, api_client
from harbinger.settings import Settings

#: Pods that hold bandwidth: bound and not finished. The watch then reports a pod that
#: finishes as DELETED, which is exactly when its bandwidth comes free.
BOUND_PODS_SELECTOR = "spec.nodeName!=,status.phase!=Succeeded,status.phase!=Failed"
#: A request carries one pod and the candidate node names; 5,000 names are ~100 KiB,
#: and a pod may be up to etcd's 1.5 MiB.
MAX_BODY_BYTES = 16 * 1024 * 1024

EXTENDER: web.AppKey[Extender] = web.AppKey("extender", Extender)


def make_app(extender: Extender, *, ready: Callable[[], bool]) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[EXTENDER] = extender

    def verb(name: str, answer: Callable[[bytes], Answer]) -> Callable[[web.Request], object]:
        async def handle(request: web.Request) -> web.Response:
            if not ready():
                metrics.REQUESTS.labels(verb=name, outcome="not_ready").inc()
                return web.Response(status=503, body=encode_error("the extender's cache has not synced yet"),
                                    content_type="application/json")
            status, body = answer(await request.read())
            return web.Response(status=status, body=body, content_type="application/json")

        return handle

    app.router.add_post("/filter", verb("filter", extender.filter))  # type: ignore[arg-type]
    app.router.add_post("/prioritize", verb("prioritize", extender.prioritize))  # type: ignore[arg-type]
    add_standard_routes(app, ready=ready)
    return app


class ClusterWatch:
    """Three reflectors (namespaces, nodes, bound pods) feeding one :class:`ClusterState`."""

    def __init__(self, state: ClusterState, api: client.ApiClient) -> None:
        core = client.CoreV1Api(api)
        # Namespaces first: which pods count depends on their namespace's opt-in.
        self.namespaces = Reflector(core.list_namespace, name="extender-namespaces",
                                    on_event=state.on_namespace_event)
        self.nodes = Reflector(core.list_node, name="extender-nodes", on_event=state.on_node_event)
        self.pods = Reflector(core.list_pod_for_all_namespaces, name="extender-pods",
                              on_event=state.on_pod_event, field_selector=BOUND_PODS_SELECTOR)
        metrics.NODES.set_function(lambda: state.node_count)
        metrics.PODS.set_function(lambda: state.tracked_pods)
        metrics.ASSUMED.set_function(lambda: state.assumed_count)

    @property
    def reflectors(self) -> tuple[Reflector, ...]:
        return self.namespaces, self.nodes, self.pods

    def synced(self) -> bool:
        """Ready: every cache has listed, and none has lost the apiserver for longer than a
        watch may stay quiet (a stale cache would place pods on a picture of the past)."""
        return all(r.healthy() for r in self.reflectors)

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.gather(*(r.wait_synced(timeout) for r in self.reflectors))


@contextlib.asynccontextmanager
async def watching(state: ClusterState, api: client.ApiClient) -> AsyncIterator[ClusterWatch]:
    watch = ClusterWatch(state, api)
    for reflector in watch.reflectors:
        reflector.start()
    try:
        yield watch
    finally:
        for reflector in reversed(watch.reflectors):
            await reflector.stop()


async def run_extender(settings: Settings, *, stop: asyncio.Event | None = None) -> None:
    """Watch the cluster and answer the scheduler until SIGTERM (or ``stop``)."""
    own = settings.extender
    state = ClusterState(assumed_placement_seconds=own.assumed_placement_seconds, scheduler_name=own.scheduler_name)
    extender = Extender(state, admit_undeclared=own.admit_undeclared_nodes)
    async with api_client(settings.kube.kubeconfig, settings.kube.context) as api, watching(state, api) as watch:
        await serve(
            make_app(extender, ready=watch.synced),
            host=own.host,
            port=own.port,
            cert_dir=own.cert_dir,
            cert_reload_seconds=own.cert_reload_seconds,
            shutdown_grace_seconds=own.shutdown_grace_seconds,
            stop=stop,
        )
