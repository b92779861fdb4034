"""What chaos gives back on ``harbinger uninstall`` (:mod:`harbinger.uninstall`): every fault,
expired or not: pods' fault annotations removed, VirtualServices restored (or deleted where
chaos made them)."""

from __future__ import annotations

from kubernetes_asyncio import client

from chaos.backends.istio import sweep_virtual_services
from chaos.backends.pods import sweep_pods
from harbinger.uninstall import Scope


async def give_back(api: client.ApiClient, scope: Scope) -> list[str]:
    pods = await sweep_pods(api, everything=True)
    services = await sweep_virtual_services(api, everything=True)
    return [f"{n} {what} restored (chaos faults removed)" for n, what in
            ((pods, "pod(s)"), (services, "VirtualService(s)")) if n]
