"""Raw JSON answers from kubernetes-asyncio calls made with ``_preload_content=False``.

Without preloading, the client hands back the HTTP response whatever its status (a 404
arrives as a ``Status`` body, not an exception), so every such call goes through
:func:`read_json`, which raises :class:`ApiException` for an error status like the
preloading path does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable
from typing import Any

from kubernetes_asyncio.client.exceptions import ApiException


async def read_json(call: Awaitable[Any]) -> dict[str, Any]:
    response = await call
    text = await response.read()
    if response.status >= 400:
        raise ApiException(status=response.status, reason=response.reason)
    body: dict[str, Any] = json.loads(text)
    return body
