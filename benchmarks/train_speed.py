"""Epoch time of `raysight train` against a bare PyTorch loop: same ResNet-20, same
digits (decoded and cropped the same way), same batch size, same optimizer, one run.

Usage: python benchmarks/train_speed.py [--epochs 4]
The bare loop gets its data pre-decoded in memory, the best case for it; it is timed
with and without the validation pass that raysight's epoch includes. Epoch 0
(start-up) is left out of the medians.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def decoded(root: str, split: str, hp: dict):
    """A split's images decoded, resized and centre-cropped once, as raysight's Decode does
    without augmentation_type, with their labels."""
    from raysight import images
    from raysight.formats.lst import parse_lst

    with open(f"{root}/{split}_lst/{split}.lst") as f:
        entries = parse_lst(f.read())
    _, h, w = hp["image_shape"]
    x = np.stack([np.asarray(images.crop(images.resize_shorter(
        images.decode_rgb(Path(f"{root}/{split}/{e.path}").read_bytes()), hp["resize"]), h, w, None)) for e in entries])
    return torch.from_numpy(x), torch.tensor([int(e.labels[0]) for e in entries])


def bare_loop(root: str, hp: dict, epochs: int, validate: bool) -> list[float]:
    from raysight import algorithms
    from raysight.train.optim import build_optimizer

    ic = algorithms.get("image-classification")
    x, y = decoded(root, "train", hp)
    vx, vy = decoded(root, "validation", hp)
    torch.manual_seed(0)
    model = ic.build_model(hp)
    opt = build_optimizer(hp, model.parameters())
    criterion = ic.criterion(hp, {}, model)
    times = []
    for _ in range(epochs):
        tic = time.perf_counter()
        model.train()
        perm = torch.randperm(len(y))
        for i in range(0, len(y), hp["mini_batch_size"]):
            idx = perm[i:i + hp["mini_batch_size"]]
            batch = ic.prepare_batch({"image": x[idx], "label": y[idx]}, hp, training=True)
            loss, _ = criterion(model(batch["image"]), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
        if validate:
            model.eval()
            with torch.inference_mode():
                for i in range(0, len(vy), hp["mini_batch_size"]):
                    batch = ic.prepare_batch({"image": vx[i:i + hp["mini_batch_size"]],
                                              "label": vy[i:i + hp["mini_batch_size"]]}, hp, training=False)
                    model(batch["image"]).argmax(1).eq(batch["label"]).sum().item()
        times.append(time.perf_counter() - tic)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()

    from raysight import algorithms
    from raysight.sample_data import digits
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

    with open(f"{root}/out/digits-resnet20/output/metrics.json") as f:
        history = json.load(f)
    ray_times = [h["seconds"] for h in history]
    hp = parse_hyperparameters(algorithms.get("image-classification").hyperparameters, request["HyperParameters"])
    in_worker = bare_loop_in_a_ray_train_worker(root, hp, args.epochs)
    ray.shutdown()
    bare = {validate: bare_loop(root, hp, args.epochs, validate) for validate in (True, False)}
    r = statistics.median(ray_times[1:])
    print(f"digits {counts['train']} training + {counts['validation']} validation images, ResNet-20 "
          f"{hp['image_shape']}, batch {hp['mini_batch_size']}, {args.epochs} epochs, {torch.get_num_threads()} "
          "torch threads\n")
    print("| loop | median epoch (s), epochs 1.. | all epochs (s) | raysight / this |\n|---|---|---|---|")
    print(f"| raysight train (Ray Train + Ray Data, incl. validation) | {r:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in ray_times)} | 1.00x |")
    for validate, label in ((True, "incl. validation"), (False, "no validation")):
        b = statistics.median(bare[validate][1:])
        print(f"| bare PyTorch loop (pre-decoded tensors, {label}) | {b:.2f} | "
              f"{', '.join(f'{t:.2f}' for t in bare[validate])} | {r / b:.2f}x |")
    w = statistics.median(in_worker[1:])
    print(f"| the same bare loop (incl. validation) inside a Ray Train worker, no Ray Data | {w:.2f} | "
          f"{', '.join(f'{t:.2f}' for t in in_worker)} | {r / w:.2f}x |")
    print(f"\nraysight's epochs 1..: waiting for data {statistics.median(h['data_wait_seconds'] for h in history[1:]):.2f} s"
          f", validation {statistics.median(h['validation_seconds'] for h in history[1:]):.2f} s (medians)")


def bare_loop_in_a_ray_train_worker(root: str, hp: dict, epochs: int) -> list[float]:
    """The floor for any Ray Train job on this machine: Ray's own processes share the cores."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    def loop(config):
        torch.set_num_threads(config["threads"])
        return bare_loop(root, hp, epochs, validate=True)

    trainer = TorchTrainer(loop, train_loop_config={"threads": torch.get_num_threads()},
                           scaling_config=ScalingConfig(num_workers=1, resources_per_worker={"CPU": 1}),
                           run_config=RunConfig(storage_path=tempfile.mkdtemp(prefix="raysight-speed-ray-")))
    return trainer.fit().return_value

if __name__ == "__main__":
    main()
