"""`raysight inspect`: look at a channel before spending cluster time on it."""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
from collections import Counter
from typing import Any, Iterator

import pyarrow as pa
from PIL import Image

from raysight import data, storage
from raysight.errors import ClientError
from raysight.formats import recordio
from raysight.formats.lst import parse_lst
from raysight.job_request import Channel


def detect(files: list[str]) -> str:
    names = [f.lower() for f in files]
    if any(n.endswith((".rec", ".rec.gz")) for n in names):
        return "recordio"
    if any(n.endswith(".lst") for n in names):
        return "lst"
    if any(n.endswith((".manifest", ".jsonl")) for n in names):
        return "manifest"
    if any(n.endswith((".jpg", ".jpeg", ".png")) for n in names):
        return "images"
    return "unknown"


def records(uri: str, root: str | None = None) -> Iterator[dict[str, Any]]:
    """One dict per record: id, label, image bytes; raises ClientError naming the spot."""
    files = data.list_files(uri)
    kind = detect(files if files != [""] else [uri])  # [""]: the URI names one file
    if kind == "recordio":
        for rel in files:
            if not rel.endswith((".rec", ".rec.gz")) and rel:
                continue
            rec_uri = storage.join(uri, rel) if rel else uri
            fs, path = storage.resolve(rec_uri)
            with fs.open_input_stream(path, compression=None) as raw:
                stream = gzip.GzipFile(fileobj=raw) if rec_uri.endswith(".gz") else pa.BufferedInputStream(raw, 1 << 20)
                for offset, payload in recordio.iter_records(stream, rec_uri):
                    r = recordio.unpack_image(payload, f"{rec_uri} record at byte {offset}")
                    yield {"id": r.id, "label": [float(x) for x in r.label], "image": r.image,
                           "where": f"{rec_uri} record at byte {offset}"}
    elif kind == "lst":
        lst = data.find_one(Channel(name=uri, uri=uri), ".lst")
        folder = lst.rsplit("/", 1)[0] if storage.is_remote(lst) else os.path.dirname(lst)
        image_root = root or folder  # im2rec's layout: images beside the list  # im2rec's layout: images beside the list
        for e in parse_lst(storage.read_bytes(lst).decode("utf-8", "replace"), lst):
            image_uri = storage.join(image_root, e.path)
            yield {"id": e.index, "label": list(e.labels), "image": storage.read_bytes(image_uri), "where": image_uri}
    else:
        raise ClientError(f"{uri}: no .rec or .lst files found (format '{kind}' is not inspectable yet)")


def detection_classes(label: list[float]) -> list[int] | None:
    """Class ids of an MXNet detection label [A, B, header..., objects x B], or None when
    the label is a classification label (one id, or a 0/1 multi-hot row)."""
    if len(label) < 7 or label[0] != int(label[0]) or label[1] != int(label[1]):
        return None
    a, b = int(label[0]), int(label[1])
    if a < 2 or b < 5 or (len(label) - a) % b:
        return None
    return [int(label[i]) for i in range(a, len(label), b)]


def summarize(uri: str, root: str | None = None, emit=None) -> dict[str, Any]:
    files = data.list_files(uri)
    summary: dict[str, Any] = {"channel": uri, "format": detect(files if files != [""] else [uri]),
                               "files": len(files),
                               "records": 0, "labels": {}, "image_sizes": {}, "problems": []}
    labels: Counter = Counter()
    objects: Counter = Counter()
    widths, heights = [], []
    try:
        for r in records(uri, root):
            summary["records"] += 1
            classes = detection_classes(r["label"])
            if classes is not None:  # object detection: count objects per class and per image
                labels.update(f"class {c}" for c in classes)
                objects[str(len(classes))] += 1
            else:
                labels[str(int(r["label"][0])) if len(r["label"]) == 1 else json.dumps(r["label"])] += 1
            try:
                with Image.open(io.BytesIO(r["image"])) as im:
                    widths.append(im.size[0])
                    heights.append(im.size[1])
                    if im.mode not in ("RGB", "L", "P", "RGBA"):
                        summary["problems"].append(f"{r['where']}: unusual image mode {im.mode}")
            except Exception:  # noqa: BLE001 - a corrupt image is a finding, not a crash
                summary["problems"].append(f"{r['where']}: cannot decode image")
            if emit:
                emit({"id": r["id"], "label": r["label"], "image_bytes": len(r["image"]),
                      "sha256": hashlib.sha256(r["image"]).hexdigest()})
    except ClientError as exc:
        summary["problems"].extend(exc.problems)
    summary["labels"] = dict(sorted(labels.items(), key=lambda kv: (len(kv[0]), kv[0])))
    if objects:
        summary["objects_per_image"] = dict(sorted(objects.items(), key=lambda kv: int(kv[0])))
    if widths:
        summary["image_sizes"] = {"min_width": min(widths), "max_width": max(widths),
                                  "min_height": min(heights), "max_height": max(heights)}
    return summary


def format_text(s: dict[str, Any]) -> str:
    lines = [f"channel:  {s['channel']}", f"format:   {s['format']} ({s['files']} files)",
             f"records:  {s['records']}"]
    if s["image_sizes"]:
        z = s["image_sizes"]
        lines.append(f"images:   {z['min_width']}-{z['max_width']} x {z['min_height']}-{z['max_height']} px")
    if s["labels"]:
        lines.append("labels:   " + ", ".join(f"{k}: {v}" for k, v in list(s["labels"].items())[:30]))
    if s.get("objects_per_image"):
        lines.append("objects:  " + ", ".join(f"{k} per image: {v}" for k, v in s["objects_per_image"].items()))
    lines.append(f"problems: {len(s['problems'])}")
    lines += [f"  - {p}" for p in s["problems"][:50]]
    return "\n".join(lines)
