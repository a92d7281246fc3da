"""SageMaker's Object Detection algorithm (SSD, VGG-16 or ResNet-50 base) on PyTorch.

The five things an algorithm owns: hyperparameter rows, model builder (models/ssd.py),
data adapter (RecordIO detection labels, images + JSON, `bounding-box` manifests, all
into fixed-width padded labels), loss/metrics (multibox loss, VOC07 mAP) and predictor.
"""
from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from raysight import data, images, storage
from raysight.algorithms import register
from raysight.algorithms.base import RECORDIO, Algorithm, warn_if_async
from raysight.errors import ClientError
from raysight.formats import detection, recordio
from raysight.hyperparams import Param, parse_epoch_list, unit

BASE_NETWORKS = ("vgg-16", "resnet-50")  # models/ssd.py; repeated here so validation needs no torch
WIDTH = "raysight_width_multiplier"


HYPERPARAMETERS = [
    Param("num_classes", "int", required=True, min=1, doc="Object classes (background excluded)."),
    Param("num_training_samples", "int", required=True, min=1, doc="Training set size; drives LR-step timing."),
    Param("base_network", "str", "vgg-16", choices=BASE_NETWORKS, doc="SSD backbone."),
    Param("early_stopping", "bool", False, doc="Stop when validation mAP stops improving."),
    Param("early_stopping_min_epochs", "int", 10, min=1, doc="Epochs before early stopping may trigger."),
    Param("early_stopping_patience", "int", 5, min=1, doc="Epochs without improvement before stopping."),
    unit("early_stopping_tolerance", 0.0, "Relative mAP improvement that counts."),
    Param("epochs", "int", 30, min=1, doc="Training epochs."),
    Param("freeze_layer_pattern", "str", None, doc="Regex: matching backbone layers get no updates."),
    Param("image_shape", "int", 300, min=300, doc="Side of the square network input (300 or 512)."),
    Param("kv_store", "str", None, choices=("dist_sync", "dist_async"), doc="Multi-host sync mode."),
    Param("label_width", "int", 350, min=7, doc="Padded label-vector length: >= 2 + 5 x most objects."),
    unit("learning_rate", 0.001, "Initial learning rate.", "Continuous", min_exclusive=True),
    unit("lr_scheduler_factor", 0.1, "LR multiplier at each step epoch.", min_exclusive=True, max_exclusive=True),
    Param("lr_scheduler_step", "custom", (), parser=parse_epoch_list, doc="Epochs after which LR decays, '10, 20'."),
    Param("mini_batch_size", "int", 32, min=1, tunable="Integer", doc="Batch per host, split over its GPUs."),
    unit("momentum", 0.9, "Momentum for sgd.", "Continuous", min_exclusive=True),
    unit("nms_threshold", 0.45, "IoU of non-maximum suppression.", min_exclusive=True),
    Param("optimizer", "str", "sgd", choices=("sgd", "adam", "rmsprop", "adadelta"), tunable="Categorical",
          doc="Optimizer."),
    unit("overlap_threshold", 0.5, "IoU for a true positive in validation mAP.", min_exclusive=True),
    Param("use_pretrained_model", "int", 1, choices=(0, 1), doc="1 = ImageNet backbone weights."),
    unit("weight_decay", 0.0005, "L2 coefficient for sgd and rmsprop.", "Continuous",
         min_exclusive=True, max_exclusive=True),
    Param(WIDTH, "float", 1.0, min=0.0, max=1.0, min_exclusive=True,
          doc="raysight extension: scales every channel count; 1 = the published SSD."),
]


def max_objects(hp) -> int:
    """Label rows per image: MXNet's label_width counts the [A, B] header and 5 values per object."""
    return (hp["label_width"] - 2) // 5


class Decode:
    """Ray Data map_batches op: read → decode → (augment) → S×S uint8 NHWC, and boxes
    as (max_objects, 5) rows [class, xmin, ymin, xmax, ymax] normalised, padded with -1."""

    def __init__(self, hp: dict[str, Any], training: bool, cache: str | None = None):
        self.cache, self.training = cache, training
        self.size, self.num_classes = hp["image_shape"], hp["num_classes"]
        self.label_width, self.rows = hp["label_width"], max_objects(hp)
        self.deterministic = not training  # training always augments, as SageMaker does
        self.row_bytes = self.size * self.size * 3 + self.rows * 5 * 4 + 8

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "record" in batch:  # RecordIO: IRHeader + detection label vector + encoded image
            where = [f"{s} record at byte {o}" for s, o in zip(batch["source"], batch["offset"])]
            records = [recordio.unpack_image(bytes(r), w) for r, w in zip(batch["record"], where)]
            boxes = [self._record_boxes(r.label, w) for r, w in zip(records, where)]
            blobs, ids = [r.image for r in records], [r.id for r in records]
        else:  # images + JSON or manifest: boxes were checked when the rows were built
            where, blobs = [str(u) for u in batch["uri"]], data.read_all(batch["uri"], self.cache)
            boxes = [np.asarray(b, dtype=np.float32).reshape(-1, 5) for b in batch["boxes"]]
            ids = list(batch["id"])
        out = np.empty((len(blobs), self.size, self.size, 3), dtype=np.uint8)
        labels = np.full((len(blobs), self.rows, 5), -1.0, dtype=np.float32)
        for i, (raw, box, w) in enumerate(zip(blobs, boxes, where)):
            try:
                image = images.decode_rgb(raw, w)
            except images.BadImage as exc:
                raise ClientError(str(exc)) from None
            pixels, box = augment(image, box, self.size, self.training)
            out[i], labels[i, : len(box)] = pixels, box[: self.rows]
        return {"image": out, "label": labels, "id": np.asarray(ids, dtype=np.int64)}

    def _record_boxes(self, label: np.ndarray, where: str) -> np.ndarray:
        if label.size > self.label_width:
            raise ClientError(f"{where}: label of length {label.size} exceeds label_width={self.label_width}; "
                              f"set label_width to at least {label.size}")
        boxes = detection.parse_label_vector(label, where)
        problem = box_problem(boxes, where, self.num_classes)
        if problem:
            raise ClientError(problem)
        return boxes


def box_problem(boxes: np.ndarray, where: str, k: int) -> str | None:
    bad = [int(c) if float(c).is_integer() else float(c) for c in boxes[:, 0]
           if not float(c).is_integer() or not 0 <= c < k]
    if bad:
        return f"{where}: class ids {bad} must be integers in [0, {k - 1}] (num_classes={k})"
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


class ObjectDetection(Algorithm):
    name = "object-detection"
    hyperparameters = HYPERPARAMETERS
    objective = "validation:mAP"
    tuning_metrics = ("validation:mAP",)
    architecture_keys = ("base_network", "num_classes", WIDTH)
    artifact_prefix = "model_algo_1"
    weight_decay_optimizers = ("sgd", "rmsprop")
    log_every_batches = 10
    image_index_channels = ("train_annotation", "validation_annotation")
    manifest_label = "'bounding-box'"

    # -- request -----------------------------------------------------------------
    def check(self, hp, job) -> list[str]:
        problems = []
        if hp["freeze_layer_pattern"]:
            try:
                re.compile(hp["freeze_layer_pattern"])
            except re.error as exc:
                problems.append(f"freeze_layer_pattern '{hp['freeze_layer_pattern']}' is not a valid regex: {exc}")
        if hp["use_pretrained_model"] and hp[WIDTH] != 1.0:
            problems.append(f"use_pretrained_model=1 needs {WIDTH}=1 (ImageNet weights exist for the published "
                            f"networks only); set use_pretrained_model=0 for a narrower network")
        warn_if_async(hp)
        return problems + self.channel_problems(job)

    # -- model --------------------------------------------------------------------
    def input_shape(self, hp):
        return (3, hp["image_shape"], hp["image_shape"])

    def build_model(self, hp, trunk=None):
        from raysight.models import ssd

        model = ssd.SSD(hp["base_network"], hp["num_classes"], hp["image_shape"], hp[WIDTH], trunk=trunk)
        ssd.freeze(model, hp["base_network"], hp["freeze_layer_pattern"])
        return model

    def pretrained_state(self, hp):
        """torchvision's ImageNet VGG-16 / ResNet-50 in the trunk; extra layers and heads
        start from their own initialisation."""
        from raysight.models import ssd
        from raysight.models.weights import load_pretrained, merge_backbone

        arch = ssd.TORCHVISION_ARCH[hp["base_network"]]
        state = load_pretrained(arch)
        if hp["base_network"] == "vgg-16":
            trunk = ssd.vgg16_trunk()
            state = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        else:
            trunk = ssd.resnet50_trunk()
            names = tuple(f"{n}." for n, _ in trunk.named_children())
            state = {k: v for k, v in state.items() if k.startswith(names)}
        merge_backbone(trunk, state, (), f"{arch} ImageNet weights")
        return self.build_model(hp, trunk=trunk).state_dict()

    # -- data ---------------------------------------------------------------------
    def datasets(self, job, hp, shards=1):
        datasets = {}
        for split in ("train", "validation"):
            channel, training = job.channels[split], split == "train"
            if channel.s3_data_type == "AugmentedManifestFile":
                rows = data.manifest_rows(channel, self._manifest_boxes(hp))
                for r in rows:
                    r["boxes"] = r.pop("label")
            elif channel.mime == RECORDIO:
                rows = None  # labels travel inside the records
            else:
                rows = annotation_rows(channel, job.channels[f"{split}_annotation"], hp)
            decode = Decode(hp, training=training, cache=data.file_mode_cache(channel))
            parts = data.channel_datasets(channel, rows, decode, training, shards)
            datasets[split] = parts if len(parts) > 1 else parts[0]
        return datasets

    def _manifest_boxes(self, hp):
        def convert(value, where):
            doc = json.loads(value) if isinstance(value, str) else value
            _, boxes = detection.parse_annotation(doc, where, hp["num_classes"])
            check_width(len(boxes), hp, where)
            return boxes.ravel().tolist()

        return convert

    def prepare_batch(self, batch, hp, training):
        return {"image": images.normalize(batch["image"]), "label": batch["label"]}

    # -- loss and metrics ---------------------------------------------------------
    def anchors(self, hp, device):
        from raysight.models import ssd

        return ssd.default_boxes(hp["base_network"], hp["image_shape"], hp[WIDTH]).to(device)

    def loss(self, outputs, batch, hp):
        from raysight.models import ssd

        cross_entropy, smooth_l1 = ssd.multibox_loss(outputs.float(), batch["label"],
                                                     self.anchors(hp, outputs.device))
        return cross_entropy + smooth_l1

    def meter(self, hp, split):
        return LossMeter(self, hp) if split == "train" else MAPMeter(self, hp)

    def log_batch(self, epoch, batch, speed, running):
        return [f"#quality_metric: host=algo-1, epoch={epoch}, batch={batch} train cross_entropy "
                f"<loss>={running['cross_entropy']:.6f}",
                f"#quality_metric: host=algo-1, epoch={epoch}, batch={batch} train smooth_l1 "
                f"<loss>={running['smooth_l1']:.6f}",
                f"#throughput_metric: host=algo-1, train throughput={speed:.2f} records/second"]

    def log_epoch(self, epoch, metrics, seconds, hp):
        lines = [f"#quality_metric: host=algo-1, epoch={epoch}, train cross_entropy "
                 f"<loss>={metrics['train:cross_entropy']:.6f}",
                 f"#quality_metric: host=algo-1, epoch={epoch}, train smooth_l1 "
                 f"<loss>={metrics['train:smooth_l1']:.6f}"]
        if "validation:mAP" in metrics:
            lines.append(f"#quality_metric: host=algo-1, epoch={epoch}, validation mAP "
                         f"<score>=({metrics['validation:mAP']:.6f})")
        lines += [f"#progress_metric: host=algo-1, completed {100.0 * (epoch + 1) / hp['epochs']:.0f} %",
                  f"Epoch[{epoch}] Time cost={seconds:.3f}"]
        return lines

    def preview(self, model, validation, hp, count: int = 8, min_score: float = 0.3):
        """detections.png: validation images as the network sees them, ground truth dashed
        white, the ten best detections scoring >= min_score coloured by class, with score."""
        import io

        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import torch

        from raysight.models import ssd

        rows = validation.take(count)
        pixels = np.stack([r["image"] for r in rows])
        with torch.inference_mode():
            found = ssd.detect(model(images.normalize(torch.from_numpy(pixels))), model.anchors, hp["nms_threshold"])
        size = hp["image_shape"]
        fig, axes = plt.subplots(2, (len(rows) + 1) // 2, figsize=(3 * ((len(rows) + 1) // 2), 6.4), squeeze=False)
        colours = plt.get_cmap("tab10")
        for ax, row, det in zip(axes.ravel(), rows, found):
            ax.imshow(row["image"])
            for c, x0, y0, x1, y1 in row["label"][row["label"][:, 0] >= 0]:
                ax.add_patch(plt.Rectangle((x0 * size, y0 * size), (x1 - x0) * size, (y1 - y0) * size,
                                           fill=False, ec="white", ls="--", lw=1))
            for c, score, x0, y0, x1, y1 in det[:10].tolist():  # highest scores first
                if score < min_score:
                    break
                ax.add_patch(plt.Rectangle((x0 * size, y0 * size), (x1 - x0) * size, (y1 - y0) * size,
                                           fill=False, ec=colours(int(c) % 10), lw=2))
                ax.text(x0 * size, y0 * size, f"{int(c)}: {score:.2f}", color="white", fontsize=7,
                        bbox={"facecolor": colours(int(c) % 10), "pad": 1, "lw": 0})
        for ax in axes.ravel():
            ax.axis("off")
        fig.suptitle(f"validation detections (score >= {min_score}); ground truth dashed")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        return "detections.png", buf.getvalue()

    # -- serving ------------------------------------------------------------------
    def predictor(self, model, meta):
        return Detector(model, meta)


def check_width(objects: int, hp, where: str) -> None:
    needed = 2 + 5 * objects
    if needed > hp["label_width"]:
        raise ClientError(f"{where}: {objects} objects need a label of length {needed}, more than "
                          f"label_width={hp['label_width']}; set label_width to at least {needed}")


def annotation_rows(image_channel, annotation_channel, hp) -> list[dict[str, Any]]:
    """Rows {id, uri, boxes} from an images channel and its JSON annotation channel,
    every annotation checked (boxes, classes, label_width, image present) up front."""
    files = [f for f in data.list_files(annotation_channel.uri) if f.endswith(".json")]
    if not files:
        raise ClientError(f"channel '{annotation_channel.name}' ({annotation_channel.uri}) holds no .json files")
    present = set(data.list_files(image_channel.uri))

    def one(rel: str):
        uri = storage.join(annotation_channel.uri, rel)
        try:
            name, boxes = detection.load_annotation(data.read_text(uri), uri, hp["num_classes"])
            check_width(len(boxes), hp, uri)
        except ClientError as exc:
            return None, str(exc)
        image = name.lstrip("/") or _image_beside(rel, present)
        if image not in present:
            return None, f"{uri}: image '{name or rel}' not found under {image_channel.uri}"
        return {"uri": storage.join(image_channel.uri, image), "boxes": boxes.ravel().tolist()}, None

    with ThreadPoolExecutor(16) as pool:  # small GETs: latency-bound on S3
        results = list(pool.map(one, files))
    problems = [p for _, p in results if p]
    if problems:
        raise ClientError(problems[:20] + (["(first 20 problems shown)"] if len(problems) > 20 else []))
    return [dict(row, id=i) for i, (row, _) in enumerate(results)]


def _image_beside(rel: str, present: set[str]) -> str:
    """No `file` field: the image with the annotation's base name (img1.json ↔ img1.jpg)."""
    stem = rel[: -len(".json")]
    for ext in (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG"):
        if stem + ext in present:
            return stem + ext
    return stem + ".jpg"


class LossMeter:
    """Sums of the two SSD losses per batch, averaged over batches of every worker."""

    def __init__(self, algo: ObjectDetection, hp):
        self.algo, self.hp, self.sums = algo, hp, None

    def update(self, outputs, batch) -> None:
        import torch

        from raysight.models import ssd

        with torch.no_grad():
            ce, l1 = ssd.multibox_loss(outputs, batch["label"], self.algo.anchors(self.hp, outputs.device))
        row = torch.stack([ce.detach(), l1.detach(), torch.ones((), device=outputs.device)]).float()
        self.sums = row if self.sums is None else self.sums + row

    def local(self) -> dict[str, float]:
        if self.sums is None:
            return {"cross_entropy": 0.0, "smooth_l1": 0.0}
        n = float(self.sums[2])
        return {"cross_entropy": float(self.sums[0]) / n, "smooth_l1": float(self.sums[1]) / n}

    def compute(self) -> dict[str, float]:
        import torch

        from raysight.train import dist

        sums = dist.all_sum(self.sums.cpu() if self.sums is not None else torch.zeros(3))
        n = max(float(sums[2]), 1.0)
        return {"train:cross_entropy": float(sums[0]) / n, "train:smooth_l1": float(sums[1]) / n}


class MAPMeter:
    """Detections and ground truth of this worker's validation share; compute() gathers
    every worker's images (each scored once) and returns VOC07 11-point mAP."""

    def __init__(self, algo: ObjectDetection, hp):
        self.algo, self.hp = algo, hp
        self.detections: list[np.ndarray] = []
        self.truth: list[np.ndarray] = []

    def update(self, outputs, batch) -> None:
        from raysight.models import ssd

        found = ssd.detect(outputs, self.algo.anchors(self.hp, outputs.device), self.hp["nms_threshold"])
        self.detections += [d.cpu().numpy() for d in found]
        for label in batch["label"].cpu().numpy():
            self.truth.append(label[label[:, 0] >= 0])

    def local(self) -> dict[str, float]:
        return {}

    def compute(self) -> dict[str, float]:
        from raysight import evaluation
        from raysight.train import dist

        detections, truth = [], []
        for d, t in dist.gather((self.detections, self.truth)):
            detections += d
            truth += t
        score, _ = evaluation.mean_ap(detections, truth, self.hp["num_classes"], self.hp["overlap_threshold"])
        return {"validation:mAP": score}


class Detector:
    """decode → resize to image_shape² (aspect not kept) → SSD → NMS at nms_threshold."""

    accepts = ("application/json", "application/json;annotation=1", "application/jsonlines")

    def __init__(self, model, meta):
        self.model = model.eval()
        self.hp = meta["hyperparameters"]
        self.size = int(self.hp["image_shape"])

    def predict(self, image):
        import torch

        from raysight.models import ssd

        pixels = np.asarray(image.resize((self.size, self.size), images.Image.BILINEAR))
        with torch.inference_mode():
            outputs = self.model(images.normalize(torch.from_numpy(pixels.copy())[None]))
            rows = ssd.detect(outputs, self.model.anchors, self.hp["nms_threshold"])[0]
        return {"rows": [[float(c), round(float(s), 6), *(round(float(v), 6) for v in box)]
                         for c, s, *box in rows.tolist()], "size": image.size}

    def render(self, result, accept: str) -> tuple[bytes, str]:
        if accept == "application/json;annotation=1":
            width, height = result["size"]
            doc = {"image_size": [{"width": width, "height": height, "depth": 3}],
                   "annotations": [{"class_id": int(c), "score": s, "left": round(x0 * width),
                                    "top": round(y0 * height), "width": round((x1 - x0) * width),
                                    "height": round((y1 - y0) * height)} for c, s, x0, y0, x1, y1 in result["rows"]]}
            return json.dumps(doc).encode(), "application/json"
        body = json.dumps({"prediction": result["rows"]})
        if accept == "application/jsonlines":
            return (body + "\n").encode(), "application/jsonlines"
        return body.encode(), "application/json"


register(ObjectDetection())
