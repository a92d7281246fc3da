"""Object detection's index rows: images + one JSON per image, or `bounding-box`
manifests, each annotation checked (boxes, classes, label_width, image present) up front."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from raysight import data, storage
from raysight.errors import ClientError
from raysight.formats import detection


def check_width(objects: int, hp, where: str) -> None:
    needed = 2 + 5 * objects
    if needed > hp["label_width"]:
        raise ClientError(f"{where}: {objects} objects need a label of length {needed}, more than "
                          f"label_width={hp['label_width']}; set label_width to at least {needed}")


def manifest_boxes(hp):
    """A `bounding-box` manifest attribute → the flat box list an index row holds."""
    def convert(value, where):
        doc = json.loads(value) if isinstance(value, str) else value
        _, boxes = detection.parse_annotation(doc, where, hp["num_classes"])
        check_width(len(boxes), hp, where)
        return boxes.ravel().tolist()

    return convert


def annotation_rows(image_channel, annotation_channel, hp) -> list[dict[str, Any]]:
    """Rows {id, uri, label} (label: the boxes, flattened) from an images channel and
    its JSON annotation channel."""
    annotation_root, files = data.image_files(annotation_channel)
    files = [f for f in files if f.endswith(".json")]
    if not files:
        raise ClientError(f"channel '{annotation_channel.name}' ({annotation_channel.uri}) holds no .json files")
    image_root, present = data.image_files(image_channel)
    present = set(present)

    def one(rel: str):
        uri = storage.join(annotation_root, rel)
        try:
            doc = detection.read_annotation(data.read_text(uri), uri)
            name, boxes = detection.parse_annotation(doc, uri, hp["num_classes"])
            check_width(len(boxes), hp, uri)
        except ClientError as exc:
            return None, "; ".join(exc.problems)
        image = name.lstrip("/") or _image_beside(rel, present)
        if image not in present:
            return None, f"{uri}: image '{name or rel}' not found under {image_channel.uri}"
        return {"uri": storage.join(image_root, image), "label": boxes.ravel().tolist(),
                "size": declared_size(doc), "annotation": uri}, None

    with ThreadPoolExecutor(16) as pool:  # small GETs: latency-bound on S3
        results = list(pool.map(one, files))
    problems = [p for _, p in results if p]
    if problems:
        raise ClientError(problems[:20] + (["(first 20 problems shown)"] if len(problems) > 20 else []))
    return [dict(row, id=i) for i, (row, _) in enumerate(results)]


def declared_size(doc: dict) -> list[int]:
    """A checked annotation's image_size as [width, height]: the decode op checks the
    image against it (boxes were normalised by it)."""
    size = doc["image_size"][0]
    return [round(float(size["width"])), round(float(size["height"]))]


def _image_beside(rel: str, present: set[str]) -> str:
    """No `file` field: the image with the annotation's base name (img1.json ↔ img1.jpg)."""
    stem = rel[: -len(".json")]
    for ext in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"):
        if stem + ext in present:
            return stem + ext
    return stem + ".jpg"
