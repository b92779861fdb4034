"""AdmissionReview v1 (``admission.k8s.io/v1``): the request the apiserver sends and the
response it expects, as pydantic models, plus the slice of a Pod the webhook reads.

Only the fields Harbinger uses are typed; everything else is carried through untouched
(``extra="allow"``), so a newer apiserver adding fields never makes a review fail.
A body that does not validate raises :class:`harbinger.errors.InvalidInput` naming the
first offending field (``request.uid: Field required``), which the server maps to 400.
"""

from __future__ import annotations

import base64
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import to_json

from harbinger.errors import InvalidInput

API_VERSION: Final = "admission.k8s.io/v1"
KIND: Final = "AdmissionReview"

JSONPatch = list[dict[str, Any]]


class _Open(BaseModel):
    """Known fields typed, unknown fields kept."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class GroupVersionKind(_Open):
    group: str = ""
    version: str
    kind: str


class GroupVersionResource(_Open):
    group: str = ""
    version: str
    resource: str


class AdmissionRequest(_Open):
    uid: str = Field(min_length=1)
    kind: GroupVersionKind
    resource: GroupVersionResource
    sub_resource: str | None = Field(None, alias="subResource")
    name: str | None = None
    namespace: str | None = None
    operation: Literal["CREATE", "UPDATE", "DELETE", "CONNECT"]
    object: dict[str, Any] | None = None
    dry_run: bool = Field(False, alias="dryRun")

    @property
    def is_pod(self) -> bool:
        """A Pod itself, not a subresource such as ``pods/exec`` or ``pods/binding``."""
        return (
            self.kind.group == ""
            and self.kind.kind == "Pod"
            and self.resource.resource == "pods"
            and not self.sub_resource
        )


class AdmissionReviewRequest(_Open):
    api_version: Literal["admission.k8s.io/v1"] = Field(alias="apiVersion")
    kind: Literal["AdmissionReview"]
    request: AdmissionRequest


# --- the part of a Pod the webhook reads ---------------------------------------------
# Types here are what the apiserver guarantees for a Pod, so a review whose object breaks
# them (a hand-made or corrupted body) is refused with the path of the bad field.


class OwnerReference(_Open):
    kind: str
    name: str
    controller: bool | None = None


class ObjectMeta(_Open):
    name: str | None = None
    namespace: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    owner_references: list[OwnerReference] | None = Field(None, alias="ownerReferences")


class ContainerPort(_Open):
    container_port: int = Field(alias="containerPort")


class ResourceRequirements(_Open):
    requests: dict[str, str | int | float] | None = None
    limits: dict[str, str | int | float] | None = None


class Container(_Open):
    name: str
    resources: ResourceRequirements | None = None
    ports: list[ContainerPort] | None = None


class Volume(_Open):
    name: str


class PodSpec(_Open):
    containers: list[Container]
    volumes: list[Volume] | None = None


class Pod(_Open):
    metadata: ObjectMeta = ObjectMeta()
    spec: PodSpec


def _problems(exc: ValidationError, prefix: str) -> str:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in (prefix, *first["loc"]) if part != "")
    more = len(exc.errors()) - 1
    return f"{where}: {first['msg']}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def decode_review(body: bytes) -> AdmissionReviewRequest:
    """Parse and validate an AdmissionReview v1 request body."""
    try:
        return AdmissionReviewRequest.model_validate_json(body)
    except ValidationError as exc:
        if any(err["type"] == "json_invalid" for err in exc.errors()):
            raise InvalidInput(f"body is not valid JSON: {exc.errors()[0]['msg']}", source="AdmissionReview") from exc
        raise InvalidInput(_problems(exc, ""), source="AdmissionReview") from exc


def decode_pod(obj: dict[str, Any] | None) -> Pod:
    """The review's ``request.object`` as a Pod; refused when it is missing or malformed."""
    if obj is None:
        raise InvalidInput("request.object: a Pod CREATE review must carry the pod", source="AdmissionReview")
    try:
        return Pod.model_validate(obj)
    except ValidationError as exc:
        raise InvalidInput(_problems(exc, "request.object"), source="AdmissionReview") from exc


def encode_response(uid: str, patch: JSONPatch | None = None, warnings: list[str] | None = None) -> bytes:
    """An allowing AdmissionReview response; the JSONPatch only when there is something to change."""
    response: dict[str, Any] = {"uid": uid, "allowed": True}
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(to_json(patch)).decode()
    if warnings:
        response["warnings"] = warnings
    return to_json({"apiVersion": API_VERSION, "kind": KIND, "response": response})
