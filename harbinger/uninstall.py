"""``harbinger uninstall``: give back everything Harbinger changed in a cluster, so that
``kubectl delete -k manifests/`` leaves it as it was.

In order, because each step must not be undone by what is still running:

1. the webhook's configuration goes first (no pod is stamped after this, and none is refused
   while the webhook's own pods go); pods left Pending for Harbinger's scheduler are deleted so
   their controllers make them again, unstamped;
2. Harbinger's own Deployments are scaled to zero, and waited for, so that no planner raises a
   floor and no chaos controller injects a fault while the rest is given back;
3. every replica floor the planner raised is restored to the one the team declared;
4. every chaos fault is removed (pods' annotations, VirtualServices restored or deleted).

Each component gives back its own changes (``<component>/uninstall.py``, found by name, as the
commands are): the core knows the order, not the components. A step that fails is reported and
the others still run; the exit code says whether everything was given back.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from harbinger.flags import KUBE_FLAGS, add_json_flag, add_kube_flags
from harbinger.kube import new_api_client, read_json
from harbinger.settings import Settings, settings_from_flags

PART_OF = "app.kubernetes.io/part-of=harbinger"


@dataclass(frozen=True)
class Scope:
    """What an uninstall covers."""

    settings: Settings
    #: Label selector of Harbinger's own objects (its Deployments, its webhook configuration).
    selector: str = PART_OF
    #: Namespaces whose floors and faults are given back; None: every namespace.
    namespaces: frozenset[str] | None = None


GiveBack = Callable[[client.ApiClient, Scope], Awaitable[list[str]]]

#: (what, module, function): each ``async def give_back(api, scope) -> list[str]`` says what it did.
STEPS: tuple[tuple[str, str, str], ...] = (
    ("webhook configuration", "webhooks.uninstall", "give_back"),
    ("Harbinger's own Deployments", "harbinger.uninstall", "stop_components"),
    ("replica floors", "scaler.uninstall", "give_back"),
    ("chaos faults", "chaos.uninstall", "give_back"),
)


async def stop_components(api: client.ApiClient, scope: Scope, *, timeout_seconds: float = 120.0) -> list[str]:
    """Scale Harbinger's Deployments to zero and wait until their pods are gone."""
    apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
    listed = await read_json(apps.list_deployment_for_all_namespaces(label_selector=scope.selector,
                                                                     _preload_content=False))
    done = []
    for item in listed.get("items") or []:
        meta = item["metadata"]
        if (item.get("spec") or {}).get("replicas", 1) == 0:
            continue
        await apps.patch_namespaced_deployment_scale(meta["name"], meta["namespace"], {"spec": {"replicas": 0}})
        done.append(f"Deployment {meta['namespace']}/{meta['name']} scaled to 0")
    deadline = time.monotonic() + timeout_seconds
    while done:
        pods = await core.list_pod_for_all_namespaces(label_selector=scope.selector)
        if not [p for p in pods.items if p.status.phase in ("Pending", "Running")
                and p.metadata.deletion_timestamp is None and _owned_by_deployment(p)]:
            break
        if time.monotonic() > deadline:
            done.append(f"some of Harbinger's pods were still running after {timeout_seconds:g} s")
            break
        await asyncio.sleep(1.0)
    return done


def _owned_by_deployment(pod: Any) -> bool:
    return any(ref.kind == "ReplicaSet" for ref in (pod.metadata.owner_references or []))


def _load(module: str, function: str) -> GiveBack:
    return cast(GiveBack, getattr(importlib.import_module(module), function))


async def uninstall(api: client.ApiClient, scope: Scope) -> tuple[list[str], list[str]]:
    """(what was given back, what failed): every step runs, whatever the others did."""
    done: list[str] = []
    failed: list[str] = []
    for what, module, function in STEPS:
        try:
            done.extend(await _load(module, function)(api, scope))
        except (ApiException, OSError, TimeoutError) as exc:
            reason = f"{exc.status} {exc.reason}" if isinstance(exc, ApiException) else str(exc)
            failed.append(f"{what}: {reason}")
    return done, failed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_kube_flags(parser)
    parser.add_argument("--selector", default=PART_OF,
                        help=f"label selector of Harbinger's own objects (default: {PART_OF})")
    parser.add_argument("--namespace", action="append", dest="namespaces", metavar="NAMESPACE",
                        help="give back floors only in this namespace (repeatable; default: every namespace)")
    add_json_flag(parser)


def run(args: argparse.Namespace) -> int:
    import json

    scope = Scope(settings_from_flags(args, KUBE_FLAGS), args.selector,
                  frozenset(args.namespaces) if args.namespaces else None)

    async def main() -> tuple[list[str], list[str]]:
        api = await new_api_client(scope.settings.kube.kubeconfig, scope.settings.kube.context)
        try:
            return await uninstall(api, scope)
        finally:
            await api.close()

    done, failed = asyncio.run(main())
    if args.json:
        print(json.dumps({"given_back": done, "failed": failed}))
    else:
        for line in done:
            print(line)
        for line in failed:
            print(f"FAILED {line}")
        print("nothing left to give back; now: kubectl delete -k manifests/" if not failed else
              "some changes were not given back (above); fix and run harbinger uninstall again")
    return 0 if not failed else 1
