"""An object-detection epoch of `raysight train` against a bare torchvision loop doing the
same work, in one run, for both base networks at full width (issue 13, target 5):

  - raysight: `raysight train` on shapes images of 300x300 (JSON annotations, File mode),
    the epoch's seconds from metrics.json (training + validation);
  - bare: torchvision's `SSD` class with the same backbone and anchors (benchmarks/od_step.py
    shows its step costs more than raysight's), fed by the same augmentation (raysight's OD
    decode op, torchvision's v2 detection transforms, run in the loop's own process), then the
    same validation images through torchvision's postprocess (NMS).

Usage: python benchmarks/od_epoch.py [--train 48] [--validation 16] [--batch 8] [--epochs 3]
         [--bases resnet-50,vgg-16]
Epoch 1 of each side is start-up (worker start, first allocation) and is left out.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time

import torch


def raysight_epochs(root: str, base: str, counts: dict, batch: int, epochs: int) -> list[dict]:
    from raysight.sample_data import shapes
    from raysight.train import driver

    name = f"epoch-{base}"
    request = shapes.training_request(root, f"{root}/out", "json", name=name, counts=counts, base_network=base,
                                      raysight_width_multiplier="1", epochs=str(epochs), mini_batch_size=str(batch))
    record = driver.run(request, echo=lambda *_: None)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    with open(f"{root}/out/{name}/output/metrics.json") as f:
        return [{"seconds": h["seconds"], "validation": h["validation_seconds"], "data wait": h["data_wait_seconds"]}
                for h in json.load(f)]


def split_rows(root: str, base: str, counts: dict, batch: int):
    """The index rows and decode ops `raysight train` builds for this request."""
    from raysight.sample_data import shapes
    from raysight.train import driver

    request = shapes.training_request(root, f"{root}/out", "json", counts=counts, base_network=base,
                                      raysight_width_multiplier="1", mini_batch_size=str(batch))
    job, algo, hp = driver.prepare(request)
    out = {}
    for split in ("train", "validation"):
        rows = algo.index_rows(job.channels[split], job.channels[f"{split}_annotation"], hp)
        out[split] = (rows, algo.decoder(hp, training=split == "train"))
    return out


def bare_epochs(root: str, base: str, counts: dict, batch: int, epochs: int) -> list[dict]:
    import numpy as np
    from od_step import Backbone
    from torchvision.models.detection.ssd import SSD as TorchvisionSSD

    from raysight import images
    from raysight.models import ssd
    from raysight.train.loop import timed  # the loop's own data-wait clock

    splits = split_rows(root, base, counts, batch)
    torch.manual_seed(0)
    twin = ssd.SSD(base, num_classes=3, image_size=300)
    model = TorchvisionSSD(Backbone(twin.backbone), ssd.anchor_generator(False), (300, 300), num_classes=4,
                           image_mean=list(images.IMAGENET_MEAN), image_std=list(images.IMAGENET_STD),
                           head=twin.head)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def batches(split: str, shuffle: bool):
        rows, decode = splits[split]
        order = np.random.permutation(len(rows)) if shuffle else np.arange(len(rows))
        for i in range(0, len(rows), batch):
            chunk = [rows[j] for j in order[i:i + batch]]
            out = decode({k: np.array([r[k] for r in chunk], dtype=object) if k in ("label", "annotation", "size")
                          else np.array([r[k] for r in chunk]) for k in chunk[0]})
            xs = list(torch.from_numpy(out["image"]).permute(0, 3, 1, 2).float().div(255))
            targets = []
            for row in torch.from_numpy(out["label"]):
                gt = row[row[:, 0] >= 0]
                targets.append({"boxes": gt[:, 1:] * 300, "labels": gt[:, 0].long() + 1})
            yield xs, targets

    epochs_out = []
    for _ in range(epochs):
        waited = [0.0]  # the bare loop's data wait: its decode and augmentation, in line
        tic = time.perf_counter()
        model.train()
        for xs, targets in timed(batches("train", shuffle=True), waited):
            loss = sum(model(xs, targets).values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        validation_start = time.perf_counter()
        model.eval()
        with torch.inference_mode():
            for xs, _ in timed(batches("validation", shuffle=False), waited):
                model(xs)
        epochs_out.append({"seconds": time.perf_counter() - tic, "data wait": waited[0],
                           "validation": time.perf_counter() - validation_start})
    return epochs_out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--validation", type=int, default=16)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--bases", default="resnet-50,vgg-16")
    args = parser.parse_args()

    import ray

    from raysight.sample_data import shapes

    root = tempfile.mkdtemp(prefix="raysight-od-epoch-")
    counts = shapes.write(root, args.train, args.validation, size=300, seed=1)
    results = []
    for base in args.bases.split(","):
        ours = raysight_epochs(root, base, counts, args.batch, args.epochs)
        ray.shutdown()
        theirs = bare_epochs(root, base, counts, args.batch, args.epochs)
        results.append((base, ours, theirs))
        print(base, "raysight", ours, "bare", theirs, flush=True)
    print(f"\n{counts['train']} train + {counts['validation']} validation shapes images of 300x300, batch "
          f"{args.batch}, Adam, width 1, {torch.get_num_threads()} torch threads; median of epochs 2..{args.epochs}; "
          "data wait: the bare loop's is its own decode and augmentation, in line\n")
    print("| base_network | loop | epoch (s) | of which validation (s) | of which waiting for data (s) | bare / raysight |")
    print("|---|---|---|---|---|---|")
    for base, ours, theirs in results:
        mid = {name: {k: statistics.median(e[k] for e in runs[1:]) for k in runs[0]}
               for name, runs in (("raysight train", ours), ("bare torchvision loop", theirs))}
        ratio = mid["bare torchvision loop"]["seconds"] / mid["raysight train"]["seconds"]
        for name, m in mid.items():
            print(f"| {base} | {name} | {m['seconds']:.1f} | {m['validation']:.1f} | {m['data wait']:.1f} | "
                  f"{f'{ratio:.2f}x' if name == 'raysight train' else ''} |")


if __name__ == "__main__":
    main()
