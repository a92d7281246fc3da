"""SSD on a VGG-16 or ResNet-50 base, from torchvision's detection blocks.

- VGG-16: the SSD300/512 feature pyramid of Liu et al. (torchvision's
  `SSDFeatureExtractorVGG` layout: conv4_3 with L2 scaling, atrous fc6/fc7, extra
  layers; one more extra layer for image_shape >= 512).
- ResNet-50: NVIDIA's SSD300 recipe: conv1..layer3 with layer3's stride set to 1
  (a 38x38 map at 300 px), then the extra layers.

Module names at width 1 are torchvision's (`features.N` for VGG, `conv1`/`layer1`..
for ResNet), so torchvision's ImageNet files load into the trunk unchanged.
`width` scales every channel count; 1.0 is the published network, smaller values
make CPU-sized networks for tests and demos (a raysight extension).

`forward` returns one tensor (N, anchors, 4 + classes + 1): box regression then
class logits (class 0 = background), so the shared train loop handles it like any
other output. Anchors are normalised [0, 1] corners (`default_boxes`).
"""
from __future__ import annotations

import re
from collections import OrderedDict
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.ssd import SSDHead

from raysight.models import BASE_NETWORKS

TORCHVISION_ARCH = {"vgg-16": "vgg16", "resnet-50": "resnet50"}
BACKGROUND_PRIOR_LOGIT = 4.0  # softmax ≈ 0.98 background at init (RetinaNet's prior): faster, steadier start
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _c(channels: int, width: float) -> int:
    return max(4, int(round(channels * width)))


def vgg16_trunk(width: float = 1.0) -> nn.Sequential:
    """torchvision's `vgg16().features` (same indices), channels scaled by `width`."""
    layers, cin = [], 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            conv = nn.Conv2d(cin, _c(v, width), 3, padding=1)
            # torchvision's VGG init: without batch norm, PyTorch's default conv init leaves
            # the 13-layer trunk nearly untrainable from scratch (measured: no mAP in 25 epochs)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.constant_(conv.bias, 0.0)
            layers += [conv, nn.ReLU(inplace=True)]
            cin = _c(v, width)
    return nn.Sequential(*layers)


def resnet50_trunk(width: float = 1.0) -> nn.Sequential:
    """torchvision's ResNet-50 conv1..layer3 (same names), channels scaled by `width`."""
    Bottleneck = tv_resnet.Bottleneck
    stem = _c(64, width)
    parts = OrderedDict(conv1=nn.Conv2d(3, stem, 7, 2, 3, bias=False), bn1=nn.BatchNorm2d(stem),
                        relu=nn.ReLU(inplace=True), maxpool=nn.MaxPool2d(3, 2, 1))
    inplanes = stem
    for i, (planes, blocks, stride) in enumerate(((64, 3, 1), (128, 4, 2), (256, 6, 2)), start=1):
        planes = _c(planes, width)
        layer = []
        for j in range(blocks):
            s = stride if j == 0 else 1
            down = None
            if s != 1 or inplanes != planes * Bottleneck.expansion:
                down = nn.Sequential(nn.Conv2d(inplanes, planes * Bottleneck.expansion, 1, s, bias=False),
                                     nn.BatchNorm2d(planes * Bottleneck.expansion))
            layer.append(Bottleneck(inplanes, planes, s, down))
            inplanes = planes * Bottleneck.expansion
        parts[f"layer{i}"] = nn.Sequential(*layer)
    # NVIDIA SSD300: layer3 keeps stride 1, so conv4 features stay at 38x38 for 300 px
    first = parts["layer3"][0]
    first.conv2.stride = (1, 1)
    first.downsample[0].stride = (1, 1)
    return nn.Sequential(parts)


def _extra(cin: int, mid: int, cout: int, width: float, **conv) -> nn.Sequential:
    mid, cout = _c(mid, width), _c(cout, width)
    return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 3, **conv), nn.ReLU(inplace=True))


class VGGFeatures(nn.Module):
    """conv4_3 (L2-normalised, learnable scale), fc7, then the extra layers."""

    def __init__(self, trunk: nn.Sequential, width: float, highres: bool):
        super().__init__()
        pools = [i for i, layer in enumerate(trunk) if isinstance(layer, nn.MaxPool2d)]
        trunk[pools[2]].ceil_mode = True  # 75 → 38 at 300 px, as in the paper
        c4, fc = _c(512, width), _c(1024, width)
        self.features = nn.Sequential(*trunk[: pools[3]])  # up to conv4_3
        self.scale_weight = nn.Parameter(torch.ones(c4) * 20)
        fc67 = nn.Sequential(nn.MaxPool2d(3, 1, 1), nn.Conv2d(c4, fc, 3, padding=6, dilation=6),
                             nn.ReLU(inplace=True), nn.Conv2d(fc, fc, 1), nn.ReLU(inplace=True))
        extra = [nn.Sequential(*trunk[pools[3]: -1], fc67),
                 _extra(fc, 256, 512, width, padding=1, stride=2),
                 _extra(_c(512, width), 128, 256, width, padding=1, stride=2),
                 _extra(_c(256, width), 128, 256, width),
                 _extra(_c(256, width), 128, 256, width)]
        if highres:
            extra.append(nn.Sequential(nn.Conv2d(_c(256, width), _c(128, width), 1), nn.ReLU(inplace=True),
                                       nn.Conv2d(_c(128, width), _c(256, width), 4), nn.ReLU(inplace=True)))
        self.extra = nn.ModuleList(extra)
        _xavier(self.extra[1:])
        _xavier(fc67)
        self.out_channels = [c4, fc] + [_c(c, width) for c in (512, 256, 256, 256)] + \
            ([_c(256, width)] if highres else [])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.features(x)
        out = [self.scale_weight.view(1, -1, 1, 1) * F.normalize(x)]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


class ResNetFeatures(nn.Module):
    def __init__(self, trunk: nn.Sequential, width: float, highres: bool):
        super().__init__()
        self.trunk = trunk
        c3 = _c(256, width) * tv_resnet.Bottleneck.expansion
        extra = [_extra(c3, 256, 512, width, padding=1, stride=2),
                 _extra(_c(512, width), 256, 512, width, padding=1, stride=2),
                 _extra(_c(512, width), 128, 256, width, padding=1, stride=2),
                 _extra(_c(256, width), 128, 256, width),
                 _extra(_c(256, width), 128, 256, width)]
        if highres:
            extra.append(_extra(_c(256, width), 128, 256, width))
        self.extra = nn.ModuleList(extra)
        _xavier(self.extra)
        self.out_channels = [c3] + [_c(c, width) for c in (512, 512, 256, 256, 256)] + \
            ([_c(256, width)] if highres else [])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.trunk(x)
        out = [x]
        for block in self.extra:
            x = block(x)
            out.append(x)
        return out


def _xavier(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            nn.init.constant_(m.bias, 0.0)


def anchor_generator(highres: bool) -> DefaultBoxGenerator:
    if highres:  # SSD512's seven maps (Liu et al., caffe model zoo sizes / 512)
        return DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2, 3], [2], [2]],
                                   scales=[0.04, 0.1, 0.26, 0.42, 0.58, 0.74, 0.9, 1.06])
    return DefaultBoxGenerator([[2], [2, 3], [2, 3], [2, 3], [2], [2]],
                               scales=[0.07, 0.15, 0.33, 0.51, 0.69, 0.87, 1.05])


class SSD(nn.Module):
    def __init__(self, base_network: str, num_classes: int, image_size: int, width: float = 1.0,
                 trunk: nn.Sequential | None = None):
        super().__init__()
        highres = image_size >= 512
        if base_network == "vgg-16":
            self.backbone = VGGFeatures(trunk if trunk is not None else vgg16_trunk(width), width, highres)
        elif base_network == "resnet-50":
            self.backbone = ResNetFeatures(trunk if trunk is not None else resnet50_trunk(width), width, highres)
        else:
            raise ValueError(f"base_network must be one of {BASE_NETWORKS}, got '{base_network}'")
        generator = anchor_generator(highres)
        self.head = SSDHead(self.backbone.out_channels, generator.num_anchors_per_location(), num_classes + 1)
        for conv in self.head.classification_head.module_list:  # start from "background is likely"
            nn.init.constant_(conv.bias.view(-1, num_classes + 1)[:, 0], BACKGROUND_PRIOR_LOGIT)
        self.register_buffer("anchors", default_boxes(base_network, image_size, width).clone(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(self.backbone(x))
        return torch.cat([out["bbox_regression"], out["cls_logits"]], dim=-1)


@lru_cache(maxsize=8)
def default_boxes(base_network: str, image_size: int, width: float = 1.0) -> torch.Tensor:
    """(anchors, 4) normalised xyxy default boxes. The feature-map sizes come from a
    shape-only pass of the backbone on the meta device: no weights, no compute."""
    with torch.device("meta"):
        highres = image_size >= 512
        cls = VGGFeatures if base_network == "vgg-16" else ResNetFeatures
        trunk = vgg16_trunk(width) if base_network == "vgg-16" else resnet50_trunk(width)
        maps = cls(trunk, width, highres)(torch.empty(1, 3, image_size, image_size))
    sizes = [tuple(m.shape[-2:]) for m in maps]
    images = ImageList(torch.zeros(1, 3, image_size, image_size), [(image_size, image_size)])
    boxes = anchor_generator(image_size >= 512)(images, [torch.zeros(1, 1, *s) for s in sizes])[0]
    return (boxes / image_size).clamp_(0, 1)


# -- SageMaker (MXNet) layer names, for freeze_layer_pattern -----------------------------
def _vgg_layer_names() -> tuple[dict[int, str], int]:
    """({trunk index of each conv: MXNet name such as conv4_3}, index of the 4th max pool,
    where VGGFeatures splits the trunk between `features` and `extra.0`)."""
    names, pools, index, block, conv = {}, [], 0, 1, 0
    for v in _VGG16:
        if v == "M":
            pools.append(index)
            index, block, conv = index + 1, block + 1, 0
        else:
            conv += 1
            names[index] = f"conv{block}_{conv}"
            index += 2  # conv, ReLU
    return names, pools[3]


_VGG_CONV_NAMES, _VGG_SPLIT = _vgg_layer_names()


def mxnet_name(base_network: str, name: str) -> str | None:
    """The MXNet symbol name of a backbone parameter (vgg16 / resnet-50 symbol files),
    e.g. backbone.features.0.weight → conv1_1_weight, backbone.trunk.layer1.0.conv1.weight
    → stage1_unit1_conv1_weight; None for parameters MXNet's base network lacks."""
    if base_network == "vgg-16":
        m = re.fullmatch(r"backbone\.(features|extra\.0)\.(\d+)\.(weight|bias)", name)
        if m:
            index = int(m.group(2)) + (_VGG_SPLIT if m.group(1) == "extra.0" else 0)
            return f"{_VGG_CONV_NAMES[index]}_{m.group(3)}" if index in _VGG_CONV_NAMES else None
        m = re.fullmatch(r"backbone\.extra\.0\.\d+\.(\d)\.(weight|bias)", name)
        if m:
            return f"{ {'1': 'fc6', '3': 'fc7'}.get(m.group(1), 'fc')}_{m.group(2)}"
        if name == "backbone.scale_weight":
            return "relu4_3_scale"
        return None
    bn = {"weight": "gamma", "bias": "beta"}
    if name == "backbone.trunk.conv1.weight":
        return "conv0_weight"
    m = re.fullmatch(r"backbone\.trunk\.bn1\.(weight|bias)", name)
    if m:
        return f"bn0_{bn[m.group(1)]}"
    m = re.fullmatch(r"backbone\.trunk\.layer(\d)\.(\d+)\.(conv\d|bn\d|downsample\.[01])\.(weight|bias)", name)
    if not m:
        return None
    unit = f"stage{m.group(1)}_unit{int(m.group(2)) + 1}"
    part, param = m.group(3), m.group(4)
    if part == "downsample.0":
        return f"{unit}_sc_{param}"
    if part == "downsample.1":
        return f"{unit}_sc_bn_{bn[param]}"
    return f"{unit}_{part}_{bn[param] if part.startswith('bn') else param}"


def freeze(model: nn.Module, base_network: str, pattern: str | None) -> list[str]:
    """Stop updates to backbone parameters whose raysight or MXNet name matches
    `pattern` (re.search). Returns the frozen raysight names."""
    if not pattern:
        return []
    regex = re.compile(pattern)
    frozen = []
    for name, param in model.named_parameters():
        if not name.startswith("backbone."):
            continue
        mx = mxnet_name(base_network, name)
        if regex.search(name) or (mx is not None and regex.search(mx)):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen


# -- training targets, loss and decoding -------------------------------------------------
BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # SSD's variances 0.1/0.2, as torchvision codes them
MATCH_IOU = 0.5  # anchor ↔ ground truth matching (SSD paper); not SageMaker's overlap_threshold
NEG_POS_RATIO = 3


def multibox_loss(outputs: torch.Tensor, labels: torch.Tensor, anchors: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """SSD's loss (torchvision's `SSD.compute_loss`): (cross-entropy with 3:1 hard
    negative mining, smooth L1 on matched anchors), each divided by the positives.

    outputs: (N, A, 4 + C + 1); labels: (N, M, 5) rows [class, xmin, ymin, xmax, ymax]
    normalised, padded with -1; anchors: (A, 4) normalised xyxy."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import box_iou

    coder = det_utils.BoxCoder(BOX_WEIGHTS)
    matcher = det_utils.SSDMatcher(MATCH_IOU)
    regression, logits = outputs[..., :4], outputs[..., 4:]
    cls_targets, box_losses, positives = [], [], 0
    for reg, label in zip(regression, labels):
        gt = label[label[:, 0] >= 0]
        target = torch.zeros(len(anchors), dtype=torch.int64, device=outputs.device)
        if len(gt):
            matched = matcher(box_iou(gt[:, 1:], anchors))
            fg = torch.where(matched >= 0)[0]
            target[fg] = gt[matched[fg], 0].long() + 1
            encoded = coder.encode_single(gt[matched[fg], 1:], anchors[fg])
            box_losses.append(F.smooth_l1_loss(reg[fg], encoded, reduction="sum"))
            positives += len(fg)
        cls_targets.append(target)
    cls_targets = torch.stack(cls_targets)
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), cls_targets.reshape(-1),
                         reduction="none").view(cls_targets.shape)
    fg = cls_targets > 0
    negatives = ce.detach().clone()
    negatives[fg] = -float("inf")
    rank = negatives.sort(1, descending=True)[1].sort(1)[1]
    hard = rank < NEG_POS_RATIO * fg.sum(1, keepdim=True)
    n = max(1, positives)
    box = torch.stack(box_losses).sum() / n if box_losses else outputs.sum() * 0
    return (ce[fg].sum() + ce[hard].sum()) / n, box


def detect(outputs: torch.Tensor, anchors: torch.Tensor, nms_threshold: float, score_threshold: float = 0.01,
           candidates: int = 200, keep: int = 200) -> list[torch.Tensor]:
    """Per image (K, 6) rows [class, score, xmin, ymin, xmax, ymax], normalised
    corners, after per-class NMS at `nms_threshold`, highest score first. The whole
    batch is one `batched_nms` call (each image and class its own group), so an image's
    rows do not depend on which other images share its batch."""
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import batched_nms

    n, a = outputs.shape[:2]
    coder = det_utils.BoxCoder(BOX_WEIGHTS)
    boxes = coder.decode_single(outputs[..., :4].float().reshape(-1, 4), anchors.repeat(n, 1)).view(n, a, 4)
    boxes = boxes.clamp_(0, 1)
    scores = outputs[..., 4:].float().softmax(-1)[..., 1:]  # drop background: (n, anchors, classes)
    classes = scores.shape[-1]
    top, where = scores.topk(min(candidates, a), dim=1)  # each image's and class's best candidates
    image = torch.arange(n, device=top.device).view(n, 1, 1).expand_as(where)
    cls = torch.arange(classes, device=top.device).view(1, 1, classes).expand_as(where)
    mask = top > score_threshold
    b, s, img, c = boxes[image[mask], where[mask]], top[mask], image[mask], cls[mask]
    kept = batched_nms(b, s, img * classes + c, nms_threshold)  # sorted by score
    results = []
    for i in range(n):
        mine = kept[img[kept] == i][:keep]
        results.append(torch.cat([c[mine, None].float(), s[mine, None], b[mine]], dim=1))
    return results
