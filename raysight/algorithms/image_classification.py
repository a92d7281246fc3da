"""SageMaker's Image Classification algorithm (ResNet) on PyTorch.

What differs from the shared contract (algorithms/base.py): rows beyond the shared
ones, .lst index rows and labels, ResNet decode/augment, cross-entropy or BCE,
accuracy, and probabilities as answers.
"""
from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from raysight import data, images
from raysight.algorithms import base, register
from raysight.algorithms.base import Algorithm, shared_rows, warn_if_async, with_rows
from raysight.errors import ClientError
from raysight.formats import class_id_problem
from raysight.hyperparams import Param, unit
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


HYPERPARAMETERS = with_rows(shared_rows(), [
    Param("augmentation_type", "str", None, choices=AUGMENTATIONS,
          doc="Training augmentation: crop, + colour, + affine."),
    unit("beta_1", 0.9, "Adam first-moment decay.", "Continuous"),
    unit("beta_2", 0.999, "Adam second-moment decay.", "Continuous"),
    Param("checkpoint_frequency", "int", None, min=1, doc="Save parameters every N epochs into model.tar.gz."),
    Param("early_stopping", "bool", False, doc="Stop when validation accuracy stops improving."),
    unit("eps", 1e-8, "Epsilon for adam and rmsprop.", "Continuous"),
    unit("gamma", 0.9, "RMSProp squared-gradient decay.", "Continuous"),
    Param("image_shape", "custom", (3, 224, 224), parser=parse_image_shape, doc="Network input 'C,H,W'."),
    Param("multi_label", "int", 0, choices=(0, 1), doc="1 = multi-label (sigmoid + BCE)."),
    Param("num_layers", "int", 152, choices=IMAGENET_DEPTHS + CIFAR_DEPTHS, doc="ResNet depth."),
    Param("precision_dtype", "str", "float32", choices=("float32", "float16"), doc="Training precision."),
    Param("resize", "int", None, min=1, doc="Shorter side is rescaled to this before cropping."),
    Param("top_k", "int", None, min=2, doc="Also report top-k accuracy."),
    Param("use_pretrained_model", "int", 0, choices=(0, 1), doc="1 = start from ImageNet weights."),
    Param("use_weighted_loss", "int", 0, choices=(0, 1), doc="Class-frequency-weighted loss (multi-label)."),
])


class Decode(base.Decode):
    """read → decode → resize → crop/augment → uint8 NHWC; labels as class ids or multi-hot rows."""

    def __init__(self, hp: dict[str, Any], training: bool, cache: str | None = None):
        super().__init__(hp, training, cache)
        _, self.height, self.width = hp["image_shape"]
        self.resize = hp["resize"]
        self.augment = hp["augmentation_type"] if training else None
        self.multi_label = bool(hp["multi_label"])
        self.num_classes = hp["num_classes"]
        # without augmentation_type the crop is central and nothing is random, so the
        # pixels can be decoded once and reused every epoch (data.decoded_once)
        self.deterministic = self.augment is None
        self.random = not self.deterministic
        self.row_bytes = self.height * self.width * 3 + 8 * (self.num_classes if self.multi_label else 1) + 8

    def record_label(self, label: np.ndarray, where: str) -> np.ndarray:
        problem = label_problem(tuple(float(x) for x in label), where, self.num_classes, self.multi_label)
        if problem:
            raise ClientError(problem)
        return label

    def decode_image(self, raw: bytes, where: str):
        # With `resize`, a JPEG at least twice the target is decoded at a reduced DCT scale,
        # then resized to what a full decode would give (images.decode_rgb's draft)
        return images.decode_rgb(raw, where, draft=self.resize)

    def decode_one(self, image, label, where, rng):
        height, width = self.height, self.width
        if self.augment == "crop_color_transform":  # resize, affine and crop in one warp
            pixels = images.transform_crop(image, self.resize, height, width, rng)
        else:
            pixels = images.resize_shorter(image, self.resize) if self.resize else np.asarray(image)
            if pixels.shape[1] < width or pixels.shape[0] < height:
                raise ClientError(
                    f"{where}: image is {pixels.shape[1]}x{pixels.shape[0]} after resize, smaller than "
                    f"image_shape {height}x{width}; set 'resize' to at least {max(height, width)}"
                )
            pixels = images.crop(pixels, height, width, rng)
        if rng is not None and rng.random() < 0.5:
            pixels = pixels[:, ::-1]
        if self.augment in ("crop_color", "crop_color_transform"):
            pixels = images.jitter_hls(pixels, rng.uniform(-36, 36), rng.uniform(-50, 50), rng.uniform(-50, 50))
        return pixels, label

    def collate(self, labels) -> np.ndarray:
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
    return class_id_problem(labels[:1], where, k)


class ImageClassification(Algorithm):
    name = "image-classification"
    hyperparameters = HYPERPARAMETERS
    objective = "validation:accuracy"
    tuning_metrics = ("validation:accuracy", "train:accuracy")
    architecture_keys = ("num_layers", "image_shape", "num_classes")
    artifact_prefix = "image-classification"
    image_index_channels = ("train_lst", "validation_lst")
    decoder = Decode

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
    def index_rows(self, image_channel, index_channel, hp):
        k, multi = hp["num_classes"], bool(hp["multi_label"])
        return data.lst_rows(image_channel, index_channel, lambda labels, where: label_problem(labels, where, k, multi))

    def manifest_converter(self, hp, channel):
        """Manifest label attribute → the same label list a .lst row would give."""
        from raysight.formats.manifest import label_values

        k, multi = hp["num_classes"], bool(hp["multi_label"])
        class_ids = "label-format=class-id" in channel.content_type.replace(" ", "")

        def convert(value, where):
            values = label_values(value)
            if multi and class_ids:
                bad = class_id_problem(values, where, k)
                if bad:
                    raise ClientError(bad)
                values = [1.0 if i in set(map(int, values)) else 0.0 for i in range(k)]
            problem = label_problem(tuple(values), where, k, multi)
            if problem:
                raise ClientError(problem)
            return values

        return convert

    def runtime_state(self, hp, rows, train_parts):
        """use_weighted_loss with multi_label: BCE pos_weight from the training labels."""
        if not (hp["use_weighted_loss"] and hp["multi_label"]):
            return {}
        if rows is not None:
            labels = [r["label"] for r in rows]
        else:  # RecordIO: one pass over the labels
            labels = [row for ds in train_parts for b in ds.select_columns(["label"]).iter_batches(
                batch_size=1024, batch_format="numpy") for row in b["label"]]
        return {"pos_weight": positive_weights(labels)}

    # -- loss and metrics ---------------------------------------------------------
    def criterion(self, hp, state, model):
        import torch
        import torch.nn.functional as F

        weight = state.get("pos_weight")

        def loss(outputs, batch):
            if not hp["multi_label"]:
                return F.cross_entropy(outputs, batch["label"]), {}
            w = None if weight is None else torch.as_tensor(weight, dtype=outputs.dtype, device=outputs.device)
            return F.binary_cross_entropy_with_logits(outputs, batch["label"], pos_weight=w), {}

        return loss

    def meter(self, hp, split, model=None):
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
        return Classifier(model, meta, self.input_shape(meta["hyperparameters"]))


class AccuracyMeter(base.SumMeter):
    """Correct / total (and top-k correct), all-reduced across workers."""

    def __init__(self, split: str, multi_label: bool, top_k: int | None):
        super().__init__()
        self.split, self.multi_label, self.top_k = split, multi_label, top_k
        self.width = 3 if top_k and not multi_label else 2

    def row(self, outputs, batch, terms):
        labels = batch["label"]
        if self.multi_label:
            return [((outputs > 0).float() == labels).float().mean(dim=1).sum(), float(len(labels))]
        row = [(outputs.argmax(1) == labels).sum(), float(len(labels))]
        if self.width == 3:
            row.append((outputs.topk(self.top_k, dim=1).indices == labels[:, None]).any(dim=1).sum())
        return row

    def finish(self, sums):
        total = sums[1]
        metrics = {f"{self.split}:accuracy": sums[0] / total if total else 0.0}
        if self.width == 3:
            metrics[f"{self.split}:top_k_accuracy_{self.top_k}"] = sums[2] / total if total else 0.0
        return metrics

    def local(self):
        return {"accuracy": super().local()["accuracy"]}  # the Speedometer line shows accuracy only


class Classifier(base.Predictor):
    """Probabilities: softmax, or per-class sigmoid for multi-label models."""

    def answer(self, output, size):
        import torch

        logits = output.float()
        probs = torch.sigmoid(logits) if self.hp["multi_label"] else torch.softmax(logits, dim=0)
        return [round(float(p), 8) for p in probs]


register(ImageClassification())
