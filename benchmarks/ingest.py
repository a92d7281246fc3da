"""Images/s from storage to augmented training batches, on photographic JPEGs, in one run:

  1. raysight `.rec` (what `raysight train` builds for a RecordIO channel) against MXNet
     1.9.1's C++ `ImageRecordIter` (SageMaker's own ingest) at every augmentation_type
  2. raysight images + `.lst` against a torch DataLoader with persistent workers, the same
     worker count and the same decode (raysight's Decode, called per image)
  3. reduced-scale JPEG decoding against a full decode, on 1280x720 sources

Usage: python benchmarks/ingest.py [--images 1200] [--large-images 600] [--repeats 3]
         [--mxnet-python /path/to/mxnet-venv/bin/python]
MXNet needs numpy<1.24, so it lives in its own virtual environment:
  python3.11 -m venv /tmp/mxvenv && /tmp/mxvenv/bin/pip install mxnet==1.9.1 "numpy<1.24" opencv-python-headless
Without --mxnet-python (or $MXNET_PYTHON) the MXNet rows say it is not installed.
Each pipeline runs one warm-up epoch, then --repeats epochs; the table gives the median.
Results from this machine: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from raysight.formats.lst import format_lst
from raysight.sample_data.photos import make_photos

SHAPE, RESIZE, BATCH = (3, 224, 224), 256, 64
AUGMENTATIONS = ("crop", "crop_color", "crop_color_transform")
# MXNet's set_data_aug_level (SageMaker's image-classification container), level by level
MXNET_AUG = {"crop": dict(rand_crop=True, rand_mirror=True),
             "crop_color": dict(rand_crop=True, rand_mirror=True, random_h=36, random_s=50, random_l=50),
             "crop_color_transform": dict(rand_crop=True, rand_mirror=True, random_h=36, random_s=50, random_l=50,
                                          max_rotate_angle=10, max_shear_ratio=0.1, max_aspect_ratio=0.25)}

MXNET_SCRIPT = r"""
import json, statistics, sys, time
import mxnet as mx
rec, threads, batch, repeats, aug = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
it = mx.io.ImageRecordIter(path_imgrec=rec, data_shape=(3, 224, 224), batch_size=batch, resize=256, shuffle=True,
                           preprocess_threads=threads, round_batch=False, **aug)
rates = []
for epoch in range(repeats + 1):
    it.reset()
    tic, seen = time.perf_counter(), 0
    for b in it:
        seen += b.data[0].shape[0] - b.pad
    rates.append(seen / (time.perf_counter() - tic))
print(json.dumps(rates[1:]))
"""


def hp(augmentation: str | None):
    from raysight import algorithms
    from raysight.hyperparams import parse_hyperparameters

    values = {"num_classes": "10", "num_training_samples": "100", "image_shape": ",".join(map(str, SHAPE)),
              "resize": str(RESIZE)}
    if augmentation:
        values["augmentation_type"] = augmentation
    return parse_hyperparameters(algorithms.get("image-classification").hyperparameters, values)


def full_decode(decode):
    """The same Decode with reduced-scale decoding off."""
    from raysight import images

    decode.decode_image = lambda raw, where: images.decode_rgb(raw, where)
    return decode


def cpu_seconds() -> dict[str, float]:
    """CPU seconds used so far by each process on this machine, grouped: this driver, Ray
    workers (the decode tasks) and Ray's own processes (raylet, GCS, actors, agents)."""
    tick, out = os.sysconf("SC_CLK_TCK"), {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read()
        except OSError:
            continue
        if int(pid) == os.getpid():
            group = "driver (batches to torch)"
        elif cmd.startswith("ray::") and any(t in cmd for t in ("IDLE", "Read", "Map")):  # task workers
            group = "Ray workers (read + decode)"
        elif "ray" in cmd or "raylet" in cmd or "gcs_server" in cmd:
            group = "Ray's own processes"
        else:
            continue
        out[group] = out.get(group, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def time_ray(ds, n: int) -> float:
    tic, seen = time.perf_counter(), 0
    for batch in ds.iter_torch_batches(batch_size=BATCH):
        seen += len(batch["label"])
    assert seen == n, (seen, n)
    return n / (time.perf_counter() - tic)


class TorchSet:
    """Per-image access to raysight's own decode, for the DataLoader."""

    def __init__(self, root, entries, decode):
        self.paths = [os.path.join(root, e.path) for e in entries]
        self.labels = [int(e.labels[0]) for e in entries]
        self.decode = decode

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        import torch

        with open(self.paths[i], "rb") as f:
            image = self.decode.decode_image(f.read(), self.paths[i])
        pixels, _ = self.decode.decode_one(image, None, self.paths[i], np.random.default_rng())
        return torch.from_numpy(np.ascontiguousarray(pixels)), self.labels[i]


def dataloader_rates(root, entries, decode, workers: int, repeats: int) -> list[float]:
    import torch

    loader = torch.utils.data.DataLoader(TorchSet(root, entries, decode), batch_size=BATCH, shuffle=True,
                                         num_workers=workers, persistent_workers=True)
    rates = []
    for _ in range(repeats + 1):  # the first epoch starts the workers
        tic = time.perf_counter()
        seen = sum(len(y) for _, y in loader)
        rates.append(seen / (time.perf_counter() - tic))
    return rates[1:]


def mxnet_rates(python: str | None, rec: str, workers: int, repeats: int, aug: str) -> list[float] | str:
    if not python:
        return "not installed (see --mxnet-python)"
    out = subprocess.run([python, "-c", MXNET_SCRIPT, rec, str(workers), str(BATCH), str(repeats),
                          json.dumps(MXNET_AUG[aug])], capture_output=True, text=True)
    if out.returncode:
        return f"failed: {out.stderr.strip().splitlines()[-1]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def data_set(work: str, name: str, n: int, width: int, height: int, workers: int):
    from raysight.im2rec import pack_list

    root = os.path.join(work, name)
    entries = make_photos(root, n, width, height)
    lst = os.path.join(work, f"{name}-rec", "train.lst")
    os.makedirs(os.path.dirname(lst))
    with open(lst, "w") as f:
        f.write(format_lst(entries))
    pack_list(lst, root, False, pass_through=True, num_thread=workers)
    os.remove(lst)
    kb = np.mean([os.path.getsize(os.path.join(root, e.path)) for e in entries]) / 1e3
    return root, entries, os.path.dirname(lst), kb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1200)
    parser.add_argument("--large-images", type=int, default=600)
    parser.add_argument("--workers", type=int, default=os.cpu_count())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mxnet-python", default=os.environ.get("MXNET_PYTHON"))
    args = parser.parse_args()
    if not args.mxnet_python:
        try:
            import mxnet  # noqa: F401

            args.mxnet_python = sys.executable
        except ImportError:
            pass

    import ray

    from raysight import data
    from raysight.algorithms.image_classification import Decode
    from raysight.job_request import Channel

    work = tempfile.mkdtemp(prefix="raysight-bench-")
    sets = {"500x375": data_set(work, "photos", args.images, 500, 375, args.workers),
            "1280x720": data_set(work, "large", args.large_images, 1280, 720, args.workers)}
    ray.init(num_cpus=args.workers, include_dashboard=False)
    rows = []  # (source size, pipeline, augmentation, rates or why not, peer name)

    split = {}  # (source size, pipeline) → CPU ms per image by process group, over the timed epochs

    def measure(make, n, name=None):
        time_ray(make(), n)  # warm-up: worker start-up is not ingest speed
        before, tic = cpu_seconds(), time.perf_counter()
        rates = [time_ray(make(), n) for _ in range(args.repeats)]
        wall, after = time.perf_counter() - tic, cpu_seconds()
        if name:
            used = {k: (v - before.get(k, 0.0)) * 1000 / (n * args.repeats) for k, v in after.items()}
            used["idle cores"] = wall * 1000 * args.workers / (n * args.repeats) - sum(used.values())
            split[name] = used
        return rates

    for size, (root, entries, rec_dir, _) in sets.items():
        channel = Channel("train", rec_dir, "application/x-recordio", "Pipe")
        for aug in AUGMENTATIONS:
            decode = Decode(hp(aug), training=True)
            rows.append((size, "raysight .rec", aug, measure(
                lambda: data.channel_datasets(channel, None, decode, training=True)[0], len(entries),
                (size, f".rec, {aug}") if aug == "crop" else None), "mxnet"))
        if size == "1280x720":
            decode = full_decode(Decode(hp("crop"), training=True))
            rows.append((size, "raysight .rec, full decode (no reduced scale)", "crop", measure(
                lambda: data.channel_datasets(channel, None, decode, training=True)[0], len(entries)), "mxnet"))
        index = [{"id": e.index, "uri": os.path.join(root, e.path), "label": list(e.labels)} for e in entries]
        decode = Decode(hp("crop"), training=True)
        rows.append((size, "raysight images + .lst", "crop", measure(
            lambda: data.channel_datasets(channel, index, decode, training=True)[0], len(entries),
            (size, "images + .lst, crop")), "loader"))
    ray.shutdown()
    for size, (root, entries, rec_dir, _) in sets.items():
        for aug in AUGMENTATIONS:
            rows.append((size, "MXNet 1.9.1 ImageRecordIter", aug, mxnet_rates(
                args.mxnet_python, os.path.join(rec_dir, "train.rec"), args.workers, args.repeats, aug), None))
        rows.append((size, f"torch DataLoader, {args.workers} persistent workers", "crop", dataloader_rates(
            root, entries, Decode(hp("crop"), training=True), args.workers, args.repeats), None))
    for size, (root, entries, _, _) in sets.items():
        split[(size, "decode alone, 1 core")] = {"one process, decode only": decode_alone(root, entries)}
    print_table(rows, sets, args)
    groups = sorted({g for used in split.values() for g in used})
    print("\nWhere the cores went in the timed epochs (CPU ms per image):\n")
    print("| source | pipeline | " + " | ".join(groups) + " |\n|---|---|" + "---|" * len(groups))
    for (size, name), used in split.items():
        print(f"| {size} | {name} | " + " | ".join(f"{used[g]:.2f}" if g in used else "" for g in groups) + " |")


def decode_alone(root, entries) -> float:
    """CPU ms per image of raysight's decode (read, decode, resize, crop, flip) in one
    loop: what any pipeline on these cores must spend per image."""
    from raysight.algorithms.image_classification import Decode

    dataset = TorchSet(root, entries, Decode(hp("crop"), training=True))
    tic = time.process_time()
    for i in range(len(dataset)):
        dataset[i]
    return (time.process_time() - tic) * 1000 / len(dataset)


def print_table(rows, sets, args) -> None:
    def rate(runs):
        return statistics.median(runs) if isinstance(runs, list) else None

    peers = {}
    for size, name, aug, runs, _ in rows:
        if name.startswith("MXNet"):
            peers[("mxnet", size, aug)] = rate(runs)
        if name.startswith("torch DataLoader"):
            peers[("loader", size, aug)] = rate(runs)
    sizes = ", ".join(f"{n} photos {s} (~{kb:.0f} KB)" for s, (_, e, _, kb) in sets.items() for n in [len(e)])
    print(f"{sizes}; resize {RESIZE}, crop {SHAPE[1]}, batch {BATCH}, {args.workers} workers/threads, "
          f"{os.cpu_count()} cores, median of {args.repeats} epochs after a warm-up\n")
    print("| source | pipeline | augmentation_type | images/s | range | / peer |\n|---|---|---|---|---|---|")
    for size, name, aug, runs, peer in rows:
        mid = rate(runs)
        if mid is None:
            print(f"| {size} | {name} | {aug} | {runs} | | |")
            continue
        versus = peers.get((peer, size, aug)) if peer else None
        ratio = f"{mid / versus:.2f}x {'MXNet' if peer == 'mxnet' else 'DataLoader'}" if versus else ""
        print(f"| {size} | {name} | {aug} | {mid:.0f} | {min(runs):.0f}–{max(runs):.0f} | {ratio} |")


if __name__ == "__main__":
    main()
