"""validation:mAP: VOC07 11-point AP on hand-computed cases and against pycocotools."""
from __future__ import annotations

import numpy as np
import pytest

from raysight import evaluation


def test_eleven_point_ap_of_the_issue_example():
    # precision 1 up to recall 0.5, then 0.5 up to recall 1: (6 x 1 + 5 x 0.5) / 11
    ap = evaluation.voc07_ap(np.array([0.5, 1.0]), np.array([1.0, 0.5]))
    assert ap == pytest.approx(8.5 / 11) and round(ap, 4) == 0.7727


def test_same_curve_from_detections():
    gt = [np.array([[0, 0.1, 0.1, 0.4, 0.4], [0, 0.6, 0.6, 0.9, 0.9]])]
    det = [np.array([[0, 0.9, 0.1, 0.1, 0.4, 0.4],    # TP: recall 0.5, precision 1
                     [0, 0.8, 0.0, 0.6, 0.2, 0.8],    # FP (no overlap): precision 0.5
                     [0, 0.7, 0.6, 0.6, 0.9, 0.9]])]  # TP: recall 1, precision 2/3
    score, _ = evaluation.mean_ap(det, gt, num_classes=1)
    # envelope: 1 for recall <= 0.5, 2/3 above → (6 + 5 x 2/3) / 11
    assert score == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_each_ground_truth_matches_once_and_classes_do_not_mix():
    gt = [np.array([[0, 0.1, 0.1, 0.5, 0.5]])]
    det = [np.array([[0, 0.9, 0.1, 0.1, 0.5, 0.5],
                     [0, 0.8, 0.1, 0.1, 0.5, 0.5],    # duplicate: false positive
                     [1, 0.95, 0.1, 0.1, 0.5, 0.5]])]  # right box, wrong class: false positive for class 1
    score, per_class = evaluation.mean_ap(det, gt, num_classes=2)
    assert per_class == [1.0, None]  # class 1 has no ground truth: left out of the mean
    assert score == 1.0
    _, hits, total = evaluation.match(det, gt, 2, 0.5)[0]
    assert hits.tolist() == [True, False] and total == 1


def test_overlap_threshold_is_strict_and_normalised():
    # IoU of these boxes is exactly 0.5 (no +1 pixel): not a match at 0.5, a match at 0.49
    gt = [np.array([[0, 0.0, 0.0, 0.5, 1.0]])]
    det = [np.array([[0, 0.9, 0.0, 0.0, 0.25, 1.0]])]
    assert evaluation.iou(det[0][0, 2:], gt[0][:, 1:])[0] == pytest.approx(0.5)
    assert evaluation.mean_ap(det, gt, 1, overlap_threshold=0.5)[0] == 0.0
    assert evaluation.mean_ap(det, gt, 1, overlap_threshold=0.49)[0] == 1.0


def test_agrees_with_pycocotools_at_iou_half():
    """COCO's AP@0.5 samples the same precision envelope at 101 recall points instead of
    11. For a non-increasing envelope p on [0, 1], an (N+1)-point mean is within
    (p(0) - p(1)) / (N+1) of its integral, so the two differ by at most 1/11 + 1/101
    per class, and so does their mean over classes."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    rng = np.random.default_rng(7)
    size, classes, gts, dets = 100.0, 3, [], []
    for _ in range(40):
        gt = []
        for c in rng.integers(0, classes, rng.integers(1, 4)):  # well separated: one cell each
            cell = len(gt)
            x0 = 5 + 32 * cell + rng.uniform(0, 6)
            gt.append([c, x0 / size, 0.2, (x0 + rng.uniform(15, 22)) / size, 0.7])
        gt = np.array(gt)
        det = []
        for c, x0, y0, x1, y1 in gt:
            if rng.random() < 0.85:  # found, with jittered corners
                j = rng.normal(0, 0.03, 4)
                det.append([c if rng.random() < 0.9 else (c + 1) % classes, rng.uniform(0.2, 1.0),
                            x0 + j[0], y0 + j[1], x1 + j[2], y1 + j[3]])
        for _ in range(rng.integers(0, 3)):  # clutter
            x, y = rng.uniform(0, 0.7, 2)
            det.append([rng.integers(classes), rng.uniform(0, 0.6), x, y, x + 0.2, y + 0.2])
        gts.append(gt)
        dets.append(np.array(det).reshape(-1, 6))
    ours, _ = evaluation.mean_ap(dets, gts, classes, overlap_threshold=0.5)

    def xywh(b):
        return [b[0] * size, b[1] * size, (b[2] - b[0]) * size, (b[3] - b[1]) * size]

    coco = COCO()
    coco.dataset = {"images": [{"id": i, "width": size, "height": size} for i in range(len(gts))],
                    "categories": [{"id": c} for c in range(classes)],
                    "annotations": [{"id": len(gts) * 10 + i * 10 + k, "image_id": i, "category_id": int(g[0]),
                                     "bbox": xywh(g[1:]), "area": xywh(g[1:])[2] * xywh(g[1:])[3], "iscrowd": 0}
                                    for i, gt in enumerate(gts) for k, g in enumerate(gt)]}
    coco.createIndex()
    found = coco.loadRes([{"image_id": i, "category_id": int(d[0]), "score": float(d[1]), "bbox": xywh(d[2:])}
                          for i, det in enumerate(dets) for d in det])
    run = COCOeval(coco, found, "bbox")
    run.params.iouThrs = np.array([0.5])
    run.evaluate()
    run.accumulate()
    precision = run.eval["precision"][0, :, :, 0, -1]  # recall points x classes, all areas, 100 dets
    coco_ap = float(np.mean([precision[:, c].mean() for c in range(classes)]))
    assert 0.3 < ours < 0.99  # a real mix of hits and misses, not a degenerate case
    assert abs(ours - coco_ap) <= 1 / 11 + 1 / 101, (ours, coco_ap)
