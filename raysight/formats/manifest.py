"""SageMaker augmented manifests: JSON Lines whose AttributeNames pick, in order,
the image reference (an attribute ending in `-ref`) and the label."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from raysight.errors import ClientError


@dataclass(frozen=True)
class ManifestLine:
    lineno: int
    ref: str
    label: Any  # the label attribute's value as written (str, number, list or object)


def parse_manifest(text: str, attribute_names: list[str], source: str = "<manifest>") -> list[ManifestLine]:
    if len(attribute_names) != 2:
        raise ClientError(f"{source}: AttributeNames must list the image attribute then the label attribute, "
                          f"got {attribute_names}")
    ref_attr, label_attr = attribute_names
    if not ref_attr.endswith("-ref"):
        raise ClientError(f"{source}: the first attribute must be the image reference ending in '-ref', "
                          f"got '{ref_attr}'")
    lines, problems = [], []
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):  # BOM, CRLF: fine
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{source} line {lineno}: not JSON ({exc.msg})")
            continue
        if not isinstance(obj, dict):
            problems.append(f"{source} line {lineno}: not a JSON object")
            continue
        missing = [a for a in (ref_attr, label_attr) if a not in obj]
        if missing:
            problems.append(f"{source} line {lineno}: missing attribute {', '.join(repr(m) for m in missing)}")
            continue
        lines.append(ManifestLine(lineno, str(obj[ref_attr]), obj[label_attr]))
        if len(problems) >= 20:
            break
    if problems:
        raise ClientError(problems)
    if not lines:
        raise ClientError(f"{source}: no JSON lines")
    return lines


def label_values(value: Any) -> list[float]:
    """`"3"`, `3`, `"[1, 0, 1]"` or `[0, 2]` → a list of numbers."""
    if isinstance(value, str):
        text = value.strip()
        value = json.loads(text) if text.startswith("[") else float(text)
    if isinstance(value, (int, float)):
        return [float(value)]
    if isinstance(value, list) and all(isinstance(v, (int, float)) for v in value):
        return [float(v) for v in value]
    raise ValueError(f"label {value!r} is not a number or a list of numbers")
