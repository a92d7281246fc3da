"""Detection mAP as SageMaker's Object Detection reports it: PASCAL VOC 2007's
11-point interpolated AP per class, averaged over classes that have ground truth.

Matching follows MXNet's VOC07MApMetric: detections of a class, highest score first,
each take the ground-truth box of that class they overlap most; it is a true positive
when that IoU is > `overlap_threshold` and the box is not taken yet (each ground truth
matches at most once), else a false positive. Coordinates are normalised: no +1 pixel.
"""
from __future__ import annotations

import numpy as np


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one xyxy box with each row of `boxes`."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, 1e-12)


def voc07_ap(recall: np.ndarray, precision: np.ndarray) -> float:
    """Mean over t in {0, 0.1, ..., 1} of the best precision at recall >= t (0 if none)."""
    points = [precision[recall >= t].max() if np.any(recall >= t) else 0.0 for t in np.linspace(0, 1, 11)]
    return float(np.mean(points))


def match(detections, ground_truth, num_classes: int, overlap_threshold: float):
    """Per class: (scores, is-true-positive flags, number of ground truths).

    detections: per image (K, 6) [class, score, xmin, ymin, xmax, ymax];
    ground_truth: per image (M, 5) [class, xmin, ymin, xmax, ymax]."""
    out = []
    for c in range(num_classes):
        scores, hits, total = [], [], 0
        for det, gt in zip(detections, ground_truth):
            det, gt = np.asarray(det, dtype=np.float64).reshape(-1, 6), np.asarray(gt, dtype=np.float64).reshape(-1, 5)
            truth = gt[gt[:, 0] == c, 1:]
            total += len(truth)
            mine = det[det[:, 0] == c]
            mine = mine[np.argsort(-mine[:, 1], kind="stable")]
            used = np.zeros(len(truth), dtype=bool)
            for row in mine:
                hit = False
                if len(truth):  # VOC/MXNet: the best-overlapping box; already taken → false positive
                    overlaps = iou(row[2:], truth)
                    j = int(np.argmax(overlaps))
                    if overlaps[j] > overlap_threshold and not used[j]:
                        used[j] = hit = True
                scores.append(row[1])
                hits.append(hit)
        out.append((np.asarray(scores), np.asarray(hits, dtype=bool), total))
    return out


def mean_ap(detections, ground_truth, num_classes: int, overlap_threshold: float = 0.5) -> tuple[float, list]:
    """(mAP, per-class AP with None for classes without ground truth)."""
    per_class = []
    for scores, hits, total in match(detections, ground_truth, num_classes, overlap_threshold):
        if total == 0:
            per_class.append(None)
            continue
        order = np.argsort(-scores, kind="stable")
        tp = np.cumsum(hits[order])
        fp = np.cumsum(~hits[order])
        recall = tp / total
        precision = tp / np.maximum(tp + fp, 1e-12)
        per_class.append(voc07_ap(recall, precision) if len(order) else 0.0)
    scored = [ap for ap in per_class if ap is not None]
    return (float(np.mean(scored)) if scored else 0.0), per_class
