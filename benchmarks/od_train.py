"""Object detection on the procedural shapes, in one run:

1. reachable validation:mAP of `raysight train` for both base networks (from scratch:
   no pretrained weights can be downloaded here), with records/second;
2. training throughput of the published SSD300 (VGG-16, width 1) in `raysight train`
   beside torchvision's `ssd300_vgg16` in a bare PyTorch loop on the same images and
   batch size (the bare loop gets pre-decoded tensors: its best case).

3. the train step (forward, multibox loss, backward, optimizer, train meter) with the loss
   terms handed to the meter, beside the step as it was before (the meter computed the
   multibox loss a second time), same batch, same process.

Usage: python benchmarks/od_train.py [--epochs 25] [--width 0.125] [--bases resnet-50,vgg-16]
       [--throughput-images 64]   (0 skips part 2)   [--step-only] (part 3 only)
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np
import torch


def train(root: str, out: str, counts: dict, **hp: str) -> list[dict]:
    from raysight.sample_data import shapes
    from raysight.train import driver

    name = f"bench-{hp['base_network']}-{hp['raysight_width_multiplier']}".replace(".", "")
    request = shapes.training_request(root, out, "json", name=name, counts=counts, **hp)
    record = driver.run(request, echo=lambda *_: None)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    with open(f"{out}/{name}/output/metrics.json") as f:
        return json.load(f)


def bare_torchvision(root: str, images: int, batch: int, steps_to_skip: int = 1) -> float:
    """records/second of torchvision's ssd300_vgg16 (its own transform, loss and matcher)."""
    import glob

    from PIL import Image
    from torchvision.models.detection import ssd300_vgg16

    files = sorted(glob.glob(f"{root}/json/train_annotation/*.json"))[:images]
    xs, targets = [], []
    for path in files:
        with open(path) as f:
            doc = json.load(f)
        image = Image.open(f"{root}/json/train/{doc['file']}").convert("RGB")
        xs.append(torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float() / 255)
        boxes = [[a["left"], a["top"], a["left"] + a["width"], a["top"] + a["height"]] for a in doc["annotations"]]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32),
                        "labels": torch.tensor([a["class_id"] + 1 for a in doc["annotations"]])})
    torch.manual_seed(0)
    model = ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4).train()
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, weight_decay=5e-4)
    timed, seen = 0.0, 0
    for step, i in enumerate(range(0, len(xs) - batch + 1, batch)):
        tic = time.perf_counter()
        losses = model(xs[i:i + batch], targets[i:i + batch])
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step >= steps_to_skip:
            timed += time.perf_counter() - tic
            seen += batch
    return seen / timed


def step_times(width: str, batch: int, steps: int = 12) -> tuple[float, float]:
    """Seconds per train step, median over `steps` (after 2 warm-up steps), measured
    alternately: (loss terms reused by the meter, the meter recomputing the loss)."""
    import statistics

    from raysight import algorithms, images
    from raysight.hyperparams import parse_hyperparameters
    from raysight.models import ssd
    from raysight.sample_data import shapes

    od = algorithms.get("object-detection")
    hp = parse_hyperparameters(od.hyperparameters, {**shapes.DEFAULT_HYPERPARAMETERS, "num_training_samples": "64",
                                                    "raysight_width_multiplier": width, "use_pretrained_model": "0"})
    torch.manual_seed(0)
    model = od.build_model(hp).train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    criterion = od.criterion(hp, {}, model)
    rng = np.random.default_rng(0)
    pixels = torch.from_numpy(rng.integers(0, 255, (batch, 300, 300, 3), dtype=np.uint8))
    labels = torch.full((batch, 4, 5), -1.0)
    for i in range(batch):  # one or two boxes per image
        for j in range(1 + i % 2):
            x, y = rng.uniform(0, 0.6, 2)
            labels[i, j] = torch.tensor([j % 3, x, y, x + 0.3, y + 0.3])
    data = {"image": images.normalize(pixels), "label": labels}

    def step(recompute: bool) -> float:
        tic = time.perf_counter()
        meter = od.meter(hp, "train", model)
        outputs = model(data["image"])
        loss, terms = criterion(outputs, data)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if recompute:  # the meter before this change: a second multibox loss on the same outputs
            with torch.no_grad():
                ce, l1 = ssd.multibox_loss(outputs.detach().float(), data["label"], model.anchors)
            terms = {"cross_entropy": ce, "smooth_l1": l1}
        meter.update(outputs.detach().float(), data, terms)
        return time.perf_counter() - tic

    times = {False: [], True: []}
    for i in range(steps + 2):
        for recompute in (False, True):
            seconds = step(recompute)
            if i >= 2:
                times[recompute].append(seconds)
    return statistics.median(times[False]), statistics.median(times[True])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--width", default="0.125")
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--validation", type=int, default=100)
    parser.add_argument("--throughput-images", type=int, default=64)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bases", default="resnet-50,vgg-16", help="base networks to train, comma-separated")
    parser.add_argument("--step-only", action="store_true", help="only part 3, the train step")
    args = parser.parse_args()

    print(f"Train step, SSD300 ResNet-50 (the shapes requests' network), batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads (median of 12):")
    print("| width | loss terms reused (now) | meter recomputes the loss (before) | saved |\n|---|---|---|---|")
    for width in (args.width, "1"):
        now, before = step_times(width, args.batch)
        print(f"| {width} | {now * 1000:.0f} ms | {before * 1000:.0f} ms | {1 - now / before:.1%} |", flush=True)
    if args.step_only:
        return

    import ray

    from raysight.sample_data import shapes

    root = tempfile.mkdtemp(prefix="raysight-od-")
    counts = shapes.write(root, args.train, args.validation, size=128, seed=0)
    print(f"shapes: {counts['train']} train / {counts['validation']} validation images, 128 px, 3 classes; "
          f"{torch.get_num_threads()} torch threads\n")
    print("| base_network | width | epochs | best validation:mAP (epoch) | last mAP | records/s (train) |")
    print("|---|---|---|---|---|---|")
    for base in args.bases.split(","):
        history = train(root, f"{root}/out", counts, base_network=base, raysight_width_multiplier=args.width,
                        epochs=str(args.epochs))
        best = max(history, key=lambda h: h["validation:mAP"])
        rate = counts["train"] * len(history[1:]) / sum(h["seconds"] for h in history[1:])
        print(f"| {base} | {args.width} | {len(history)} | {best['validation:mAP']:.3f} ({best['epoch']}) | "
              f"{history[-1]['validation:mAP']:.3f} | {rate:.1f} (incl. validation) |", flush=True)

    if not args.throughput_images:
        return
    small = tempfile.mkdtemp(prefix="raysight-od-small-")
    few = shapes.write(small, args.throughput_images, 16, size=128, seed=1)
    history = train(small, f"{small}/out", few, base_network="vgg-16", raysight_width_multiplier="1",
                    epochs="2", mini_batch_size=str(args.batch))
    ray.shutdown()
    ours = few["train"] / history[-1]["seconds"]  # epoch 2: start-up left out; 16 validation images included
    theirs = bare_torchvision(small, args.throughput_images, args.batch)
    print(f"\nSSD300 VGG-16 (width 1), batch {args.batch}, 300x300:")
    print("| loop | records/second |\n|---|---|")
    print(f"| raysight train, epoch 2 (augmentation in Ray Data, incl. validation) | {ours:.2f} |")
    print(f"| torchvision ssd300_vgg16, bare loop (pre-decoded, no augmentation) | {theirs:.2f} |")
    print(f"ratio raysight / bare: {ours / theirs:.2f}x")


if __name__ == "__main__":
    main()
