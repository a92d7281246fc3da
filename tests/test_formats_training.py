"""Every image-classification input format, from S3 (moto, real HTTP) and local disk,
in pipe and file mode, trained for real through `raysight train`."""
import gzip
import hashlib
import json
import os
import re
import shutil

import pytest

from raysight.formats.lst import parse_lst
from tests.conftest import BUCKET, run_cli, tiny_request, upload_tree, write_json


def channel(name, uri, content_type="application/x-image", **extra):
    s3 = {"S3DataType": extra.pop("S3DataType", "S3Prefix"), "S3Uri": uri}
    if "AttributeNames" in extra:
        s3["AttributeNames"] = extra.pop("AttributeNames")
    return {"ChannelName": name, "ContentType": content_type, "DataSource": {"S3DataSource": s3}, **extra}


def finished(proc, out_uri_reader, name):
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    job = json.loads(out_uri_reader(f"{name}/output/job.json"))
    assert job["TrainingJobStatus"] == "Completed"
    return {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}


@pytest.fixture(scope="module")
def s3_digits(s3, digits_small):
    root, counts = digits_small
    return upload_tree(s3, root, "digits"), counts


def s3_reader(client, prefix):
    return lambda key: client.get_object(Bucket=BUCKET, Key=f"{prefix}/{key}")["Body"].read()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["Pipe", "File"])
def test_images_and_lst_from_s3(ray_cluster, s3, s3_digits, tmp_path, mode):
    uri, counts = s3_digits
    request = tiny_request("/unused", f"s3://{BUCKET}/out-{mode}", f"s3-lst-{mode.lower()}", counts, epochs="4")
    request["AlgorithmSpecification"]["TrainingInputMode"] = mode
    request["InputDataConfig"] = [channel(c, f"{uri}/{c}") for c in ("train", "validation", "train_lst",
                                                                      "validation_lst")]
    cache = tmp_path / "cache"
    proc = run_cli("train", write_json(tmp_path / "r.json", request), env={"RAYSIGHT_CACHE_DIR": str(cache)})
    metrics = finished(proc, s3_reader(s3, f"out-{mode}"), f"s3-lst-{mode.lower()}")
    assert metrics["validation:accuracy"] > 0.2  # chance is 0.1
    model = s3.get_object(Bucket=BUCKET, Key=f"out-{mode}/s3-lst-{mode.lower()}/output/model.tar.gz")["Body"].read()
    assert model[:2] == b"\x1f\x8b"  # a real gzip, written to S3 and read back whole
    cached = list(cache.glob("*.png")) if cache.exists() else []
    if mode == "File":  # every image went through the node-local copy
        assert len(cached) == counts["train"] + counts["validation"]
    else:
        assert cached == []


@pytest.fixture(scope="module")
def rec_files(digits_small, tmp_path_factory):
    """The digits packed with `raysight im2rec`, as MXNet's im2rec.py would."""
    root, counts = digits_small
    out = tmp_path_factory.mktemp("rec")
    for split in ("train", "validation"):
        (out / split).mkdir()
        shutil.copy(os.path.join(root, f"{split}_lst", f"{split}.lst"), out / split / f"{split}.lst")
        proc = run_cli("im2rec", str(out / split / split), os.path.join(root, split), "--pass-through",
                       "--num-thread", "2")
        assert proc.returncode == 0, proc.stderr
        os.remove(out / split / f"{split}.lst")
    return out, counts


def test_im2rec_round_trip_is_byte_exact(rec_files, digits_small):
    out, _ = rec_files
    root, _ = digits_small
    proc = run_cli("inspect", str(out / "train"), "--records")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    with open(os.path.join(root, "train_lst", "train.lst")) as f:
        entries = parse_lst(f.read())
    assert [r["id"] for r in rows] == [e.index for e in entries]
    for r, e in zip(rows, entries):
        with open(os.path.join(root, "train", e.path), "rb") as f:
            original = f.read()
        assert r["label"] == list(e.labels)
        assert r["image_bytes"] == len(original) and r["sha256"] == hashlib.sha256(original).hexdigest()
    summary = json.loads(run_cli("inspect", str(out / "train"), "--format", "json").stdout)
    assert summary["format"] == "recordio" and summary["records"] == len(entries) and summary["problems"] == []
    assert sum(summary["labels"].values()) == len(entries)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["Pipe", "File"])
def test_recordio_from_s3(ray_cluster, s3, rec_files, tmp_path, mode):
    out, counts = rec_files
    uri = upload_tree(s3, str(out), f"rec-{mode}")
    name = f"s3-rec-{mode.lower()}"
    request = tiny_request("/unused", f"s3://{BUCKET}/out-rec", name, counts, epochs="4")
    request["HyperParameters"].pop("resize")  # optional for RecordIO; 8x8 images fit 3,8,8
    request["AlgorithmSpecification"]["TrainingInputMode"] = mode
    request["InputDataConfig"] = [channel(c, f"{uri}/{c}", "application/x-recordio") for c in ("train", "validation")]
    cache = tmp_path / "cache"
    proc = run_cli("train", write_json(tmp_path / "r.json", request), env={"RAYSIGHT_CACHE_DIR": str(cache)})
    metrics = finished(proc, s3_reader(s3, "out-rec"), name)
    assert metrics["validation:accuracy"] > 0.2
    # File mode reads through node-local copies, byte for byte the objects; Pipe mode streams
    copies = sorted(p.name.split("-", 1)[1] for p in cache.glob("*.rec")) if cache.exists() else []
    assert copies == (["train.rec", "validation.rec"] if mode == "File" else [])
    for copy in cache.glob("*.rec"):
        key = f"rec-{mode}/{copy.name.split('-', 1)[1].split('.')[0]}/{copy.name.split('-', 1)[1]}"
        assert copy.read_bytes() == s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_file_mode_copies_follow_the_object(s3, tmp_path):
    """A node-local copy is named by the object's size and time: a replaced object is
    downloaded again (each job runs in new worker processes), never read stale."""
    from raysight import storage

    s3.put_object(Bucket=BUCKET, Key="cached/a.rec", Body=b"first version")
    first = storage.cached(f"s3://{BUCKET}/cached/a.rec", str(tmp_path))
    assert open(first, "rb").read() == b"first version"
    s3.put_object(Bucket=BUCKET, Key="cached/a.rec", Body=b"the second, longer version")
    storage._cache_name.cache_clear()  # what a new job's new worker process starts with
    second = storage.cached(f"s3://{BUCKET}/cached/a.rec", str(tmp_path))
    assert second != first and open(second, "rb").read() == b"the second, longer version"


@pytest.mark.slow
def test_gzip_lst_and_augmented_manifest_locally(ray_cluster, digits_small, tmp_path):
    """Manifest for train (source-ref relative to the manifest), gzip .lst channels elsewhere."""
    root, counts = digits_small
    manifests = {}
    for split in ("train", "validation"):
        with open(os.path.join(root, f"{split}_lst", f"{split}.lst")) as f:
            entries = parse_lst(f.read())
        lines = [json.dumps({"source-ref": f"../../{os.path.basename(root)}/{split}/{e.path}",
                             "class": str(int(e.labels[0])), "class-metadata": {"ignored": True}})
                 for e in entries]
        folder = tmp_path / "m" / split
        folder.mkdir(parents=True)
        (folder / f"{split}.manifest").write_text("\n".join(lines) + "\n")
        manifests[split] = str(folder / f"{split}.manifest")
    # place the manifests so that ../../<digits dir> resolves to the exported images
    os.symlink(root, tmp_path / os.path.basename(root))
    request = tiny_request(root, str(tmp_path / "out"), "manifest-job", counts, epochs="4")
    request["InputDataConfig"] = [
        channel(s, manifests[s], "application/x-recordio", S3DataType="AugmentedManifestFile",
                AttributeNames=["source-ref", "class"], RecordWrapperType="RecordIO", InputMode="Pipe")
        for s in ("train", "validation")]
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    metrics = finished(proc, lambda k: (tmp_path / "out" / k).read_text(), "manifest-job")
    assert metrics["validation:accuracy"] > 0.2

    gz = tmp_path / "gz_lst"
    gz.mkdir()
    with open(os.path.join(root, "train_lst", "train.lst"), "rb") as f:
        (gz / "train.lst.gz").write_bytes(gzip.compress(f.read()))
    request = tiny_request(root, str(tmp_path / "out"), "gzip-lst-job", counts, epochs="1")
    request["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] = str(gz)
    request["InputDataConfig"][2]["CompressionType"] = "Gzip"
    proc = run_cli("train", write_json(tmp_path / "r2.json", request))
    finished(proc, lambda k: (tmp_path / "out" / k).read_text(), "gzip-lst-job")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["Pipe", "File"])
def test_augmented_manifest_with_s3_refs(ray_cluster, s3, s3_digits, digits_small, tmp_path, mode):
    """Manifest lines whose source-ref values are s3:// URIs, the manifest itself on S3."""
    uri, counts = s3_digits
    root, _ = digits_small
    for split in ("train", "validation"):
        with open(os.path.join(root, f"{split}_lst", f"{split}.lst")) as f:
            lines = [json.dumps({"source-ref": f"{uri}/{split}/{e.path}", "class": int(e.labels[0])})
                     for e in parse_lst(f.read())]
        s3.put_object(Bucket=BUCKET, Key=f"manifests-{mode}/{split}/{split}.manifest",
                      Body=gzip.compress(("\n".join(lines) + "\n").encode()))
    name = f"s3-manifest-{mode.lower()}"
    request = tiny_request("/unused", f"s3://{BUCKET}/out-manifest", name, counts, epochs="4")
    request["AlgorithmSpecification"]["TrainingInputMode"] = mode
    request["InputDataConfig"] = [
        channel(s, f"s3://{BUCKET}/manifests-{mode}/{s}/{s}.manifest", "application/x-recordio",
                S3DataType="AugmentedManifestFile", AttributeNames=["source-ref", "class"],
                RecordWrapperType="RecordIO", CompressionType="Gzip")
        for s in ("train", "validation")]
    proc = run_cli("train", write_json(tmp_path / "r.json", request), env={"RAYSIGHT_CACHE_DIR": str(tmp_path)})
    metrics = finished(proc, s3_reader(s3, "out-manifest"), name)
    assert metrics["validation:accuracy"] > 0.2


def _manifest(client, key, prefix, keys):
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps([{"prefix": prefix}] + keys).encode())
    return f"s3://{BUCKET}/{key}"


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["Pipe", "File"])
def test_images_and_lst_listed_by_manifest_files(ray_cluster, s3, s3_digits, digits_small, tmp_path, mode):
    """S3DataType ManifestFile on all four channels: the objects are the manifest's prefix + keys,
    wherever the manifest itself lives."""
    uri, counts = s3_digits
    root, _ = digits_small
    channels = []
    for c in ("train", "validation", "train_lst", "validation_lst"):
        keys = sorted(os.path.relpath(os.path.join(d, f), os.path.join(root, c)).replace(os.sep, "/")
                      for d, _, fs in os.walk(os.path.join(root, c)) for f in fs)
        listed = _manifest(s3, f"manifests-{mode}/{c}.json", f"{uri}/{c}/", keys)
        channels.append(channel(c, listed, S3DataType="ManifestFile"))
    name = f"s3-manifest-file-{mode.lower()}"
    request = tiny_request("/unused", f"s3://{BUCKET}/out-mf-{mode}", name, counts, epochs="4")
    request["AlgorithmSpecification"]["TrainingInputMode"] = mode
    request["InputDataConfig"] = channels
    proc = run_cli("train", write_json(tmp_path / "r.json", request), env={"RAYSIGHT_CACHE_DIR": str(tmp_path / "c")})
    metrics = finished(proc, s3_reader(s3, f"out-mf-{mode}"), name)
    assert metrics["validation:accuracy"] > 0.2  # chance is 0.1


def test_manifest_file_problems_are_named(s3, s3_digits, tmp_path):
    from raysight import data
    from raysight.errors import ClientError
    from raysight.job_request import Channel

    uri, _ = s3_digits

    def listing(body):
        s3.put_object(Bucket=BUCKET, Key="mf/bad.json", Body=body.encode())
        return data.channel_files(Channel("train", f"s3://{BUCKET}/mf/bad.json", s3_data_type="ManifestFile"))

    root, files = listing(json.dumps([{"prefix": f"{uri}/train_lst/tr"}, "ain.lst"]))
    assert (root, files) == (f"{uri}/train_lst", ["train.lst"])  # the prefix may end inside a name
    for body, message in [("{nope", "not JSON"), (json.dumps(["a"]), 'first element is {"prefix"'),
                          (json.dumps([{"prefix": f"{uri}/"}, 3]), "element 1 must be a key"),
                          (json.dumps([{"prefix": f"{uri}/train/"}, "0/none.png"]),
                           "1 listed object(s) not found under")]:
        with pytest.raises(ClientError, match=re.escape(message)) as e:
            listing(body)
        assert "channel 'train' ManifestFile s3://raysight-test/mf/bad.json" in str(e.value)


@pytest.mark.slow
def test_multi_label_weighted_loss_on_gzipped_recordio_stops_early(ray_cluster, rec_files, tmp_path):
    """One job, four claims: `.rec.gz` channels (CompressionType Gzip); multi_label=1 with
    use_weighted_loss=1 on RecordIO (the class weights come from one pass over the records);
    early stopping inside a real job; precision_dtype=float16 on CPU (a warning, float32)."""
    import numpy as np

    from raysight.formats import recordio

    out, counts = rec_files
    for split in ("train", "validation"):
        records = records_of(out / split / f"{split}.rec")
        (tmp_path / split).mkdir()
        with gzip.open(tmp_path / split / f"{split}.rec.gz", "wb") as f:
            recordio.write_records(f, [recordio.pack_image(np.eye(10)[int(r.label[0])], r.image, id=r.id)
                                       for r in records])
    request = tiny_request("/unused", str(tmp_path / "out"), "multi-gz", counts, epochs="30", multi_label="1",
                           use_weighted_loss="1", precision_dtype="float16", early_stopping="True",
                           early_stopping_min_epochs="2", early_stopping_patience="1",
                           early_stopping_tolerance="0.5")
    request["HyperParameters"].pop("resize")
    request["InputDataConfig"] = [dict(channel(c, str(tmp_path / c), "application/x-recordio",
                                               CompressionType="Gzip"), ShuffleConfig={"Seed": 3})
                                  for c in ("train", "validation")]
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    log = proc.stdout + proc.stderr
    metrics = finished(proc, lambda k: (tmp_path / "out" / k).read_text(), "multi-gz")
    assert "precision_dtype=float16 needs a GPU; training in float32 on CPU" in log
    weights = re.search(r"From the training data: pos_weight = \[([^\]]+)\]", log)
    assert weights, log[-3000:]
    positives = np.bincount([int(r.label[0]) for r in records_of(out / "train" / "train.rec")], minlength=10)
    expected = (counts["train"] - positives) / positives  # negatives / positives per class
    assert np.allclose([float(w) for w in weights.group(1).split(",")], expected, rtol=0.01)
    stopped = re.search(r"Early stopping at epoch (\d+)", log)
    assert stopped and int(stopped.group(1)) < 29, log[-3000:]
    history = json.loads((tmp_path / "out" / "multi-gz" / "output" / "metrics.json").read_text())
    assert len(history) == int(stopped.group(1)) + 1
    assert metrics["validation:accuracy"] > 0.5


def records_of(path):
    from raysight.formats import recordio

    with open(path, "rb") as f:
        return [recordio.unpack_image(p) for _, p in recordio.iter_records(f)]
