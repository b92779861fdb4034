"""kube-scheduler extender v1 wire format (``k8s.io/kube-scheduler/extender/v1``).

The Go types carry no JSON tags, so the keys are the Go field names (``Pod``,
``NodeNames``, ``FailedNodes``, ``Host``, ``Score``); the pod inside is a normal
``v1.Pod`` in camelCase. Only what the extender reads of the pod is modelled: a full
Pod model would cost more to validate than the whole filter decision.

Answers are encoded by :func:`encode_filter_result` and :func:`encode_priorities`,
which write JSON these models read back (the tests check it) without building one
pydantic object per node (that alone would take milliseconds at 5,000 nodes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError
from pydantic_core import to_json

from harbinger.errors import InvalidInput

#: Extender scores run from 0 to 10; kube-scheduler multiplies them by the extender's
#: ``weight`` and by MaxNodeScore / MaxExtenderPriority (100 / 10) before adding them up.
MIN_EXTENDER_PRIORITY = 0
MAX_EXTENDER_PRIORITY = 10


class PodMetadata(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = ""
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PodStub(BaseModel):
    """The part of a ``v1.Pod`` the extender reads: its metadata."""

    model_config = ConfigDict(extra="ignore")

    metadata: PodMetadata = Field(default_factory=PodMetadata)


class ExtenderArgs(BaseModel):
    """What kube-scheduler POSTs to ``/filter`` and ``/prioritize``."""

    model_config = ConfigDict(extra="ignore")

    Pod: PodStub | None = None
    #: Full Node objects; sent only when the extender is not ``nodeCacheCapable``.
    Nodes: dict[str, Any] | None = None
    #: Candidate node names; sent when the extender is ``nodeCacheCapable``.
    NodeNames: list[str] | None = None


class ExtenderFilterResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Nodes: dict[str, Any] | None = None
    #: Never null in Harbinger's answers: null would filter out every node.
    NodeNames: list[str] | None = None
    FailedNodes: dict[str, str] = Field(default_factory=dict)
    FailedAndUnresolvableNodes: dict[str, str] = Field(default_factory=dict)
    Error: str = ""


class HostPriority(BaseModel):
    model_config = ConfigDict(extra="forbid")

    Host: str
    Score: int = Field(ge=MIN_EXTENDER_PRIORITY, le=MAX_EXTENDER_PRIORITY)


HostPriorityList = TypeAdapter(list[HostPriority])


class ErrorBody(BaseModel):
    """The body of a 400 from either verb: the scheduler logs the status code; ``Error``
    says to a human what was wrong."""

    NodeNames: list[str] = Field(default_factory=list)
    FailedNodes: dict[str, str] = Field(default_factory=dict)
    FailedAndUnresolvableNodes: dict[str, str] = Field(default_factory=dict)
    Error: str


def decode_args(body: bytes) -> ExtenderArgs:
    """Parse and check a request body; every refusal is an InvalidInput naming the field."""
    if not body:
        raise InvalidInput("empty request body; expected ExtenderArgs JSON", source="ExtenderArgs")
    try:
        args = ExtenderArgs.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise InvalidInput(f"{where}: {first['msg']}{more}", source="ExtenderArgs") from exc
    if args.Pod is None:
        raise InvalidInput("Pod is missing or null", source="ExtenderArgs")
    if args.NodeNames is None:
        if args.Nodes is not None:
            raise InvalidInput(
                "got Nodes but no NodeNames: configure this extender with nodeCacheCapable: true",
                source="ExtenderArgs",
            )
        raise InvalidInput("NodeNames is missing or null", source="ExtenderArgs")
    return args


def encode_names(names: Sequence[str]) -> bytes:
    """A JSON array of strings, in Rust (pydantic-core): a third of ``json.dumps``' time."""
    return to_json(names)


def encode_filter_result(
    node_names: Sequence[str],
    failed: dict[str, str] | None = None,
    unresolvable: dict[str, str] | None = None,
    error: str = "",
) -> bytes:
    return b"".join((
        b'{"NodeNames":', to_json(node_names),
        b',"FailedNodes":', to_json(failed or {}),
        b',"FailedAndUnresolvableNodes":', to_json(unresolvable or {}),
        b',"Error":', to_json(error), b"}",
    ))


_SCORE_TAILS = tuple(f'","Score":{score}}}' for score in range(MAX_EXTENDER_PRIORITY + 1))


def encode_priorities(hosts: Sequence[str], scores: Sequence[int]) -> bytes:
    """``[{"Host": h, "Score": s}, ...]`` for scores already in 0..10."""
    if not hosts:
        return b"[]"
    joined = "".join(hosts)
    if '"' in joined or "\\" in joined or not joined.isprintable():
        # Names that need escaping (never a real node's: those are DNS subdomains).
        return to_json([{"Host": h, "Score": s} for h, s in zip(hosts, scores, strict=True)])
    # C-level maps and one join instead of a Python loop over thousands of nodes: each
    # item is 'name","Score":N}', glued with ',{"Host":"'.
    items = map(str.__add__, hosts, map(_SCORE_TAILS.__getitem__, scores))
    return ('[{"Host":"' + ',{"Host":"'.join(items) + "]").encode()


def encode_error(message: str) -> bytes:
    return ErrorBody(Error=message).model_dump_json().encode()
