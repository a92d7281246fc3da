"""A procedural object-detection data set: coloured circles, squares and triangles on
noisy backgrounds, with exact boxes, written in every SageMaker OD input format.

No labelled photo set ships inside a Python package, so this is the bundled data
for object detection: varied size, position, colour, overlap and background, and
a known answer for every box. Layout under OUT:

    json/{train,validation}/NNNNN.jpg            images (channels train, validation)
    json/{train,validation}_annotation/NNNNN.json  one SageMaker JSON per image
    json/{train,validation}.manifest             augmented manifest, `bounding-box`,
                                                  source-ref relative to the manifest
    recordio/{train,validation}/shapes.rec|.idx  detection labels [2, 5, objects...]
"""
from __future__ import annotations

import io
import json
import os

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from raysight import sample_data
from raysight.evaluation import iou
from raysight.formats import recordio
from raysight.formats.detection import label_vector

CLASSES = ("circle", "square", "triangle")
FORMATS = ("json", "manifest", "recordio")


def make_image(rng: np.random.Generator, size: int, max_objects: int = 3) -> tuple[Image.Image, list[list[int]]]:
    """One image and its objects as [class_id, left, top, width, height] in pixels."""
    top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    ramp = np.linspace(0, 1, size)[:, None, None]
    background = (top * (1 - ramp) + bottom * ramp).repeat(size, axis=1)
    background += rng.normal(0, 12, background.shape)
    image = Image.fromarray(np.clip(background, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    objects: list[list[int]] = []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            side = int(rng.uniform(0.18, 0.5) * size)
            left, top_ = (int(v) for v in rng.integers(0, size - side, 2))
            box = np.array([left, top_, left + side, top_ + side], dtype=float)
            placed = np.array([[x, y, x + w, y + h] for _, x, y, w, h in objects], dtype=float).reshape(-1, 4)
            if not len(placed) or iou(box, placed).max() < 0.3:
                break
        else:
            continue
        cls = int(rng.integers(len(CLASSES)))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, y0, x1, y1 = left, top_, left + side - 1, top_ + side - 1
        if cls == 0:
            draw.ellipse((x0, y0, x1, y1), fill=colour)
        elif cls == 1:
            draw.rectangle((x0, y0, x1, y1), fill=colour)
        else:
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=colour)
        objects.append([cls, left, top_, side, side])
    return image.filter(ImageFilter.GaussianBlur(0.6)), objects


def annotation(file: str, size: int, objects) -> dict:
    return {"file": file, "image_size": [{"width": size, "height": size, "depth": 3}],
            "annotations": [{"class_id": c, "left": x, "top": y, "width": w, "height": h}
                            for c, x, y, w, h in objects],
            "categories": [{"class_id": i, "name": n} for i, n in enumerate(CLASSES)]}


def write(out: str, train: int = 400, validation: int = 100, size: int = 128, seed: int = 0,
          formats=FORMATS) -> dict[str, int]:
    """Write the data set under `out`; returns the image count per split."""
    rng = np.random.default_rng(seed)
    counts = {}
    for split, n in (("train", train), ("validation", validation)):
        records, lines = [], []
        for i in range(n):
            image, objects = make_image(rng, size)
            buf = io.BytesIO()
            image.save(buf, format="JPEG", quality=90)
            name = f"{i:05d}.jpg"
            doc = annotation(name, size, objects)
            if "json" in formats or "manifest" in formats:
                _put(os.path.join(out, "json", split, name), buf.getvalue())
            if "json" in formats:
                _put(os.path.join(out, "json", f"{split}_annotation", f"{i:05d}.json"), json.dumps(doc).encode())
            if "manifest" in formats:
                lines.append(json.dumps({"source-ref": f"{split}/{name}", "bounding-box": {
                    k: doc[k] for k in ("image_size", "annotations")}, "bounding-box-metadata": {
                    "class-map": {str(i): c for i, c in enumerate(CLASSES)},
                    "type": "groundtruth/object-detection"}}))
            if "recordio" in formats:
                boxes = [[c, x / size, y / size, (x + w) / size, (y + h) / size] for c, x, y, w, h in objects]
                records.append(recordio.pack_image(label_vector(boxes), buf.getvalue(), id=i))
        if lines:
            _put(os.path.join(out, "json", f"{split}.manifest"), ("\n".join(lines) + "\n").encode())
        if records:
            folder = os.path.join(out, "recordio", split)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, "shapes.rec"), "wb") as f:
                offsets = recordio.write_records(f, records)
            _put(os.path.join(folder, "shapes.idx"), recordio.format_idx(enumerate(offsets)).encode())
        counts[split] = n
    return counts


def _put(path: str, blob: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(blob)


DEFAULT_HYPERPARAMETERS = {
    "num_classes": str(len(CLASSES)),
    "base_network": "resnet-50",
    "use_pretrained_model": "0",  # no model hub here: from scratch
    "raysight_width_multiplier": "0.125",  # a CPU-sized SSD; 1 = the published network
    "image_shape": "300",
    "epochs": "20",
    "mini_batch_size": "8",  # on CPU, more steps per image learn faster
    "optimizer": "adam",  # learning_rate keeps SageMaker's default, 0.001
    "label_width": "22",
}


def training_request(root: str, output: str, layout: str = "json", name: str = "shapes-ssd",
                     counts: dict | None = None, **overrides: str) -> dict:
    """A CreateTrainingJob request for the data set under `root` in one of FORMATS."""
    counts = counts or {"train": len(os.listdir(os.path.join(root, "json", "train")))}
    hp = {**DEFAULT_HYPERPARAMETERS, "num_training_samples": str(counts["train"]), **overrides}

    channel = sample_data.channel
    if layout == "json":
        channels = [channel(c, os.path.join(root, "json", c), "image/jpeg")
                    for c in ("train", "validation", "train_annotation", "validation_annotation")]
        mode = "File"
    elif layout == "recordio":
        channels = [channel(c, os.path.join(root, "recordio", c), "application/x-recordio")
                    for c in ("train", "validation")]
        mode = "Pipe"
    elif layout == "manifest":
        channels = [channel(c, os.path.join(root, "json", f"{c}.manifest"), "application/x-recordio",
                            S3DataType="AugmentedManifestFile", AttributeNames=["source-ref", "bounding-box"])
                    for c in ("train", "validation")]
        for c in channels:
            c["RecordWrapperType"] = "RecordIO"
        mode = "Pipe"
    else:
        raise ValueError(f"layout must be one of {FORMATS}, got '{layout}'")
    return sample_data.training_request(name, "object-detection", mode, hp, channels, output)
