"""Writes docs/settings.md from the settings model (harbinger/settings.py) itself: every
section and field with its type, default, environment variable and the comment above it,
so the reference never drifts (tests/core/test_docs.py fails when it is stale).

    python hack/settings_docs.py          # rewrite docs/settings.md
    python hack/settings_docs.py --check  # exit 1 if it is stale
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from harbinger.reference import field_comments, type_name
from harbinger.settings import Settings

DOC = Path(__file__).resolve().parents[1] / "docs" / "settings.md"
HEADER = """# Settings reference

Generated from [`harbinger/settings.py`](../harbinger/settings.py) by `hack/settings_docs.py`:
do not edit. Precedence and examples: [configuration.md](configuration.md#settings). Every
field can be set in the settings file (`HARBINGER_CONFIG`, sections as mappings) or by its
environment variable (lists and mappings as JSON); a bad value is refused at start with the
field named.
"""


def _default(value: Any) -> str:
    if isinstance(value, BaseModel):
        return ""
    text = json.dumps(value, default=str)
    return f"`{text}`" if len(text) <= 60 else f"`{text[:57]}...`"


def _rows(model: type[BaseModel], prefix: str) -> list[str]:
    comments = field_comments(model)
    rows = []
    for name, info in model.model_fields.items():
        default = info.get_default(call_default_factory=True)
        meaning = comments.get(name, "").replace("|", "\\\\|")
        rows.append(f"| `{name}` | {type_name(info.annotation).replace(' | ', ' or ')} | {_default(default)} | "
                    f"`{prefix}{name.upper()}` | {meaning} |")
    return rows


def render() -> str:
    out = [HEADER]
    top = [name for name, info in Settings.model_fields.items()
           if not (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel))]
    table = ["| field | type | default | environment | meaning |", "| --- | --- | --- | --- | --- |"]
    out += ["## (top level)", "", *table]
    out += [row for row in _rows(Settings, "HARBINGER_") if row.split("`")[1] in top]
    for name, info in Settings.model_fields.items():
        section = info.annotation
        if not (isinstance(section, type) and issubclass(section, BaseModel)):
            continue
        doc = (section.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        out += ["", f"## `{name}`", ""]
        if doc and not doc.startswith(section.__name__ + "("):
            out += [doc, ""]
        out += [*table, *_rows(section, f"HARBINGER_{name.upper()}__")]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            print(f"{DOC} is stale: run python hack/settings_docs.py", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text)
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
