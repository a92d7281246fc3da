"""The SSD train step at full width, raysight's against torchvision's `SSD` class built
from the same backbone and anchors, in one process (issue 13, target 5):

  - raysight: `models.ssd.SSD` forward, `multibox_loss`, backward, Adam step; each phase
    timed, and the same step with the network and input in channels_last;
  - torchvision: `torchvision.models.detection.SSD(backbone, DefaultBoxGenerator, ...)`
    with raysight's backbone (the same trunk and extra layers, same weights) and the same
    anchors: its own transform, matcher, loss and head.

Usage: python benchmarks/od_step.py [--batch 8] [--steps 3] [--bases resnet-50,vgg-16]
Variants alternate step by step after one warm-up step each; medians are printed.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections import OrderedDict

import numpy as np
import torch
from torch import nn


class Backbone(nn.Module):
    """raysight's feature pyramid with the OrderedDict torchvision's SSD expects."""

    def __init__(self, features):
        super().__init__()
        self.features = features

    def forward(self, x):
        return OrderedDict((str(i), f) for i, f in enumerate(self.features(x)))


def batch_of(n: int, size: int = 300):
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8))
    labels = torch.full((n, 4, 5), -1.0)
    for i in range(n):  # one or two boxes per image
        for j in range(1 + i % 2):
            x, y = rng.uniform(0, 0.6, 2)
            labels[i, j] = torch.tensor([j % 3, x, y, x + 0.3, y + 0.3])
    return pixels, labels


def raysight_step(model, optimizer, x, labels, phases: dict):
    from raysight.models import ssd

    marks = [time.perf_counter()]
    outputs = model(x)
    marks.append(time.perf_counter())
    ce, l1 = ssd.multibox_loss(outputs.float(), labels, model.anchors)
    loss = ce + l1
    marks.append(time.perf_counter())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    marks.append(time.perf_counter())
    optimizer.step()
    marks.append(time.perf_counter())
    for name, a, b in zip(("forward", "loss", "backward", "optimizer"), marks, marks[1:]):
        phases.setdefault(name, []).append(b - a)
    return marks[-1] - marks[0]


def torchvision_step(model, optimizer, images, targets):
    tic = time.perf_counter()
    losses = model(images, targets)
    loss = sum(losses.values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - tic


def compare(base: str, batch: int, steps: int) -> None:
    from torchvision.models.detection.ssd import SSD as TorchvisionSSD

    from raysight import images
    from raysight.models import ssd

    torch.manual_seed(0)
    ours = ssd.SSD(base, num_classes=3, image_size=300).train()
    torch.manual_seed(0)
    last = ssd.SSD(base, num_classes=3, image_size=300).train().to(memory_format=torch.channels_last)
    torch.manual_seed(0)
    twin = ssd.SSD(base, num_classes=3, image_size=300)
    theirs = TorchvisionSSD(Backbone(twin.backbone), ssd.anchor_generator(False), (300, 300), num_classes=4,
                            image_mean=list(images.IMAGENET_MEAN), image_std=list(images.IMAGENET_STD),
                            head=twin.head).train()
    pixels, labels = batch_of(batch)
    x = images.normalize(pixels)
    x_last = x.contiguous(memory_format=torch.channels_last)
    tv_images = list(pixels.permute(0, 3, 1, 2).float().div(255))
    tv_targets = []
    for row in labels:
        gt = row[row[:, 0] >= 0]
        tv_targets.append({"boxes": gt[:, 1:] * 300, "labels": gt[:, 0].long() + 1})
    optimizers = [torch.optim.Adam(m.parameters(), lr=1e-3) for m in (ours, last, theirs)]
    times = {"raysight": [], "raysight, channels_last": [], "torchvision SSD": []}
    phases: dict[str, list] = {}
    for i in range(steps + 1):
        a = raysight_step(ours, optimizers[0], x, labels, phases if i else {})
        b = raysight_step(last, optimizers[1], x_last, labels, {})
        c = torchvision_step(theirs, optimizers[2], tv_images, tv_targets)
        if i:
            for name, t in zip(times, (a, b, c)):
                times[name].append(t)
    ref = statistics.median(times["torchvision SSD"])
    for name, runs in times.items():
        mid = statistics.median(runs)
        print(f"| {base} | {name} | {mid:.2f} | {batch / mid:.2f} | {ref / mid:.2f}x |", flush=True)
    print(f"| {base} | raysight phases | " + ", ".join(
        f"{k} {statistics.median(v):.2f} s" for k, v in phases.items()) + " | | |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--bases", default="resnet-50,vgg-16")
    args = parser.parse_args()
    print(f"SSD300 at width 1, batch {args.batch}, 300x300, Adam, {torch.get_num_threads()} torch threads, "
          f"median of {args.steps} steps after a warm-up\n")
    print("| base_network | step | seconds | images/s | torchvision / this |\n|---|---|---|---|---|")
    for base in args.bases.split(","):
        compare(base, args.batch, args.steps)


if __name__ == "__main__":
    main()
