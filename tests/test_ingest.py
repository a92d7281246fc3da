"""How channels reach workers: sharding, exact validation splits, seeded shuffles."""
import threading

import pytest

from raysight import algorithms
from raysight.errors import ClientError
from raysight.hyperparams import parse_hyperparameters
from raysight.train.ingest import ExactValidationDataConfig, flatten
from tests.conftest import parse_job, tiny_request

IC = algorithms.get("image-classification")


def job_and_hp(root, counts, distribution="FullyReplicated", seed=None):
    request = tiny_request(root, "/tmp/unused", "ingest", counts)
    for ch in request["InputDataConfig"]:
        ch["DataSource"]["S3DataSource"]["S3DataDistributionType"] = distribution
        if seed is not None:
            ch["ShuffleConfig"] = {"Seed": seed}
    job = parse_job(request)
    return job, parse_hyperparameters(IC.hyperparameters, job.hyperparameters)


def consume(iterators):
    """Iterate every worker's iterator at once, as Train workers do; ids per worker."""
    out = [None] * len(iterators)

    def run(i):
        out[i] = [int(x) for b in iterators[i].iter_batches(batch_size=16) for x in b["id"]]

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(iterators))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    return out


def all_ids(root, split):
    with open(f"{root}/{split}_lst/{split}.lst") as f:
        return {int(line.split("\t")[0]) for line in f if line.strip()}


@pytest.mark.parametrize("distribution", ["ShardedByS3Key", "FullyReplicated"])
def test_two_workers_see_disjoint_shares(ray_cluster, digits_small, distribution):
    root, counts = digits_small
    job, hp = job_and_hp(root, counts, distribution)
    datasets = flatten(IC.datasets(job, hp, shards=2).datasets)
    assert ("train#0" in datasets) == (distribution == "ShardedByS3Key")
    splits = ExactValidationDataConfig().configure(datasets, 2, None, None)
    key = "train#{}" if distribution == "ShardedByS3Key" else "train"
    train = consume([splits[0][key.format(0)], splits[1][key.format(1)]])
    assert not set(train[0]) & set(train[1])
    covered = set(train[0]) | set(train[1])
    if distribution == "ShardedByS3Key":  # each worker reads its own objects, all of them
        assert covered == all_ids(root, "train")
        assert len(train[0]) == len(train[1]) == counts["train"] // 2
    else:  # an equal split may leave out fewer rows than there are workers
        assert covered <= all_ids(root, "train") and len(covered) >= counts["train"] - 1
    validation = consume([splits[0]["validation"], splits[1]["validation"]])
    assert not set(validation[0]) & set(validation[1])
    assert sorted(validation[0] + validation[1]) == sorted(all_ids(root, "validation"))  # each exactly once


def test_more_workers_than_objects_is_refused(ray_cluster, digits_small):
    root, counts = digits_small
    job, hp = job_and_hp(root, counts, "ShardedByS3Key")
    with pytest.raises(ClientError, match="needs at least one object per worker"):
        IC.datasets(job, hp, shards=10_000)


@pytest.mark.parametrize("cached", [True, False], ids=["decoded-once", "streamed"])
def test_seeded_shuffle_is_reproducible_and_new_every_epoch(ray_cluster, digits_small, monkeypatch, cached):
    """ShuffleConfig.Seed: epoch e's order is drawn from (seed, e), on both paths a channel
    takes (decoded once and kept, or decoded every epoch)."""
    from raysight import data

    monkeypatch.setattr(data, "DECODE_CACHE_FRACTION", 0.25 if cached else 0.0)
    monkeypatch.setattr(data, "CACHED_ROWS_PER_BLOCK", 16)  # enough blocks in 200 rows to see their order
    root, counts = digits_small

    def orders(seed, epochs=3):
        job, hp = job_and_hp(root, counts, seed=seed)
        ds = IC.datasets(job, hp).datasets["train"]
        ds.context.execution_options.preserve_order = True
        it = ds.iterator()  # one dataset iterated once per epoch, as a Train worker does
        return [[int(x) for b in it.iter_batches(batch_size=64) for x in b["id"]] for _ in range(epochs)]

    first, again, other = orders(5), orders(5), orders(6)
    assert first == again  # the same seed: the same order, epoch by epoch
    assert first[0] != first[1] != first[2] and sorted(first[0]) == sorted(first[1])  # new every epoch
    assert first[0] != other[0] and sorted(first[0]) == sorted(other[0])


@pytest.mark.slow
def test_two_worker_ddp_job_matches_one_worker(ray_cluster, digits_small, tmp_path):
    """2 hosts x batch 16 on a ShardedByS3Key channel is the same optimisation as 1 host x
    batch 32 (DDP averages the gradients of the two halves), so both reach the same accuracy
    within run-to-run noise. Measured over 3 pairs: 0.91-0.95 for both, gaps under 0.04."""
    import json

    from tests.conftest import run_cli, write_json

    root, counts = digits_small

    def train(name, hosts, batch, distribution):
        request = tiny_request(root, str(tmp_path), name, counts, epochs="10", mini_batch_size=batch)
        request["ResourceConfig"]["InstanceCount"] = hosts
        request["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3DataDistributionType"] = distribution
        request["InputDataConfig"][0]["ShuffleConfig"] = {"Seed": 4}  # the same numbers on every run
        proc = run_cli("train", write_json(tmp_path / f"{name}.json", request))
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        assert f"{hosts} Ray Train worker(s)" in proc.stdout
        with open(tmp_path / name / "output" / "job.json") as f:
            final = {m["MetricName"]: m["Value"] for m in json.load(f)["FinalMetricDataList"]}
        # validation accuracy is a count over every validation image exactly once
        assert round(final["validation:accuracy"] * counts["validation"], 6) % 1 == 0
        with open(tmp_path / name / "output" / "metrics.json") as f:
            return max(h["validation:accuracy"] for h in json.load(f))

    two = train("ddp-2", 2, "16", "ShardedByS3Key")
    one = train("ddp-1", 1, "32", "FullyReplicated")
    assert two > 0.8 and one > 0.8, (two, one)
    assert abs(two - one) <= 0.08, (two, one)


def counting_decode(log: str, deterministic: bool):
    """A decode op that notes how many rows it decoded (Ray tasks share this machine's disk).
    Defined in a function so Ray pickles it by value: workers cannot import test modules."""

    class CountingDecode:
        row_bytes = 64

        def __init__(self):
            self.deterministic = deterministic

        def __call__(self, batch):
            with open(log, "a") as f:
                f.write(f"{len(batch['id'])}\n")
            return {"id": batch["id"]}

    return CountingDecode()


@pytest.mark.parametrize("deterministic, fraction, decoded", [(True, 0.25, 600), (False, 0.25, 1800),
                                                             (True, 0.0, 1800)])  # rows decoded in 3 epochs
def test_small_deterministic_channels_are_decoded_once(ray_cluster, tmp_path, monkeypatch, deterministic,
                                                       fraction, decoded):
    from raysight import data

    monkeypatch.setattr(data, "DECODE_CACHE_FRACTION", fraction)
    log = tmp_path / "decoded"
    rows = [{"id": i, "uri": f"u{i}", "label": 0} for i in range(600)]
    ds = data.rows_dataset(rows, counting_decode(str(log), deterministic), shuffle=True)
    epochs = [[int(x) for b in ds.iter_batches(batch_size=100) for x in b["id"]] for _ in range(3)]
    assert all(sorted(e) == list(range(600)) for e in epochs)  # every row once per epoch
    # in a new order each epoch, decoded once or not: five 128-row blocks repeat their order by
    # chance once in 120 epoch pairs, so ask for a change in three epochs (chance 1 in 14,400)
    assert len({tuple(e) for e in epochs}) > 1
    assert sum(int(n) for n in log.read_text().split()) == decoded


def test_a_corrupt_image_in_a_decoded_once_channel_fails_before_training(ray_cluster, digits_small, tmp_path):
    import re
    import shutil

    root, counts = digits_small
    copy = str(tmp_path / "digits")
    shutil.copytree(root, copy)
    with open(f"{copy}/validation_lst/validation.lst") as f:
        victim = f.readline().split("\t")[-1].strip()
    with open(f"{copy}/validation/{victim}", "wb") as f:
        f.write(b"\x89PNG broken")
    job, hp = job_and_hp(copy, counts)
    with pytest.raises(ClientError, match=re.escape(victim) + ": cannot decode image"):
        IC.datasets(job, hp)  # the driver's step, before any worker starts


@pytest.mark.slow
def test_a_seeded_job_is_reproducible(ray_cluster, digits_small, tmp_path):
    """ShuffleConfig.Seed seeds the whole job: initial weights, the order of every epoch and
    every random augmentation. Two runs with one seed give the same metrics, epoch by epoch;
    another seed gives others."""
    import json

    from tests.conftest import run_cli, write_json

    root, counts = digits_small

    logs = {}

    def history(name, seed, env=None):
        request = tiny_request(root, str(tmp_path), name, counts, epochs="1", augmentation_type="crop_color_transform")
        for ch in request["InputDataConfig"]:
            ch["ShuffleConfig"] = {"Seed": seed}
        proc = run_cli("train", write_json(tmp_path / f"{name}.json", request), env=env)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
        logs[name] = proc.stdout
        with open(tmp_path / name / "output" / "metrics.json") as f:
            return [{k: v for k, v in epoch.items() if ":" in k} for epoch in json.load(f)]

    first, again = history("seed-a", 11), history("seed-b", 11)
    other = history("seed-c", 12, env={"RAYSIGHT_DECODE_CACHE_FRACTION": "0"})
    assert first == again
    assert first != other
    # and the decode cache's setting, read from the environment: the validation channel (nothing
    # random) is decoded once by default, and streamed every epoch with the cache off
    assert f"channel 'validation': {counts['validation']} images decoded once" in logs["seed-a"]
    assert "decoded once" not in logs["seed-c"]


def test_sharded_by_s3_key_over_rec_files_gives_each_worker_its_own_files(ray_cluster, tmp_path):
    """Four .rec files, two workers: worker i reads every 2nd file from the i-th (sorted keys),
    each record once."""
    from raysight.formats import recordio
    from tests.test_bad_input import png

    folders = {}
    for split, files in (("train", 4), ("validation", 1)):
        folder = tmp_path / split
        folder.mkdir()
        for f in range(files):
            with open(folder / f"part-{f}.rec", "wb") as out:
                recordio.write_records(out, [recordio.pack_image(i % 10, png(), id=100 * f + i) for i in range(5)])
        folders[split] = str(folder)
    request = tiny_request("/unused", "/tmp/unused", "sharded-rec", {"train": 20})
    request["HyperParameters"].pop("resize")
    request["InputDataConfig"] = [
        {"ChannelName": c, "ContentType": "application/x-recordio",
         "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": folders[c],
                                         "S3DataDistributionType": "ShardedByS3Key"}}}
        for c in ("train", "validation")]
    job = parse_job(request)
    hp = parse_hyperparameters(IC.hyperparameters, job.hyperparameters)
    datasets = flatten(IC.datasets(job, hp, shards=2).datasets)
    splits = ExactValidationDataConfig().configure(datasets, 2, None, None)
    train = consume([splits[0]["train#0"], splits[1]["train#1"]])
    assert sorted(train[0]) == [100 * f + i for f in (0, 2) for i in range(5)]
    assert sorted(train[1]) == [100 * f + i for f in (1, 3) for i in range(5)]
