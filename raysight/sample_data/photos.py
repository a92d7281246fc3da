"""Photographic JPEGs for benchmarks and pixel tests: random crops, rescales and tints of
the two real photographs scikit-learn ships (`load_sample_images`). Synthetic gradients
decode several times faster than photographs, so speed is measured on these."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image

from raysight.formats.lst import ListEntry


def sources() -> list[np.ndarray]:
    from sklearn.datasets import load_sample_images

    return list(load_sample_images().images)  # china.jpg, flower.jpg: 640x427 RGB


def photo(rng: np.random.Generator, width: int, height: int, pictures: list[np.ndarray] | None = None) -> Image.Image:
    """One photograph-like image: a random region (40-100% of a source's height, the
    target's aspect ratio) rescaled to width x height, tinted, sometimes mirrored."""
    picture = (pictures or sources())[int(rng.integers(0, 2))]
    src_h, src_w = picture.shape[:2]
    crop_h = int(src_h * rng.uniform(0.4, 1.0))
    crop_w = min(src_w, round(crop_h * width / height))
    crop_h = min(crop_h, round(crop_w * height / width))
    top, left = int(rng.integers(0, src_h - crop_h + 1)), int(rng.integers(0, src_w - crop_w + 1))
    region = picture[top:top + crop_h, left:left + crop_w].astype(np.float32)
    region = np.clip(region * rng.uniform(0.75, 1.25, 3), 0, 255).astype(np.uint8)
    if rng.random() < 0.5:
        region = region[:, ::-1]
    return Image.fromarray(np.ascontiguousarray(region)).resize((width, height), Image.BICUBIC)


def make_photos(root: str, n: int, width: int = 500, height: int = 375, classes: int = 10,
                quality: int = 90, seed: int = 0) -> list[ListEntry]:
    """n JPEGs under root/<class>/, and their .lst entries (class = index % classes)."""
    rng = np.random.default_rng(seed)
    pictures = sources()
    entries = []
    for i in range(n):
        rel = f"{i % classes}/{i:05d}.jpg"
        os.makedirs(os.path.join(root, str(i % classes)), exist_ok=True)
        photo(rng, width, height, pictures).save(os.path.join(root, rel), quality=quality)
        entries.append(ListEntry(i, (float(i % classes),), rel))
    return entries
