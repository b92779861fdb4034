"""The one place Harbinger talks to the Kubernetes API from: client construction and
watch-fed caches (reflectors).

Hot paths (admission, scheduling) never call the API; they read caches that a
:class:`Reflector` keeps current with list + watch, as client-go's informers do.
Objects are kept as plain dicts (the JSON the apiserver sent): deserializing into
kubernetes-asyncio's model classes costs far more than the hot paths can afford at
thousands of nodes, and the components read only a few fields.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from kubernetes_asyncio import client, config, watch
from kubernetes_asyncio.client.exceptions import ApiException
from prometheus_client import Counter

from harbinger.clock import format_time
from harbinger.errors import Conflict, InvalidInput, KubeApiError, NotFound

log = logging.getLogger(__name__)

KubeObject = dict[str, Any]

EVENT_ERRORS = Counter("harbinger_reflector_event_errors_total",
                       "Watched objects a cache's handler could not take (logged and skipped)", ["reflector"])

#: Every API call that does not name its own timeout gets this one (seconds, the whole
#: request). kubernetes-asyncio's default is no timeout at all, so a half-open connection to
#: the apiserver would hang a planner run or a cache forever.
REQUEST_TIMEOUT_SECONDS = 30.0
#: Content type for a JSON merge patch given as a dict. kubernetes-asyncio picks a JSON patch
#: for custom objects (they take no strategic merge), which a dict body is not.
MERGE_PATCH = "application/merge-patch+json"
#: A watch may stay quiet for its whole server-side timeout; it is cut this long after it.
WATCH_GRACE_SECONDS = 30.0


def with_default_timeout(api: client.ApiClient, seconds: float = REQUEST_TIMEOUT_SECONDS) -> client.ApiClient:
    """``api``, whose calls without ``_request_timeout`` time out after ``seconds``."""
    rest = api.rest_client
    request = rest.request

    async def timed(*args: Any, **kwargs: Any) -> Any:
        kwargs["_request_timeout"] = kwargs.get("_request_timeout") or seconds
        return await request(*args, **kwargs)

    rest.request = timed  # type: ignore[method-assign]
    return api


async def new_api_client(kubeconfig: Path | str | None = None, context: str | None = None, *,
                         request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS) -> client.ApiClient:
    """An ApiClient from, in order: ``kubeconfig``, ``$KUBECONFIG``, ``~/.kube/config``, in-cluster;
    every call on it times out (:data:`REQUEST_TIMEOUT_SECONDS`) unless it names its own timeout."""
    configuration = client.Configuration()
    path = str(kubeconfig) if kubeconfig else os.environ.get("KUBECONFIG")
    default = Path.home() / ".kube" / "config"
    if not path and default.exists():
        path = str(default)
    if path:
        if not Path(path).exists():
            raise InvalidInput("kubeconfig file does not exist", source=path)
        await config.load_kube_config(config_file=path, context=context, client_configuration=configuration)
    else:
        try:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except config.ConfigException as exc:
            raise InvalidInput(
                "no kubeconfig given, none at $KUBECONFIG or ~/.kube/config, and not running in a cluster"
            ) from exc
    return with_default_timeout(client.ApiClient(configuration=configuration), request_timeout_seconds)


@contextlib.asynccontextmanager
async def api_client(kubeconfig: Path | str | None = None, context: str | None = None) -> AsyncIterator[
    client.ApiClient
]:
    """``async with api_client(...) as api:`` closes the connection pool on exit."""
    api = await new_api_client(kubeconfig, context)
    try:
        yield api
    finally:
        await api.close()


async def read_json(call: Awaitable[Any]) -> dict[str, Any]:
    """The JSON body of a kubernetes-asyncio call made with ``_preload_content=False``.

    Without preloading, the client hands back the HTTP response whatever its status (a
    404 arrives as a ``Status`` body, not an exception), so every such call goes through
    here, which raises :class:`ApiException` for an error status as the preloading path
    does. Raw JSON is what the hot paths want: model deserialization costs far more.
    """
    response = await call
    text = await response.read()
    if response.status >= 400:
        error = ApiException(status=response.status, reason=f"{response.reason}: {text[:300].decode(errors='replace')}")
        error.body = text
        raise error
    body: dict[str, Any] = json.loads(text)
    return body


def api_error(exc: ApiException, action: str, obj: str) -> KubeApiError:
    """The typed error for a refused call: :class:`NotFound` (404), :class:`Conflict` (409),
    else :class:`KubeApiError`; each names the action, the object and the apiserver's reason."""
    status = int(exc.status or 0)
    reason = _status_message(exc.body) or str(exc.reason or "")
    kind = NotFound if status == 404 else Conflict if status == 409 else KubeApiError
    return kind(action, obj, status, reason)


def _status_message(body: object) -> str:
    """The ``message`` of a ``Status`` body, when the body is one."""
    try:
        message = json.loads(body).get("message") if isinstance(body, str | bytes) else None
    except (ValueError, AttributeError):
        return ""
    return str(message) if message else ""


async def get_or_none(call: Awaitable[Any], obj: str) -> dict[str, Any] | None:
    """A GET made with ``_preload_content=False`` as raw JSON (no field lost to the client's
    models); None when the object does not exist, a typed error for any other refusal."""
    try:
        return await read_json(call)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise api_error(exc, "read", obj) from exc


def object_key(obj: KubeObject) -> str:
    """``namespace/name`` for namespaced objects, ``name`` for cluster-scoped ones."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    return f"{namespace}/{meta.get('name')}" if namespace else str(meta.get("name"))


EventHandler = Callable[[str, KubeObject, KubeObject | None], None]
"""Called with (event type ``ADDED``/``MODIFIED``/``DELETED``, new object, old object or None)."""


class Reflector:
    """Keeps ``store`` equal to the server's view of one resource: list, then watch from the
    list's resourceVersion; resume after a dropped watch; relist on 410 Gone.

    ``list_fn`` is a kubernetes-asyncio list method (``CoreV1Api.list_node``,
    ``CoreV1Api.list_pod_for_all_namespaces``, ...), with ``list_kwargs`` such as
    ``field_selector``. ``on_event`` sees every change (including the synthetic ADDED and
    DELETED a relist produces) and must be quick: it runs on the event loop.
    """

    def __init__(
        self,
        list_fn: Callable[..., Awaitable[Any]],
        *,
        name: str,
        on_event: EventHandler | None = None,
        watch_timeout_seconds: int = 300,
        **list_kwargs: Any,
    ) -> None:
        self.name = name
        self.store: dict[str, KubeObject] = {}
        self.synced = asyncio.Event()
        self.resource_version: str | None = None
        self._list_fn = list_fn
        self._list_kwargs = list_kwargs
        self._on_event = on_event
        self._watch_timeout = watch_timeout_seconds
        self._task: asyncio.Task[None] | None = None
        #: Monotonic time the apiserver last answered this reflector (a list, a watch event or
        #: bookmark, a watch it ended on time): how stale ``store`` may be.
        self.last_contact: float | None = None

    def start(self) -> asyncio.Task[None]:
        self._task = asyncio.create_task(self.run(), name=f"reflector-{self.name}")
        return self._task

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def healthy(self, max_age_seconds: float | None = None) -> bool:
        """Synced, and heard from the apiserver within ``max_age_seconds`` (default: one watch
        timeout plus the grace, the longest a sound watch stays quiet): readiness."""
        if not self.synced.is_set() or self.last_contact is None:
            return False
        limit = max_age_seconds if max_age_seconds is not None else self._watch_timeout + 2 * WATCH_GRACE_SECONDS
        return time.monotonic() - self.last_contact <= limit

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    async def run(self) -> None:
        backoff = 0.2
        while True:
            try:
                if self.resource_version is None:
                    await self._relist()
                await self._watch()
                self.last_contact = time.monotonic()  # the apiserver ended the watch on time
                backoff = 0.2
            except asyncio.CancelledError:
                raise
            except ApiException as exc:
                if exc.status == 410:
                    # Our resourceVersion fell out of the apiserver's watch cache: only a
                    # fresh list can tell us what we missed.
                    log.info("reflector %s: resourceVersion expired, relisting", self.name)
                    self.resource_version = None
                    continue
                log.warning("reflector %s: API error %s, retrying in %.1fs", self.name, exc.status, backoff)
            except Exception as exc:  # a dropped connection must not end the cache
                log.warning("reflector %s: %s, retrying in %.1fs", self.name, exc, backoff)
            await asyncio.sleep(backoff * (1 + random.random() / 2))
            backoff = min(backoff * 2, 10.0)

    async def _relist(self) -> None:
        body = await read_json(self._list_fn(_preload_content=False, **self._list_kwargs))
        fresh = {object_key(item): item for item in body.get("items") or []}
        old = self.store
        self.store = fresh
        self.resource_version = body["metadata"]["resourceVersion"]
        self.last_contact = time.monotonic()
        for key, obj in fresh.items():
            self._tell("MODIFIED" if key in old else "ADDED", obj, old.get(key))
        for key, obj in old.items():
            if key not in fresh:
                self._tell("DELETED", obj, obj)
        self.synced.set()

    def _tell(self, kind: str, obj: KubeObject, old: KubeObject | None) -> None:
        """Hand one change to ``on_event``. An object the handler cannot take (a bug, or a
        value no parser foresaw) is logged and counted, and the cache goes on: one tenant's
        object must not stop the watch, or fail every relist after it, for everyone."""
        if self._on_event is None:
            return
        try:
            self._on_event(kind, obj, old)
        except Exception:
            EVENT_ERRORS.labels(self.name).inc()
            log.exception("reflector %s: %s %s could not be handled; skipped", self.name, kind,
                          object_key(obj) if isinstance(obj, dict) else "(not an object)")

    async def _watch(self) -> None:
        stream = watch.Watch(return_type="object")
        try:
            async for event in stream.stream(
                self._list_fn,
                resource_version=self.resource_version,
                timeout_seconds=self._watch_timeout,
                allow_watch_bookmarks=True,
                # The apiserver ends the watch after timeout_seconds; a connection that went
                # half-open never does, and the cache would go stale with no error.
                _request_timeout=aiohttp.ClientTimeout(total=self._watch_timeout + WATCH_GRACE_SECONDS,
                                                       sock_connect=REQUEST_TIMEOUT_SECONDS),
                **self._list_kwargs,
            ):
                self.last_contact = time.monotonic()
                kind = event["type"]
                obj: KubeObject = event["raw_object"]
                self.resource_version = obj.get("metadata", {}).get("resourceVersion", self.resource_version)
                if kind == "BOOKMARK":
                    continue
                key = object_key(obj)
                old = self.store.get(key)
                if kind == "DELETED":
                    self.store.pop(key, None)
                else:
                    self.store[key] = obj
                self._tell(kind, obj, old)
        finally:
            await stream.close()


def condition(kind: str, ok: bool, reason: str, message: str, now: datetime) -> dict[str, str]:
    """One entry of an object's ``status.conditions``, as Kubernetes writes them (reason at most
    63 characters, message at most 1 KiB, as Harbinger's CRD schemas bound them)."""
    return {"type": kind, "status": "True" if ok else "False", "reason": reason[:63], "message": message[:1024],
            "lastTransitionTime": format_time(now)}
