"""SageMaker's Object Detection algorithm (SSD, VGG-16 or ResNet-50 base) on PyTorch.

What differs from the shared contract (algorithms/base.py), one seam per module:
`decode.py` (detection labels, always-on augmentation), `annotations.py` (JSON and
manifest index rows), the SSD network (models/ssd.py) and multibox criterion here,
`meters.py` (loss terms, VOC07 mAP), `predictor.py` (boxes), `preview.py` (a picture).
"""
from __future__ import annotations

import re

from raysight.algorithms import register
from raysight.algorithms.base import Algorithm, shared_rows, warn_if_async, with_rows
from raysight.algorithms.object_detection.annotations import annotation_rows, manifest_boxes
from raysight.algorithms.object_detection.decode import Decode, augment  # noqa: F401 - augment: tests use it
from raysight.algorithms.object_detection.meters import LossMeter, MAPMeter
from raysight.algorithms.object_detection.predictor import Detector
from raysight.hyperparams import Param, unit
from raysight.models import BASE_NETWORKS

WIDTH = "raysight_width_multiplier"

HYPERPARAMETERS = with_rows(shared_rows(), [
    Param("num_classes", "int", required=True, min=1, doc="Object classes (background excluded)."),
    Param("base_network", "str", "vgg-16", choices=BASE_NETWORKS, doc="SSD backbone."),
    Param("early_stopping", "bool", False, doc="Stop when validation mAP stops improving."),
    unit("early_stopping_tolerance", 0.0, "Relative mAP improvement that counts."),
    Param("freeze_layer_pattern", "str", None, doc="Regex: matching backbone layers get no updates."),
    Param("image_shape", "int", 300, min=300, doc="Side of the square network input (300 or 512)."),
    Param("label_width", "int", 350, min=7, doc="Padded label-vector length: >= 2 + 5 x most objects."),
    unit("learning_rate", 0.001, "Initial learning rate.", "Continuous", min_exclusive=True),
    unit("lr_scheduler_factor", 0.1, "LR multiplier at each step epoch.", min_exclusive=True, max_exclusive=True),
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
])


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
    decoder = Decode

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
    def index_rows(self, image_channel, index_channel, hp):
        return annotation_rows(image_channel, index_channel, hp)

    def manifest_converter(self, hp, channel):
        return manifest_boxes(hp)

    # -- loss and metrics ---------------------------------------------------------
    def criterion(self, hp, state, model):
        """Multibox loss on the model's own default boxes; its two terms go to the meter."""
        from raysight.models import ssd

        def loss(outputs, batch):
            ce, l1 = ssd.multibox_loss(outputs.float(), batch["label"], model.anchors.to(outputs.device))
            return ce + l1, {"cross_entropy": ce.detach(), "smooth_l1": l1.detach()}

        return loss

    def meter(self, hp, split, model):
        return LossMeter() if split == "train" else MAPMeter(hp, model.anchors)

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

    def preview(self, model, validation, hp):
        from raysight.algorithms.object_detection.preview import draw

        return draw(model, validation, hp)

    # -- serving ------------------------------------------------------------------
    def predictor(self, model, meta):
        return Detector(model, meta, self.input_shape(meta["hyperparameters"]))


register(ObjectDetection())
