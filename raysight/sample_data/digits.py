"""scikit-learn's handwritten digits (1,797 real 8x8 scans) as PNG files + `.lst`.

The embedded default data set: it ships inside scikit-learn, so the demo and
tests need no download.
"""
from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

from raysight import sample_data
from raysight.formats.lst import ListEntry, format_lst

DEFAULT_HYPERPARAMETERS = {
    "num_classes": "10",
    "num_layers": "20",
    "image_shape": "3,28,28",
    "resize": "32",
    "epochs": "10",
    "mini_batch_size": "32",
    "learning_rate": "0.1",
    "lr_scheduler_step": "7,9",
    "lr_scheduler_factor": "0.1",
    "optimizer": "sgd",
    "momentum": "0.9",
    "weight_decay": "0.0001",
}


def export(root: str, validation_fraction: float = 0.2, seed: int = 0, limit: int | None = None,
           size: int = 8) -> dict[str, int]:
    """Write ROOT/{train,validation}/<class>/<n>.png and ROOT/{train,validation}_lst/*.lst.

    Returns the number of images per split. `limit` keeps the first N images per
    split (tests), `size` upscales images (nearest) when bigger files are wanted.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(digits.target))
    n_val = int(round(len(order) * validation_fraction))
    splits = {"validation": order[:n_val], "train": order[n_val:]}
    counts = {}
    for split, indices in splits.items():
        if limit:
            indices = indices[:limit]
        entries = []
        for i in indices:
            label = int(digits.target[i])
            pixels = (digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
            rel = f"{label}/{i:04d}.png"
            path = os.path.join(root, split, rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            image = Image.fromarray(pixels, mode="L")
            if size != 8:
                image = image.resize((size, size), Image.NEAREST)
            image.save(path)
            entries.append(ListEntry(int(i), (float(label),), rel))
        os.makedirs(os.path.join(root, f"{split}_lst"), exist_ok=True)
        with open(os.path.join(root, f"{split}_lst", f"{split}.lst"), "w") as f:
            f.write(format_lst(entries))
        counts[split] = len(entries)
    return counts


def training_request(root: str, output: str, name: str = "digits-resnet20", counts: dict | None = None,
                     **overrides: str) -> dict:
    """A CreateTrainingJob request for the exported data set."""
    counts = counts or {"train": sum(1 for _ in open(os.path.join(root, "train_lst", "train.lst")))}
    hp = {**DEFAULT_HYPERPARAMETERS, "num_training_samples": str(counts["train"]), **overrides}

    channels = [sample_data.channel(c, os.path.join(root, c), "application/x-image")
                for c in ("train", "validation", "train_lst", "validation_lst")]
    return sample_data.training_request(name, "image-classification", "File", hp, channels, output)


def write_request(path: str, request: dict) -> None:
    with open(path, "w") as f:
        json.dump(request, f, indent=2)
