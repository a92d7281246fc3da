"""im2rec --list, gzip RecordIO, manifest label formats, missing S3 locations."""
import gzip
import json
import types

import pytest
from PIL import Image

from raysight import algorithms, data, storage
from raysight.errors import ClientError
from raysight.formats import recordio
from raysight.formats.lst import parse_lst
from raysight.hyperparams import parse_hyperparameters
from raysight.sources import read_range
from tests.conftest import BUCKET, run_cli

IC = algorithms.get("image-classification")


def test_im2rec_list_walks_class_folders_and_splits(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "img" / cls).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (4, 4)).save(tmp_path / "img" / cls / f"{i}.jpg")
    (tmp_path / "img" / "notes.txt").write_text("not an image")
    proc = run_cli("im2rec", str(tmp_path / "pets"), str(tmp_path / "img"), "--list", "--recursive",
                   "--train-ratio", "0.6", "--test-ratio", "0.2")
    assert proc.returncode == 0, proc.stderr
    parts = {name: parse_lst((tmp_path / f"pets_{name}.lst").read_text()) for name in ("train", "val", "test")}
    assert [len(parts[n]) for n in ("train", "val", "test")] == [6, 2, 2]
    every = [e for p in parts.values() for e in p]
    assert sorted(e.index for e in every) == list(range(10))
    assert {(e.path.split("/")[0], e.labels) for e in every} == {("cat", (0.0,)), ("dog", (1.0,))}
    proc = run_cli("im2rec", str(tmp_path / "pets_train.lst"), str(tmp_path / "img"), "--resize", "8")
    assert proc.returncode == 0 and "6 records" in proc.stdout
    summary = run_cli("inspect", str(tmp_path / "pets_train.rec"), "--format", "json")
    assert '"records": 6' in summary.stdout and '"min_width": 8' in summary.stdout


def test_gzip_recordio_streams(tmp_path):
    payloads = [recordio.pack_image(i, b"img%d" % i, id=i) for i in range(50)]
    buf = tmp_path / "a.rec"
    with open(buf, "wb") as f:
        recordio.write_records(f, payloads)
    (tmp_path / "a.rec.gz").write_bytes(gzip.compress(buf.read_bytes()))
    rows = [r for t in read_range(str(tmp_path / "a.rec.gz"), 0, 0, gzipped=True) for r in t.column("record")]
    assert [r.as_py() for r in rows] == payloads


def test_manifest_label_formats():
    hp = parse_hyperparameters(IC.hyperparameters, {"num_classes": "4", "num_training_samples": "9",
                                                    "multi_label": "1"})
    ids = IC.manifest_converter(hp, types.SimpleNamespace(content_type="application/x-recordio; label-format=class-id"))
    assert ids("[0, 2]", "m line 1") == [1.0, 0.0, 1.0, 0.0]
    hot = IC.manifest_converter(hp, types.SimpleNamespace(content_type="application/x-recordio"))
    assert hot("[1, 0, 0, 1]", "m line 2") == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ClientError, match=r"m line 3: class id 7 must be an integer in \[0, 3\]"):
        ids([7], "m line 3")
    with pytest.raises(ClientError, match="m line 4: multi-label row has 2 labels"):
        hot("[1, 0]", "m line 4")
    single = IC.manifest_converter(parse_hyperparameters(IC.hyperparameters, {"num_classes": "4",
                                                                           "num_training_samples": "9"}),
                                types.SimpleNamespace(content_type="application/x-recordio"))
    assert single("3", "m") == [3.0] and single(2, "m") == [2.0]


def test_missing_s3_locations_are_named(s3):
    with pytest.raises(ClientError, match=f"'s3://{BUCKET}/nothing/here' does not exist"):
        data.list_files(f"s3://{BUCKET}/nothing/here")
    with pytest.raises(ClientError, match="'s3://no-such-bucket-x/a.lst' does not exist"):
        storage.read_bytes("s3://no-such-bucket-x/a.lst")


def test_hyperparameters_and_digits_commands(tmp_path, s3):
    from raysight.hyperparams import schema_table

    for name in ("image-classification", "object-detection"):
        proc = run_cli("hyperparameters", name)
        assert proc.returncode == 0 and proc.stdout == schema_table(algorithms.get(name).hyperparameters) + "\n"
    proc = run_cli("digits", str(tmp_path / "d"), "--limit", "30")
    assert proc.returncode == 0, proc.stderr
    assert "Wrote 30 training and 30 validation images" in proc.stdout
    assert len(list((tmp_path / "d" / "train").rglob("*.png"))) == 30
    with open(tmp_path / "d" / "request.json") as f:
        request = json.load(f)
    assert request["HyperParameters"]["num_training_samples"] == "30"
    # the request validates as written, also when `raysight train` reads it from S3
    s3.put_object(Bucket=BUCKET, Key="requests/digits.json", Body=json.dumps(request).encode())
    proc = run_cli("train", "--validate-only", f"s3://{BUCKET}/requests/digits.json")
    assert proc.returncode == 0 and "is valid" in proc.stdout, proc.stderr


def test_dist_async_is_accepted_with_a_warning():
    from raysight.train import driver
    from tests.conftest import tiny_request

    request = tiny_request("/data", "/out", "async", {"train": 4}, kv_store="dist_async")
    with pytest.warns(UserWarning, match="kv_store=dist_async runs synchronously"):
        driver.prepare(request)
