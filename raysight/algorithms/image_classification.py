"""SageMaker's Image Classification algorithm (ResNet) on PyTorch.

Declares the five things an algorithm owns: hyperparameter rows, model builder,
data adapter, loss/metrics and predictor. Shared code does the rest.
"""
from __future__ import annotations

import json
import warnings
from typing import Any

import numpy as np

from raysight import data, images
from raysight.formats import recordio
from raysight.algorithms import register
from raysight.algorithms.base import RECORDIO, Algorithm, warn_if_async
from raysight.errors import ClientError
from raysight.hyperparams import Param, parse_epoch_list, unit
from raysight.models import CIFAR_DEPTHS, IMAGENET_DEPTHS

AUGMENTATIONS = ("crop", "crop_color", "crop_color_transform")


def parse_image_shape(text: str) -> tuple[int, int, int]:
    try:
        shape = tuple(int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"must be 'channels,height,width' such as '3,224,224', got '{text}'") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"must be 'channels,height,width' such as '3,224,224', got '{text}'")
    if shape[0] != 3:
        raise ValueError(f"must have 3 channels (RGB images), got '{text}'")
    return shape


HYPERPARAMETERS = [
    Param("num_classes", "int", required=True, min=1, doc="Number of output classes."),
    Param("num_training_samples", "int", required=True, min=1, doc="Training set size; drives LR-step timing."),
    Param("augmentation_type", "str", None, choices=AUGMENTATIONS, doc="crop | crop_color | crop_color_transform."),
    unit("beta_1", 0.9, "Adam first-moment decay.", "Continuous"),
    unit("beta_2", 0.999, "Adam second-moment decay.", "Continuous"),
    Param("checkpoint_frequency", "int", None, min=1, doc="Save parameters every N epochs into model.tar.gz."),
    Param("early_stopping", "bool", False, doc="Stop when validation accuracy stops improving."),
    Param("early_stopping_min_epochs", "int", 10, min=1, doc="Epochs before early stopping may trigger."),
    Param("early_stopping_patience", "int", 5, min=1, doc="Epochs without improvement before stopping."),
    unit("early_stopping_tolerance", 0.0, "Relative improvement that counts."),
    Param("epochs", "int", 30, min=1, doc="Training epochs."),
    unit("eps", 1e-8, "Epsilon for adam and rmsprop.", "Continuous"),
    unit("gamma", 0.9, "RMSProp squared-gradient decay.", "Continuous"),
    Param("image_shape", "custom", (3, 224, 224), parser=parse_image_shape, doc="Network input 'C,H,W'."),
    Param("kv_store", "str", None, choices=("dist_sync", "dist_async"), doc="Multi-host sync mode."),
    unit("learning_rate", 0.1, "Initial learning rate.", "Continuous"),
    unit("lr_scheduler_factor", 0.1, "LR multiplier at each step epoch."),
    Param("lr_scheduler_step", "custom", (), parser=parse_epoch_list, doc="Epochs after which LR decays, '10, 20'."),
    Param("mini_batch_size", "int", 32, min=1, tunable="Integer", doc="Batch per host, split over its GPUs."),
    unit("momentum", 0.9, "Momentum for sgd and nag.", "Continuous"),
    Param("multi_label", "int", 0, choices=(0, 1), doc="1 = multi-label (sigmoid + BCE)."),
    Param("num_layers", "int", 152, choices=IMAGENET_DEPTHS + CIFAR_DEPTHS, doc="ResNet depth."),
    Param("optimizer", "str", "sgd", choices=("sgd", "adam", "rmsprop", "nag"), tunable="Categorical",
          doc="Optimizer."),
    Param("precision_dtype", "str", "float32", choices=("float32", "float16"), doc="Training precision."),
    Param("resize", "int", None, min=1, doc="Shorter side is rescaled to this before cropping."),
    Param("top_k", "int", None, min=2, doc="Also report top-k accuracy."),
    Param("use_pretrained_model", "int", 0, choices=(0, 1), doc="1 = start from ImageNet weights."),
    Param("use_weighted_loss", "int", 0, choices=(0, 1), doc="Class-frequency-weighted loss (multi-label)."),
    unit("weight_decay", 0.0001, "L2 coefficient for sgd and nag.", "Continuous"),
]


class Decode:
    """Ray Data map_batches op: read → decode → resize → crop/augment → uint8 NHWC."""

    def __init__(self, hp: dict[str, Any], training: bool, cache: str | None = None):
        self.cache = cache  # file mode: node-local copies; None streams (pipe mode)
        self.shape = hp["image_shape"]
        self.resize = hp["resize"]
        self.augment = hp["augmentation_type"] if training else None
        self.multi_label = bool(hp["multi_label"])
        self.num_classes = hp["num_classes"]
        # without augmentation_type the crop is central and nothing is random, so the
        # pixels can be decoded once and reused every epoch (data.decoded_once)
        self.deterministic = self.augment is None
        _, height, width = self.shape
        self.row_bytes = height * width * 3 + 8 * (self.num_classes if self.multi_label else 1) + 8

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        _, height, width = self.shape
        rng = np.random.default_rng() if self.augment else None
        if "record" in batch:  # RecordIO: IRHeader + encoded image
            where = [f"{s} record at byte {o}" for s, o in zip(batch["source"], batch["offset"])]
            records = [recordio.unpack_image(bytes(r), w) for r, w in zip(batch["record"], where)]
            labels = [self._checked(r.label, w) for r, w in zip(records, where)]
            blobs, ids = [r.image for r in records], [r.id for r in records]
        else:  # images + .lst: labels were checked against the list already
            where, blobs = [str(u) for u in batch["uri"]], data.read_all(batch["uri"], self.cache)
            labels, ids = list(batch["label"]), list(batch["id"])
        out = np.empty((len(blobs), height, width, 3), dtype=np.uint8)
        for i, (uri, raw) in enumerate(zip(where, blobs)):
            try:
                image = images.decode_rgb(raw, str(uri))
            except images.BadImage as exc:
                raise ClientError(str(exc)) from None
            if self.resize:
                image = images.resize_shorter(image, self.resize)
            if self.augment == "crop_color_transform":
                image = images.random_affine(image, rng)
                if image.size[0] < width or image.size[1] < height:
                    image = images.resize_shorter(image, max(height, width))
            if image.size[0] < width or image.size[1] < height:
                raise ClientError(
                    f"{uri}: image is {image.size[0]}x{image.size[1]} after resize, smaller than "
                    f"image_shape {height}x{width}; set 'resize' to at least {max(height, width)}"
                )
            image = images.crop(image, height, width, rng)
            pixels = np.asarray(image)
            if rng is not None and rng.random() < 0.5:
                pixels = pixels[:, ::-1]
            if self.augment in ("crop_color", "crop_color_transform"):
                pixels = images.jitter_hls(pixels, rng.uniform(-36, 36), rng.uniform(-50, 50), rng.uniform(-50, 50))
            out[i] = pixels
        return {"image": out, "label": self._labels(labels), "id": np.asarray(ids, dtype=np.int64)}

    def _checked(self, label: np.ndarray, where: str) -> np.ndarray:
        problem = label_problem(tuple(float(x) for x in label), where, self.num_classes, self.multi_label)
        if problem:
            raise ClientError(problem)
        return label

    def _labels(self, labels) -> np.ndarray:
        if not self.multi_label:
            return np.asarray([int(row[0]) for row in labels], dtype=np.int64)
        return np.asarray([list(row) for row in labels], dtype=np.float32)


def positive_weights(labels) -> list[float]:
    """use_weighted_loss: per-class weight for positives = negatives / positives in the
    training set, so rare labels count as much as common ones (BCE pos_weight)."""
    y = np.asarray([list(r) for r in labels], dtype=np.float64)
    positives = y.sum(axis=0)
    return [float((len(y) - p) / p) if p else 1.0 for p in positives]


def label_problem(labels: tuple, where: str, k: int, multi: bool) -> str | None:
    """What is wrong with one sample's labels, or None."""
    if multi:
        if len(labels) != k:
            return f"{where}: multi-label row has {len(labels)} labels, expected num_classes={k}"
        if any(x not in (0.0, 1.0) for x in labels):
            return f"{where}: multi-label values must be 0 or 1, got {list(labels)}"
        return None
    c = labels[0]
    if not float(c).is_integer() or not 0 <= c < k:
        return f"{where}: class id {c:g} must be an integer in [0, {k - 1}] (num_classes={k})"
    return None


class ImageClassification(Algorithm):
    name = "image-classification"
    hyperparameters = HYPERPARAMETERS
    objective = "validation:accuracy"
    tuning_metrics = ("validation:accuracy", "train:accuracy")
    architecture_keys = ("num_layers", "image_shape", "num_classes")
    artifact_prefix = "image-classification"
    image_index_channels = ("train_lst", "validation_lst")

    # -- request -----------------------------------------------------------------
    def check(self, hp, job) -> list[str]:
        problems = []
        _, height, width = hp["image_shape"]
        if hp["use_pretrained_model"] and hp["num_layers"] not in IMAGENET_DEPTHS:
            problems.append(
                f"use_pretrained_model=1 needs num_layers in {IMAGENET_DEPTHS}, got {hp['num_layers']}"
            )
        if hp["checkpoint_frequency"] and hp["checkpoint_frequency"] > hp["epochs"]:
            problems.append(
                f"checkpoint_frequency ({hp['checkpoint_frequency']}) must not exceed epochs ({hp['epochs']})"
            )
        if hp["resize"] is not None and hp["resize"] <= max(height, width):
            problems.append(f"resize ({hp['resize']}) must exceed both height and width of image_shape "
                            f"({height}x{width})")
        if hp["top_k"] is not None and hp["top_k"] > hp["num_classes"]:
            problems.append(f"top_k ({hp['top_k']}) must not exceed num_classes ({hp['num_classes']})")
        if hp["use_weighted_loss"] and not hp["multi_label"]:
            warnings.warn("use_weighted_loss=1 has an effect only with multi_label=1 (as in SageMaker)", stacklevel=2)
        warn_if_async(hp)
        problems += self.channel_problems(job)
        if not problems and self.image_format(job) and hp["resize"] is None:
            problems.append("hyperparameter 'resize' is required for image content types")
        return problems

    # -- model --------------------------------------------------------------------
    def input_shape(self, hp):
        return tuple(hp["image_shape"])

    def build_model(self, hp):
        from raysight.models.resnet import build_resnet

        return build_resnet(hp["num_layers"], hp["num_classes"])

    def pretrained_state(self, hp):
        """torchvision's ImageNet ResNet weights; the final layer stays randomly initialised."""
        from raysight.models.weights import load_pretrained, merge_backbone

        arch = f"resnet{hp['num_layers']}"
        model = self.build_model(hp)
        merge_backbone(model, load_pretrained(arch), ("fc.",), f"{arch} ImageNet weights")
        return model.state_dict()

    # -- data ---------------------------------------------------------------------
    def datasets(self, job, hp, shards=1):
        datasets = {}
        for split in ("train", "validation"):
            channel, training = job.channels[split], split == "train"
            if channel.s3_data_type == "AugmentedManifestFile":
                rows = data.manifest_rows(channel, self._manifest_label(hp, channel))
            elif channel.mime == RECORDIO:
                rows = None  # labels travel inside the records
            else:
                rows = data.lst_rows(channel, job.channels[f"{split}_lst"], self._label_checker(hp))
            decode = Decode(hp, training=training, cache=data.file_mode_cache(channel))
            parts = data.channel_datasets(channel, rows, decode, training, shards)
            if training and hp["use_weighted_loss"] and hp["multi_label"]:
                if rows is not None:
                    labels = [r["label"] for r in rows]
                else:  # RecordIO: one pass over the labels
                    labels = [row for ds in parts for b in ds.select_columns(["label"]).iter_batches(
                        batch_size=1024, batch_format="numpy") for row in b["label"]]
                hp["_pos_weight"] = positive_weights(labels)
            datasets[split] = parts if len(parts) > 1 else parts[0]
        return datasets

    def _manifest_label(self, hp, channel):
        """Manifest label attribute → the same label list a .lst row would give."""
        from raysight.formats.manifest import label_values

        k, multi = hp["num_classes"], bool(hp["multi_label"])
        class_ids = "label-format=class-id" in channel.content_type.replace(" ", "")

        def convert(value, where):
            values = label_values(value)
            if multi and class_ids:
                bad = [v for v in values if not float(v).is_integer() or not 0 <= v < k]
                if bad:
                    raise ClientError(f"{where}: class ids {bad} must be integers in [0, {k - 1}]")
                values = [1.0 if i in set(map(int, values)) else 0.0 for i in range(k)]
            problem = label_problem(tuple(values), where, k, multi)
            if problem:
                raise ClientError(problem)
            return values

        return convert

    def _label_checker(self, hp):
        return lambda labels, where: label_problem(labels, where, hp["num_classes"], bool(hp["multi_label"]))

    def prepare_batch(self, batch, hp, training):
        return {"image": images.normalize(batch["image"]), "label": batch["label"]}

    # -- loss and metrics ---------------------------------------------------------
    def loss(self, outputs, batch, hp):
        import torch
        import torch.nn.functional as F

        if hp["multi_label"]:
            weight = hp.get("_pos_weight")
            if weight is not None:
                weight = torch.as_tensor(weight, dtype=outputs.dtype, device=outputs.device)
            return F.binary_cross_entropy_with_logits(outputs, batch["label"], pos_weight=weight)
        return F.cross_entropy(outputs, batch["label"])

    def meter(self, hp, split):
        return AccuracyMeter(split, bool(hp["multi_label"]), hp["top_k"])

    def log_epoch(self, epoch, metrics, seconds, hp):
        lines = [f"Epoch[{epoch}] Train-accuracy={metrics['train:accuracy']:.6f}"]
        if "validation:accuracy" in metrics:
            lines.append(f"Epoch[{epoch}] Validation-accuracy={metrics['validation:accuracy']:.6f}")
        for name, value in metrics.items():
            if "top_k_accuracy" in name:
                split, key = name.split(":")
                lines.append(f"Epoch[{epoch}] {split.capitalize()}-{key}={value:.6f}")
        lines.append(f"Epoch[{epoch}] Time cost={seconds:.3f}")
        return lines

    # -- serving ------------------------------------------------------------------
    def predictor(self, model, meta):
        return Predictor(model, meta)


class AccuracyMeter:
    """Correct/total sums, all-reduced across workers in compute()."""

    def __init__(self, split: str, multi_label: bool, top_k: int | None):
        self.split, self.multi_label, self.top_k = split, multi_label, top_k
        self.sums = None

    def update(self, outputs, batch) -> None:
        import torch

        labels = batch["label"]
        if self.multi_label:
            correct = ((outputs > 0).float() == labels).float().mean(dim=1).sum()
            row = [correct, torch.tensor(float(len(labels)), device=outputs.device)]
        else:
            row = [(outputs.argmax(1) == labels).sum().float(), torch.tensor(float(len(labels)), device=outputs.device)]
            if self.top_k:
                top = outputs.topk(self.top_k, dim=1).indices
                row.append((top == labels[:, None]).any(dim=1).sum().float())
        row = torch.stack([r.detach().float() for r in row])
        self.sums = row if self.sums is None else self.sums + row

    def local(self) -> dict[str, float]:
        """This worker's running accuracy (no collective: safe to call on one rank)."""
        if self.sums is None or float(self.sums[1]) == 0:
            return {"accuracy": 0.0}
        return {"accuracy": float(self.sums[0]) / float(self.sums[1])}

    def compute(self) -> dict[str, float]:
        import torch

        from raysight.train import dist

        # Every worker contributes a tensor of the same width, even one that saw no
        # samples (an exact validation split can leave a worker empty).
        width = 3 if self.top_k and not self.multi_label else 2
        sums = dist.all_sum(self.sums if self.sums is not None else torch.zeros(width))
        total = float(sums[1])
        metrics = {f"{self.split}:accuracy": float(sums[0]) / total if total else 0.0}
        if width == 3:
            metrics[f"{self.split}:top_k_accuracy_{self.top_k}"] = float(sums[2]) / total if total else 0.0
        return metrics


class Predictor:
    """decode → resize to image_shape (no crop, aspect not kept) → probabilities."""

    def __init__(self, model, meta):
        self.model = model.eval()
        self.hp = meta["hyperparameters"]
        self.shape = tuple(self.hp["image_shape"])

    def predict(self, image):
        import torch

        _, height, width = self.shape
        pixels = np.asarray(image.resize((width, height), images.Image.BILINEAR))
        x = images.normalize(torch.from_numpy(pixels.copy())[None])
        with torch.inference_mode():
            logits = self.model(x)[0].float()
        probs = torch.sigmoid(logits) if self.hp["multi_label"] else torch.softmax(logits, dim=0)
        return [round(float(p), 8) for p in probs]

    def render(self, result, accept: str) -> tuple[bytes, str]:
        if accept == "application/jsonlines":
            return (json.dumps({"prediction": result}) + "\n").encode(), "application/jsonlines"
        return json.dumps(result).encode(), "application/json"


register(ImageClassification())
