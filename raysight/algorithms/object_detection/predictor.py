"""Object detection's answers: NMS'd boxes as SageMaker's `prediction` rows, or in
pixels with `Accept: application/json;annotation=1`."""
from __future__ import annotations

import json

from raysight.algorithms import base

ANNOTATION = "application/json;annotation=1"


class Detector(base.Predictor):
    """SSD outputs → NMS at nms_threshold → rows [class, score, xmin, ymin, xmax, ymax]."""

    accepts = (base.JSON, ANNOTATION, base.JSONLINES)

    def answers(self, outputs, sizes):
        from raysight.models import ssd

        found = ssd.detect(outputs, self.model.anchors.to(outputs.device), self.hp["nms_threshold"])
        return [{"rows": [[float(c), round(float(s), 6), *(round(float(v), 6) for v in box)]
                          for c, s, *box in rows.tolist()], "size": size} for rows, size in zip(found, sizes)]

    def prediction(self, result):
        return result["rows"]

    def render_json(self, result, accept):
        if accept != ANNOTATION:
            return json.dumps({"prediction": result["rows"]}).encode()
        width, height = result["size"]
        doc = {"image_size": [{"width": width, "height": height, "depth": 3}],
               "annotations": [{"class_id": int(c), "score": s, "left": round(x0 * width),
                                "top": round(y0 * height), "width": round((x1 - x0) * width),
                                "height": round((y1 - y0) * height)} for c, s, x0, y0, x1, y1 in result["rows"]]}
        return json.dumps(doc).encode()
