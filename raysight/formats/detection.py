"""Object-detection labels: SageMaker's JSON annotations and MXNet's detection label
vector `[A, B, header..., (cls, xmin, ymin, xmax, ymax, extra...) x N]`.

Boxes are kept as rows [class, xmin, ymin, xmax, ymax], corners normalised to [0, 1]
by the image's width and height, origin top-left (what the SSD side consumes)."""
from __future__ import annotations

import json
from typing import Any

import numpy as np

from raysight.errors import ClientError
from raysight.formats import class_id_problem


def parse_label_vector(values, where: str) -> np.ndarray:
    """MXNet's detection layout → (N, 5) float32; degenerate boxes are dropped, as
    MXNet's detection iterator does."""
    v = np.asarray(values, dtype=np.float32).ravel()
    if v.size < 2:
        raise ClientError(f"{where}: detection label needs at least [A, B], got {v.tolist()}")
    if not np.isfinite(v).all():
        raise ClientError(f"{where}: detection label holds a value that is not a finite number: {v.tolist()[:12]}")
    a, b = int(v[0]), int(v[1])
    if a < 2 or b < 5 or v.size < a + b or (v.size - a) % b:
        raise ClientError(f"{where}: detection label of length {v.size} does not fit header width {a} and "
                          f"object width {b} (need A>=2, B>=5, (len-A) % B == 0)")
    objects = v[a:].reshape(-1, b)[:, :5]
    keep = (objects[:, 3] > objects[:, 1]) & (objects[:, 4] > objects[:, 2])
    return objects[keep]


def label_vector(boxes: np.ndarray, header: tuple[float, ...] = ()) -> np.ndarray:
    """(N, 5) boxes → the `[A, 5, header..., objects]` vector (for im2rec-style packing)."""
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 5)
    return np.concatenate([[2 + len(header), 5], header, boxes.ravel()]).astype(np.float32)


def parse_annotation(doc: dict[str, Any], where: str, num_classes: int | None = None) -> tuple[str, np.ndarray]:
    """One SageMaker JSON annotation (or a manifest's `bounding-box` value) →
    (image file, (N, 5) normalised boxes). Every problem names the file and object."""
    if not isinstance(doc, dict):
        raise ClientError(f"{where}: expected a JSON object")
    sizes = doc.get("image_size")
    if not isinstance(sizes, list) or len(sizes) != 1 or not isinstance(sizes[0], dict):
        raise ClientError(f"{where}: 'image_size' must be a list with one {{width, height, depth}} object")
    size = sizes[0]
    try:
        width, height, depth = float(size["width"]), float(size["height"]), int(size.get("depth", 3))
    except (KeyError, TypeError, ValueError):
        raise ClientError(f"{where}: 'image_size' needs numeric width and height") from None
    if width <= 0 or height <= 0:
        raise ClientError(f"{where}: image_size {width:g}x{height:g} must be positive")
    if depth != 3:
        raise ClientError(f"{where}: image depth {depth}; only 3-channel images are supported")
    boxes, problems = [], []
    for i, ann in enumerate(doc.get("annotations") or []):
        at = f"{where} annotation {i}"
        try:
            cls, left, top = int(ann["class_id"]), float(ann["left"]), float(ann["top"])
            w, h = float(ann["width"]), float(ann["height"])
        except (KeyError, TypeError, ValueError, OverflowError):
            problems.append(f"{at}: needs numeric class_id, left, top, width, height")
            continue
        if not np.isfinite([left, top, w, h]).all():
            problems.append(f"{at}: left, top, width and height must be finite numbers")
            continue
        if w <= 0 or h <= 0:
            problems.append(f"{at}: box size {w:g}x{h:g} must be positive")
        elif left < 0 or top < 0 or left + w > width + 0.5 or top + h > height + 0.5:
            problems.append(f"{at}: box ({left:g}, {top:g}, {w:g}x{h:g}) lies outside the "
                            f"{width:g}x{height:g} image")
        elif num_classes is not None and class_id_problem([cls], at, num_classes):
            problems.append(class_id_problem([cls], at, num_classes))
        else:
            boxes.append([cls, left / width, top / height, min(1.0, (left + w) / width),
                          min(1.0, (top + h) / height)])
    if problems:
        raise ClientError(problems)
    return str(doc.get("file", "")), np.asarray(boxes, dtype=np.float32).reshape(-1, 5)


def read_annotation(text: str, where: str) -> Any:
    """An annotation file's JSON document (checked by parse_annotation)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ClientError(f"{where}: not JSON ({exc.msg})") from None


def load_annotation(text: str, where: str, num_classes: int | None = None) -> tuple[str, np.ndarray]:
    return parse_annotation(read_annotation(text, where), where, num_classes)
