"""CustomResourceDefinition schemas generated from the pydantic models the components validate
with, so that what the apiserver accepts at apply time is what the components accept
(``hack/crds.py`` writes them; a test fails when a written CRD is stale).

Fields are camelCase on the API (Kubernetes' convention) and snake_case in the models:
:func:`camel` maps one way, :func:`snake_fields` the other.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from harbinger import contract
from harbinger.reference import field_comments


def camel(name: str) -> str:
    first, *rest = name.split("_")
    return first + "".join(part.title() for part in rest)


def openapi_property(schema: Mapping[str, Any], description: str | None) -> dict[str, Any]:
    """One pydantic JSON Schema property as structural OpenAPI v3, as a CRD wants it: an
    optional field (``anyOf`` with null) is the field left out; bounds, enums and the default
    (in the description: the component applies it, so the stored object stays as written)."""
    variants = [v for v in schema.get("anyOf", [schema]) if v.get("type") != "null"]
    base = variants[0] if len(variants) == 1 else schema
    out: dict[str, Any] = {"type": base["type"]}
    if description:
        out["description"] = description
    for key in ("minimum", "maximum", "enum", "minLength", "maxLength", "pattern", "minItems", "maxItems"):
        if key in base:
            out[key] = base[key]
    if "exclusiveMinimum" in base:
        out["minimum"] = base["exclusiveMinimum"]
        out["exclusiveMinimum"] = True
    if "exclusiveMaximum" in base:
        out["maximum"] = base["exclusiveMaximum"]
        out["exclusiveMaximum"] = True
    if base["type"] == "string" and base.get("format") == "date-time":
        out["format"] = "date-time"
    if schema.get("default") is not None:
        default = schema["default"]
        shown = str(default).lower() if isinstance(default, bool) else default  # as YAML writes it
        out["description"] = (out.get("description", "") + f" Default: {shown}.").strip()
    return out


def model_properties(model: type[BaseModel], *, skip: frozenset[str] = frozenset(),
                     overrides: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The model's flat fields as CRD properties (camelCase), described by their ``#:`` comments;
    ``overrides`` replaces the generated schema of a field (by snake_case name)."""
    properties = model.model_json_schema()["properties"]
    # The comments name fields as the model does; the API's readers know them in camelCase.
    comments = {k: re.sub(r"\b[a-z0-9]+(?:_[a-z0-9]+)+\b", lambda m: camel(m.group(0)), v)
                for k, v in field_comments(model).items()}
    overrides = overrides or {}
    return {camel(name): overrides.get(name) or openapi_property(schema, comments.get(name))
            for name, schema in properties.items() if name not in skip}


def snake_fields(model: type[BaseModel], data: Mapping[str, Any], *, where: str) -> dict[str, Any]:
    """A camelCase mapping as the model's snake_case fields; ValueError names an unknown key."""
    names = {camel(name): name for name in model.model_fields}
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise ValueError(f"{where} has unknown field(s) {', '.join(unknown)}")
    return {names[key]: value for key, value in data.items()}


def number_text(value: float) -> str:
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def _type(prop: Mapping[str, Any]) -> str:
    if prop.get("x-kubernetes-int-or-string"):
        return "number or quantity"
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items') or {})}"
    if prop.get("format") == "date-time":
        return "time (RFC 3339)"
    return str(prop.get("type", "object"))


def reference_table(properties: Mapping[str, Any], *, prefix: str = "") -> str:
    """A Markdown table of a CRD schema's fields, nested objects (and lists of them) flattened
    to dotted paths: what docs/api.md shows, generated from the schema so that it cannot drift."""
    rows = ["| field | type | bounds | meaning |", "| --- | --- | --- | --- |"]

    def walk(props: Mapping[str, Any], path: str) -> None:
        for name, prop in props.items():
            here = f"{path}{name}"
            items = prop.get("items") or {}
            nested = prop.get("properties") or items.get("properties")
            bounds = []
            if "minimum" in prop:
                bounds.append(f"{'>' if prop.get('exclusiveMinimum') else '>='} {number_text(prop['minimum'])}")
            if "maximum" in prop:
                bounds.append(f"{'<' if prop.get('exclusiveMaximum') else '<='} {number_text(prop['maximum'])}")
            if "enum" in prop or "enum" in items:
                bounds.append(" or ".join(f"`{v}`" for v in prop.get("enum") or items["enum"]))
            if "maxItems" in prop:
                bounds.append(f"{prop.get('minItems', 0)} to {prop['maxItems']} items")
            meaning = " ".join(str(prop.get("description", "")).split()).replace("|", "\\|")
            rows.append(f"| `{here}` | {_type(prop)} | {', '.join(bounds) or '-'} | {meaning} |")
            if nested:
                walk(nested, f"{here}[]." if items.get("properties") else f"{here}.")

    walk(properties, prefix)
    return "\n".join(rows) + "\n"


def custom_resource_definition(*, kind: str, plural: str, short_name: str, namespaced: bool, description: str,
                               columns: list[dict[str, str]], spec: dict[str, Any],
                               status: dict[str, Any] | None = None, spec_required: bool = False) -> dict[str, Any]:
    """One harbinger.io CRD (one served version, status as a subresource when it has one)."""
    properties: dict[str, Any] = {"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                                  "metadata": {"type": "object"}, "spec": spec}
    version: dict[str, Any] = {"name": contract.API_VERSION, "served": True, "storage": True}
    if status is not None:
        properties["status"] = status
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = columns
    version["schema"] = {"openAPIV3Schema": {"type": "object", **({"required": ["spec"]} if spec_required else {}),
                                             "description": description, "properties": properties}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{contract.API_GROUP}", "labels": {"app.kubernetes.io/part-of": "harbinger"}},
        "spec": {
            "group": contract.API_GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower(),
                      "shortNames": [short_name], "categories": ["harbinger"]},
            "scope": "Namespaced" if namespaced else "Cluster",
            "versions": [version],
        },
    }
