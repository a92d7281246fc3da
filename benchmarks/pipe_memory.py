"""Memory of a Pipe-mode `raysight train` job on a RecordIO channel at 1x and 10x the
images (issue 13, target 6), and the object-store cost of a decoded-once channel.

Each job trains one epoch of ResNet-18 at 3x32x32 (so training is quick and the data path
dominates) on photographic JPEGs of 500x375. A thread samples, every 0.1 s:
  - anonymous resident memory (RssAnon: the process's own heap, not the shared object
    store pages it maps) of this driver, the Ray Train worker, Ray Data's task workers
    and Ray's own processes, each group's peak;
  - the object store's use (Plasma memory usage), its peak, and bytes spilled.

Usage: python benchmarks/pipe_memory.py [--images 600] [--factor 10]
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import threading
import time


def group_of(cmd: str) -> str | None:
    if "RayTrainWorker" in cmd:
        return "Train worker"
    if cmd.startswith("ray::") and any(t in cmd for t in ("IDLE", "Read", "Map")):
        return "Data task workers"
    if "ray" in cmd or "raylet" in cmd or "gcs_server" in cmd:
        return "Ray's own processes"
    return None


def rss_anon_mib() -> dict[str, float]:
    out = {"driver": 0.0}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                cmd = f.read().replace("\0", " ")
            with open(f"/proc/{pid}/status") as f:
                anon = re.search(r"RssAnon:\s+(\d+) kB", f.read())
        except OSError:
            continue
        group = "driver" if int(pid) == os.getpid() else group_of(cmd)
        if group and anon:
            out[group] = out.get(group, 0.0) + int(anon.group(1)) / 1024
    return out


class Sampler(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self):
        import ray
        from ray._private.internal_api import memory_summary

        while not self.done.is_set():
            sample = rss_anon_mib()
            if ray.is_initialized():
                try:
                    text = memory_summary(address=ray.get_runtime_context().gcs_address, stats_only=True)
                    used = re.search(r"Plasma memory usage (\d+) MiB", text)
                    spilled = re.search(r"Spilled (\d+) MiB", text)
                    sample["object store"] = float(used.group(1)) if used else 0.0
                    sample["spilled"] = float(spilled.group(1)) if spilled else 0.0
                except Exception:  # noqa: BLE001 - Ray starting or stopping between samples
                    pass
            for k, v in sample.items():
                self.peaks[k] = max(self.peaks.get(k, 0.0), v)
            time.sleep(0.1)


def write_channel(work: str, name: str, n: int) -> str:
    from raysight.formats.lst import format_lst
    from raysight.im2rec import pack_list
    from raysight.sample_data.photos import make_photos

    root = os.path.join(work, name + "-images")
    entries = make_photos(root, n, 500, 375, seed=n)
    channel = os.path.join(work, name)
    os.makedirs(channel)
    lst = os.path.join(channel, "train.lst")
    with open(lst, "w") as f:
        f.write(format_lst(entries))
    pack_list(lst, root, False, pass_through=True, num_thread=os.cpu_count())
    os.makedirs(f"{channel}-lst")
    os.replace(lst, f"{channel}-lst/train.lst")
    return channel


def run_job(work: str, name: str, train: str, validation: str, n: int, augment: bool,
            train_lst: str | None = None) -> dict[str, float]:
    import ray

    from raysight import sample_data
    from raysight.train import driver

    hp = {"num_classes": "10", "num_training_samples": str(n), "image_shape": "3,32,32", "resize": "36",
          "num_layers": "18", "epochs": "1", "mini_batch_size": "64"}
    if augment:
        hp["augmentation_type"] = "crop"
    if train_lst:  # images + .lst: decoded once when nothing is random (data.decoded_once)
        channels = [sample_data.channel(name, uri, "application/x-image") for name, uri in (
            ("train", train), ("train_lst", train_lst), ("validation", validation + "-images"),
            ("validation_lst", validation + "-lst"))]
    else:
        channels = [sample_data.channel("train", train, "application/x-recordio"),
                    sample_data.channel("validation", validation, "application/x-recordio")]
    request = sample_data.training_request(name, "image-classification", "Pipe", hp, channels, f"{work}/out")
    sampler = Sampler()
    sampler.start()
    tic = time.perf_counter()
    record = driver.run(request, echo=lambda *_: None)
    seconds = time.perf_counter() - tic
    sampler.done.set()
    sampler.join()
    ray.shutdown()
    assert record["TrainingJobStatus"] == "Completed", record.get("FailureReason")
    return {**sampler.peaks, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--factor", type=int, default=10)
    args = parser.parse_args()
    work = tempfile.mkdtemp(prefix="raysight-memory-")
    validation = write_channel(work, "validation", 64)
    sizes = (args.images, args.images * args.factor)
    channels = {n: write_channel(work, f"train-{n}", n) for n in sizes}
    rows = []
    for augment in (True, False):
        for n in sizes:
            mib = sum(os.path.getsize(os.path.join(channels[n], f)) for f in os.listdir(channels[n])) / 2**20
            if augment:  # RecordIO, streamed
                peaks = run_job(work, f"memory-{n}-rec", channels[n], validation, n, True)
            else:
                peaks = run_job(work, f"memory-{n}-lst", f"{channels[n]}-images", validation, n, False,
                                train_lst=f"{channels[n]}-lst")
            rows.append((n, mib, ".rec, streamed (augmentation_type=crop)" if augment
                         else "images + .lst, decoded once (no augmentation_type)", peaks))
            print(rows[-1], flush=True)
    groups = ["driver", "Train worker", "Data task workers", "Ray's own processes", "object store", "spilled"]
    print("\nPeak memory (MiB) of a Pipe-mode job, one epoch, ResNet-18 at 3x32x32\n")
    print("| images | channel MiB | data path | " + " | ".join(groups) + " | job s |\n" + "|---" * (len(groups) + 4) + "|")
    for n, mib, path, peaks in rows:
        print(f"| {n} | {mib:.0f} | {path} | " + " | ".join(f"{peaks.get(g, 0):.0f}" for g in groups)
              + f" | {peaks['seconds']:.0f} |")
    once = [peaks["object store"] for n, _, path, peaks in rows if "decoded once" in path]
    per_image = (once[1] - once[0]) * 2**20 / (sizes[1] - sizes[0])
    print(f"\ndecoded once, measured: {per_image:.0f} bytes of object store per extra image (peak at 10x minus 1x)")
    from raysight import algorithms
    from raysight.algorithms.image_classification import Decode
    from raysight.hyperparams import parse_hyperparameters

    for shape in ("3,32,32", "3,224,224"):
        hp = parse_hyperparameters(algorithms.get("image-classification").hyperparameters,
                                   {"num_classes": "10", "num_training_samples": "1", "image_shape": shape})
        print(f"decoded once, image_shape {shape}: {Decode(hp, training=True).row_bytes} bytes per image in the object store")


if __name__ == "__main__":
    main()
