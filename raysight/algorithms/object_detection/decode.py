"""Object detection's decode op: records or index rows → S×S uint8 images and boxes as
(max_objects, 5) rows [class, xmin, ymin, xmax, ymax] normalised, padded with -1;
training always augments, as SageMaker does."""
from __future__ import annotations

from typing import Any

import numpy as np

from raysight.algorithms import base
from raysight.errors import ClientError
from raysight.formats import class_id_problem, detection


def max_objects(hp) -> int:
    """Label rows per image: MXNet's label_width counts the [A, B] header and 5 values per object."""
    return (hp["label_width"] - 2) // 5


class Decode(base.Decode):
    def __init__(self, hp: dict[str, Any], training: bool, cache: str | None = None):
        super().__init__(hp, training, cache)
        self.height = self.width = hp["image_shape"]
        self.num_classes, self.label_width, self.rows = hp["num_classes"], hp["label_width"], max_objects(hp)
        self.deterministic = not training  # training always augments
        self.row_bytes = self.height * self.width * 3 + self.rows * 5 * 4 + 8

    def record_label(self, label: np.ndarray, where: str) -> np.ndarray:
        if label.size > self.label_width:
            raise ClientError(f"{where}: label of length {label.size} exceeds label_width={self.label_width}; "
                              f"set label_width to at least {label.size}")
        boxes = detection.parse_label_vector(label, where)
        problem = box_problem(boxes, where, self.num_classes)
        if problem:
            raise ClientError(problem)
        return boxes

    def decode_one(self, image, label, where, rng):
        return augment(image, np.asarray(label, dtype=np.float32).reshape(-1, 5), self.height, self.training)

    def collate(self, labels) -> np.ndarray:
        out = np.full((len(labels), self.rows, 5), -1.0, dtype=np.float32)
        for i, boxes in enumerate(labels):
            out[i, : len(boxes)] = boxes[: self.rows]
        return out


def box_problem(boxes: np.ndarray, where: str, k: int) -> str | None:
    problem = class_id_problem(boxes[:, 0].tolist(), where, k) if len(boxes) else None
    if problem:
        return problem
    outside = (boxes[:, 1:] < -0.01) | (boxes[:, 1:] > 1.01)
    if outside.any():
        return f"{where}: box corners must be normalised to [0, 1], got {boxes[outside.any(1)][0].tolist()}"
    return None


def augment(image, boxes: np.ndarray, size: int, training: bool) -> tuple[np.ndarray, np.ndarray]:
    """SageMaker's always-on SSD augmentation (colour jitter, zoom-out, IoU crop, flip,
    as in the SSD paper and torchvision's detection reference), then resize to size×size.
    Boxes stay normalised corners; boxes cropped away are dropped."""
    import torch
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    width, height = image.size
    pixels = tv_tensors.Image(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1))
    scale = torch.tensor([width, height, width, height], dtype=torch.float32)
    sample = {"image": pixels, "labels": torch.from_numpy(boxes[:, 0].copy()),
              "boxes": tv_tensors.BoundingBoxes(torch.from_numpy(boxes[:, 1:].copy()) * scale,
                                                format="XYXY", canvas_size=(height, width))}
    if training:
        sample = _train_transform(len(boxes) > 0)(sample)
    sample = v2.Resize((size, size), antialias=True)(sample)
    out = sample["boxes"].as_subclass(torch.Tensor) / size
    rows = np.concatenate([sample["labels"].numpy()[:, None], out.clamp(0, 1).numpy()], axis=1)
    return sample["image"].permute(1, 2, 0).numpy(), rows.astype(np.float32)


_TRANSFORMS: dict[bool, Any] = {}


def _train_transform(with_boxes: bool):
    if with_boxes not in _TRANSFORMS:
        from torchvision.transforms import v2

        # Each step half the time: milder than the SSD paper's always-on recipe, which
        # needs hundreds of epochs to pay off; small jobs learn much faster this way.
        steps = [v2.RandomPhotometricDistort(p=0.5),
                 v2.RandomApply([v2.RandomZoomOut(fill=(124, 116, 104), side_range=(1.0, 2.0), p=1.0)], p=0.5)]
        if with_boxes:  # an IoU crop needs boxes to measure against
            steps.append(v2.RandomApply([v2.RandomIoUCrop(min_scale=0.5)], p=0.5))
        steps += [v2.RandomHorizontalFlip(0.5), v2.SanitizeBoundingBoxes(min_size=1)]
        _TRANSFORMS[with_boxes] = v2.Compose(steps)
    return _TRANSFORMS[with_boxes]
