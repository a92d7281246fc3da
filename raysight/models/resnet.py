"""ResNets for every depth SageMaker's Image Classification documents.

ImageNet depths (18/34/50/101/152/200) are torchvision's ResNet classes, so
torchvision's ImageNet weights load unchanged. CIFAR depths (20/32/44/56/110)
are He et al.'s 6n+2 networks for ~32 px images, which torchvision does not ship.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet as tv

from raysight.models import CIFAR_DEPTHS, IMAGENET_DEPTHS

_IMAGENET_LAYOUT = {
    18: (tv.BasicBlock, [2, 2, 2, 2]),
    34: (tv.BasicBlock, [3, 4, 6, 3]),
    50: (tv.Bottleneck, [3, 4, 6, 3]),
    101: (tv.Bottleneck, [3, 4, 23, 3]),
    152: (tv.Bottleneck, [3, 8, 36, 3]),
    200: (tv.Bottleneck, [3, 24, 36, 3]),
}


class CifarResNet(nn.Module):
    """3 stages of n basic blocks (16/32/64 channels), depth = 6n + 2."""

    def __init__(self, depth: int, num_classes: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.relu = nn.ReLU(inplace=True)
        layers, inplanes = [], 16
        for planes, stride in ((16, 1), (32, 2), (64, 2)):
            for i in range(n):
                s = stride if i == 0 else 1
                down = None
                if s != 1 or inplanes != planes:
                    down = nn.Sequential(nn.Conv2d(inplanes, planes, 1, s, bias=False), nn.BatchNorm2d(planes))
                layers.append(tv.BasicBlock(inplanes, planes, s, down))
                inplanes = planes
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def build_resnet(num_layers: int, num_classes: int) -> nn.Module:
    if num_layers in CIFAR_DEPTHS:
        return CifarResNet(num_layers, num_classes)
    if num_layers in _IMAGENET_LAYOUT:
        block, layout = _IMAGENET_LAYOUT[num_layers]
        return tv.ResNet(block, layout, num_classes=num_classes)
    raise ValueError(f"num_layers must be one of {IMAGENET_DEPTHS + CIFAR_DEPTHS}, got {num_layers}")
