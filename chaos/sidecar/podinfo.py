"""The downward-API annotations file: one ``key="value"`` line per annotation, sorted by key.

The kubelet writes each value with Go's ``%q`` (``strconv.Quote``); this module reads that
form and writes it back, so the local backend and tests produce exactly what a kubelet would.
"""

from __future__ import annotations

from pathlib import Path

from harbinger.documents import write_atomic
from harbinger.errors import InvalidInput

_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
                   "\\": "\\", '"': '"', "'": "'"}
_QUOTE_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v",
                  "\\": "\\\\", '"': '\\"'}


def go_quote(value: str) -> str:
    """Go's ``strconv.Quote``."""
    out = ['"']
    for char in value:
        if char in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def go_unquote(text: str, *, source: str, line: int) -> str:
    """The inverse of :func:`go_quote` (and of anything else ``strconv.Quote`` can write)."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise InvalidInput("value is not a double-quoted string", source=source, line=line)
    body = text[1:-1]
    raw = bytearray()
    i = 0
    while i < len(body):
        char = body[i]
        if char == '"':
            raise InvalidInput("unescaped double quote inside a value", source=source, line=line)
        if char != "\\":
            raw += char.encode()
            i += 1
            continue
        if i + 1 >= len(body):
            raise InvalidInput("value ends in a lone backslash", source=source, line=line)
        code = body[i + 1]
        if code in _SIMPLE_ESCAPES:
            raw += _SIMPLE_ESCAPES[code].encode()
            i += 2
            continue
        widths = {"x": 2, "u": 4, "U": 8}
        try:
            if code in widths:
                digits = body[i + 2:i + 2 + widths[code]]
                if len(digits) != widths[code]:
                    raise ValueError(digits)
                number = int(digits, 16)
                raw += bytes([number]) if code == "x" else chr(number).encode("utf-8", "surrogatepass")
                i += 2 + widths[code]
            elif code in "01234567":
                raw += bytes([int(body[i + 1:i + 4], 8)])
                i += 4
            else:
                raise ValueError(code)
        except ValueError as exc:
            raise InvalidInput(f"bad escape sequence near {body[i:i + 6]!r}", source=source, line=line) from exc
    return raw.decode("utf-8", "replace")


def parse_annotations(text: str, *, source: str) -> dict[str, str]:
    annotations: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, quoted = line.partition("=")
        if not sep or not key:
            raise InvalidInput("expected key=\"value\"", source=source, line=number)
        annotations[key] = go_unquote(quoted, source=source, line=number)
    return annotations


def format_annotations(annotations: dict[str, str]) -> str:
    return "\n".join(f"{key}={go_quote(annotations[key])}" for key in sorted(annotations))


def read_annotations(path: Path) -> dict[str, str]:
    """The file's annotations; a missing file means none (the pod has no annotations yet)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInput(f"cannot read annotations: {exc.strerror}", source=str(path)) from exc
    return parse_annotations(text, source=str(path))


def write_annotations(path: Path, annotations: dict[str, str]) -> None:
    """Replace the file atomically, as the kubelet does, so a reader never sees half a file."""
    write_atomic(path, format_annotations(annotations))
