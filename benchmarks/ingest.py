"""Images/s from storage to augmented training batches, in one run:

  1. raysight + Ray Data over a RecordIO .rec (im2rec-packed JPEGs)
  2. raysight + Ray Data over images + .lst
  3. torch.utils.data.DataLoader over the same image files, same worker count
  4. plain PIL decode + resize + crop on all cores (multiprocessing.Pool): the ceiling

Usage: python benchmarks/ingest.py [--images 2000] [--size 256] [--workers N] [--repeats 5]
Each pipeline runs once to warm up, then --repeats times (an epoch each); the table
gives the median rate and the range. Results from this machine: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time

import numpy as np
from PIL import Image

from raysight import images as im
from raysight.formats.lst import ListEntry, format_lst

SHAPE = (3, 224, 224)
RESIZE = 256
BATCH = 64


def make_images(root: str, n: int, size: int) -> list[ListEntry]:
    """Smooth synthetic photos (JPEG-friendly gradients + shapes), 10 classes."""
    rng = np.random.default_rng(0)
    entries = []
    yy, xx = np.mgrid[0:size, 0:size]
    for i in range(n):
        c = rng.uniform(0, 255, 3)
        img = (np.stack([xx * c[0] / size, yy * c[1] / size, (xx + yy) * c[2] / (2 * size)], -1)).astype(np.uint8)
        rel = f"{i % 10}/{i:05d}.jpg"
        os.makedirs(os.path.join(root, str(i % 10)), exist_ok=True)
        Image.fromarray(img).save(os.path.join(root, rel), quality=90)
        entries.append(ListEntry(i, (float(i % 10),), rel))
    return entries


def hp():
    from raysight import algorithms
    from raysight.hyperparams import parse_hyperparameters

    ic = algorithms.get("image-classification")
    return parse_hyperparameters(ic.hyperparameters, {
        "num_classes": "10", "num_training_samples": "100", "image_shape": ",".join(map(str, SHAPE)),
        "resize": str(RESIZE), "augmentation_type": "crop"})


def time_ray(ds, n: int) -> float:
    tic = time.perf_counter()
    seen = 0
    for batch in ds.iter_torch_batches(batch_size=BATCH):
        seen += len(batch["label"])
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - tic)


class TorchSet:
    def __init__(self, root, entries):
        self.root, self.entries = root, entries

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, i):
        import torch

        e = self.entries[i]
        with open(os.path.join(self.root, e.path), "rb") as f:
            image = im.resize_shorter(im.decode_rgb(f.read()), RESIZE)
        image = im.crop(image, SHAPE[1], SHAPE[2], np.random.default_rng())
        pixels = np.asarray(image)[:, ::-1].copy()
        return torch.from_numpy(pixels), int(e.labels[0])


def time_dataloader(root, entries, workers: int) -> float:
    import torch

    loader = torch.utils.data.DataLoader(TorchSet(root, entries), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, persistent_workers=False)
    tic = time.perf_counter()
    seen = sum(len(y) for _, y in loader)
    assert seen == len(entries)
    return seen / (time.perf_counter() - tic)


def _pil_one(path):
    image = im.resize_shorter(im.decode_rgb(open(path, "rb").read()), RESIZE)
    return np.asarray(im.crop(image, SHAPE[1], SHAPE[2], None)).shape


def time_pil(root, entries, workers: int) -> float:
    paths = [os.path.join(root, e.path) for e in entries]
    tic = time.perf_counter()
    with multiprocessing.Pool(workers) as pool:
        list(pool.imap_unordered(_pil_one, paths, chunksize=32))
    return len(paths) / (time.perf_counter() - tic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    def rates(run) -> list[float]:
        run()  # warm-up: worker start-up is not ingest speed
        return [run() for _ in range(args.repeats)]

    import ray

    from raysight import data
    from raysight.algorithms.image_classification import Decode
    from raysight.im2rec import pack_list
    from raysight.job_request import Channel

    work = tempfile.mkdtemp(prefix="raysight-bench-")
    root = os.path.join(work, "images")
    entries = make_images(root, args.images, args.size)
    with open(os.path.join(work, "train.lst"), "w") as f:
        f.write(format_lst(entries))
    os.makedirs(os.path.join(work, "rec"))
    os.replace(os.path.join(work, "train.lst"), os.path.join(work, "rec", "train.lst"))
    pack_list(os.path.join(work, "rec", "train.lst"), root, False, pass_through=True, num_thread=args.workers)
    os.remove(os.path.join(work, "rec", "train.lst"))

    ray.init(num_cpus=args.workers, include_dashboard=False)
    params = hp()
    decode = Decode(params, training=True)
    channel = Channel("train", os.path.join(work, "rec"), "application/x-recordio", "Pipe")
    results = {}
    rows = [{"id": e.index, "uri": os.path.join(root, e.path), "label": list(e.labels)} for e in entries]
    for name, make in (  # what `raysight train` builds for a training channel of each format
        ("raysight .rec (Ray Data)", lambda: data.channel_datasets(channel, None, decode, training=True)[0]),
        ("raysight images + .lst (Ray Data)", lambda: data.channel_datasets(channel, rows, decode, training=True)[0]),
    ):
        results[name] = rates(lambda make=make: time_ray(make(), len(entries)))
    ray.shutdown()
    results[f"torch DataLoader, {args.workers} workers"] = rates(lambda: time_dataloader(root, entries, args.workers))
    results[f"PIL decode+resize+crop, Pool({args.workers})"] = rates(lambda: time_pil(root, entries, args.workers))

    loader = statistics.median(results[f"torch DataLoader, {args.workers} workers"])
    print(f"{args.images} JPEGs {args.size}x{args.size}, resize {RESIZE}, random crop {SHAPE[1]}, flip, "
          f"batch {BATCH}, {os.cpu_count()} cores, median of {args.repeats} epochs\n")
    print("| pipeline | images/s (median) | range | / DataLoader |\n|---|---|---|---|")
    for name, runs in results.items():
        mid = statistics.median(runs)
        print(f"| {name} | {mid:.0f} | {min(runs):.0f}–{max(runs):.0f} | {mid / loader:.2f}x |")


if __name__ == "__main__":
    main()
