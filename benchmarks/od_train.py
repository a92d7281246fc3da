"""Object detection on the procedural shapes, in one run:

1. reachable validation:mAP of `raysight train` for both base networks (from scratch:
   no pretrained weights can be downloaded here), with records/second;
2. the train step (forward, multibox loss, backward, optimizer, train meter) with the loss
   terms handed to the meter, beside the step as it was before (the meter computed the
   multibox loss a second time), same batch, same process.

Usage: python benchmarks/od_train.py [--epochs 25] [--width 0.125] [--bases resnet-50,vgg-16]
       [--step-only] (part 2 only)
Full-width epochs against a bare torchvision loop: benchmarks/od_epoch.py.
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
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--bases", default="resnet-50,vgg-16", help="base networks to train, comma-separated")
    parser.add_argument("--step-only", action="store_true", help="only part 2, the train step")
    args = parser.parse_args()

    print(f"Train step, SSD300 ResNet-50 (the shapes requests' network), batch {args.batch}, "
          f"{torch.get_num_threads()} torch threads (median of 12):")
    print("| width | loss terms reused (now) | meter recomputes the loss (before) | saved |\n|---|---|---|---|")
    for width in (args.width, "1"):
        now, before = step_times(width, args.batch)
        print(f"| {width} | {now * 1000:.0f} ms | {before * 1000:.0f} ms | {1 - now / before:.1%} |", flush=True)
    if args.step_only:
        return

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


if __name__ == "__main__":
    main()
