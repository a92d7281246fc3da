"""Object detection's meters: the two SSD loss terms in training (as the criterion
computed them), VOC07 mAP in validation."""
from __future__ import annotations

import numpy as np

from raysight.algorithms import base


class LossMeter(base.SumMeter):
    """Sums of the two loss terms per batch, averaged over the batches of every worker."""

    width = 3

    def row(self, outputs, batch, terms):
        return [terms["cross_entropy"], terms["smooth_l1"], 1.0]

    def finish(self, sums):
        n = max(sums[2], 1.0)
        return {"train:cross_entropy": sums[0] / n, "train:smooth_l1": sums[1] / n}


class MAPMeter:
    """Detections and ground truth of this worker's validation share; compute() gathers
    every worker's images (each scored once) and returns VOC07 11-point mAP."""

    def __init__(self, hp, anchors):
        self.hp, self.anchors = hp, anchors
        self.detections: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def update(self, outputs, batch, terms=None) -> None:
        from raysight.models import ssd

        found = ssd.detect(outputs, self.anchors.to(outputs.device), self.hp["nms_threshold"])
        self.detections += [d.cpu().numpy() for d in found]
        for label in batch["label"].cpu().numpy():
            self.truth.append(label[label[:, 0] >= 0])

    def local(self) -> dict[str, float]:
        return {}

    def compute(self) -> dict[str, float]:
        from raysight import collectives, evaluation

        detections, truth = [], []
        for d, t in collectives.gather((self.detections, self.truth)):
            detections += d
            truth += t
        score, _ = evaluation.mean_ap(detections, truth, self.hp["num_classes"], self.hp["overlap_threshold"])
        return {"validation:mAP": score}
