"""Epoch time of `raysight train` against a bare PyTorch loop: same ResNet-20, same
digits (decoded and cropped the same way), same batch size, same optimizer, one run.

Usage: python benchmarks/train_speed.py [--epochs 4]
The bare loop gets its data pre-decoded in memory, the best case for it; raysight
decodes in Ray Data while training. Epoch 0 (start-up) is left out of both medians.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import numpy as np
import torch


def bare_loop(root: str, hp: dict, epochs: int) -> list[float]:
    from raysight import algorithms, images
    from raysight.formats.lst import parse_lst
    from raysight.train.optim import build_optimizer

    ic = algorithms.get("image-classification")
    with open(f"{root}/train_lst/train.lst") as f:
        entries = parse_lst(f.read())
    _, h, w = hp["image_shape"]
    x = np.stack([np.asarray(images.crop(images.resize_shorter(images.decode_rgb(open(f"{root}/train/{e.path}", "rb")
                                                                                  .read()), hp["resize"]), h, w, None))
                  for e in entries])
    y = torch.tensor([int(e.labels[0]) for e in entries])
    x = torch.from_numpy(x)
    torch.manual_seed(0)
    model = ic.build_model(hp)
    opt = build_optimizer(hp, model.parameters())
    times = []
    for _ in range(epochs):
        tic = time.perf_counter()
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), hp["mini_batch_size"]):
            idx = perm[i:i + hp["mini_batch_size"]]
            batch = ic.prepare_batch({"image": x[idx], "label": y[idx]}, hp, training=True)
            loss = ic.loss(model(batch["image"]), batch, hp)
            opt.zero_grad()
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    from raysight import algorithms
    from raysight.datasets import digits
    from raysight.hyperparams import parse_hyperparameters
    from raysight.train import driver

    root = tempfile.mkdtemp(prefix="raysight-speed-")
    counts = digits.export(root)
    request = digits.training_request(root, f"{root}/out", counts=counts, epochs=str(args.epochs),
                                      lr_scheduler_step="")
    record = driver.run(request, echo=lambda *_: None)
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    import json

    import ray

    ray.shutdown()
    with open(f"{root}/out/digits-resnet20/output/metrics.json") as f:
        ray_times = [h["seconds"] for h in json.load(f)]
    hp = parse_hyperparameters(algorithms.get("image-classification").hyperparameters, request["HyperParameters"])
    torch.set_num_threads(torch.get_num_threads())
    bare_times = bare_loop(root, hp, args.epochs)
    r, b = statistics.median(ray_times[1:]), statistics.median(bare_times[1:])
    print(f"digits {counts['train']} images, ResNet-20 {hp['image_shape']}, batch {hp['mini_batch_size']}, "
          f"{args.epochs} epochs, {torch.get_num_threads()} torch threads\n")
    print("| loop | median epoch (s), epochs 1.. | all epochs (s) |\n|---|---|---|")
    print(f"| raysight train (Ray Train + Ray Data, incl. validation) | {r:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in ray_times)} |")
    print(f"| bare PyTorch loop (pre-decoded tensors, no validation) | {b:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in bare_times)} |")
    print(f"\nratio raysight / bare: {r / b:.2f}x")


if __name__ == "__main__":
    main()
