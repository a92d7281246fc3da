"""Object detection end to end on the procedural shapes: `raysight train` through the
CLI on the shared Ray, every input format, incremental training, and the served model."""
from __future__ import annotations

import json
import os
import re
import tarfile

import numpy as np
import pytest

from raysight import evaluation
from raysight.sample_data import shapes
from raysight.errors import ClientError
from raysight.train import driver
from tests.conftest import BUCKET, free_port, run_cli, upload_tree, write_json
from tests.test_serve import encode, ping, post

TRAIN, VALIDATION, SIZE, EPOCHS = 288, 40, 96, 17
SEED = 1  # ShuffleConfig.Seed of the from-scratch fixture; measured below
# What a detector that has learnt nothing scores: random boxes of object-like sizes.
CHANCE_DETECTIONS = 10


@pytest.fixture(scope="module")
def shapes_data(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("shapes"))
    counts = shapes.write(root, TRAIN, VALIDATION, SIZE, seed=1)
    return root, counts


@pytest.fixture(scope="module")
def trained(ray_cluster, shapes_data, tmp_path_factory):
    root, counts = shapes_data
    out = tmp_path_factory.mktemp("od-out")
    request = shapes.training_request(root, str(out), "json", name="od-shapes", counts=counts, epochs=str(EPOCHS))
    for ch in request["InputDataConfig"]:  # seeds weights, order and augmentation: the same run on every machine
        ch["ShuffleConfig"] = {"Seed": SEED}
    proc = run_cli("train", write_json(out / "request.json", request), timeout=1200)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    return proc, out / "od-shapes" / "output"


def validation_truth(root):
    truth = {}
    for name in sorted(os.listdir(os.path.join(root, "json", "validation_annotation"))):
        with open(os.path.join(root, "json", "validation_annotation", name)) as f:
            doc = json.load(f)
        w = doc["image_size"][0]["width"]
        truth[doc["file"]] = np.array([[a["class_id"], a["left"] / w, a["top"] / w, (a["left"] + a["width"]) / w,
                                        (a["top"] + a["height"]) / w] for a in doc["annotations"]])
    return truth


def chance_map(truth: list[np.ndarray], seed=0) -> float:
    rng = np.random.default_rng(seed)
    detections = []
    for _ in truth:
        side = rng.uniform(0.18, 0.5, CHANCE_DETECTIONS)
        x, y = rng.uniform(0, 1 - side), rng.uniform(0, 1 - side)
        detections.append(np.stack([rng.integers(0, 3, CHANCE_DETECTIONS), rng.random(CHANCE_DETECTIONS),
                                    x, y, x + side, y + side], axis=1))
    return evaluation.mean_ap(detections, truth, 3)[0]


@pytest.mark.slow
def test_trains_to_map_well_above_chance(trained, shapes_data):
    proc, output = trained
    with open(output / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobStatus"] == "Completed"
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert set(final) == {"validation:mAP", "train:cross_entropy", "train:smooth_l1"}
    with open(output / "metrics.json") as f:
        history = json.load(f)
    assert len(history) == EPOCHS
    best = max(h["validation:mAP"] for h in history)
    chance = np.mean([chance_map(list(validation_truth(shapes_data[0]).values()), s) for s in range(5)])
    # Chance (random boxes) is about 0.015; a small SSD from scratch breaks through after ~2,500
    # images (batch 8) and reaches 0.2-0.4 by ~4,000 on CPU, but an unseeded run broke through only
    # at ~4,300 (epoch 15). Seeded (SEED = 1: weights, order and augmentation), the run is the same
    # every time: mAP 0.02 until epoch 11, then 0.06, 0.12, 0.22, 0.25, 0.30 at epoch 16 (measured
    # 2026-12-01, bit-identical in two runs from different clones); 17 epochs keep five epochs of
    # margin over the 0.06 bar should another CPU's float rounding move the break-through.
    assert chance < 0.03
    assert best > max(0.06, 4 * chance), (best, chance, history)
    assert history[-1]["train:cross_entropy"] < history[0]["train:cross_entropy"]
    assert os.path.getsize(output / "training-curves.png") > 1000
    from PIL import Image  # detections.png: validation images with their detections drawn

    with Image.open(output / "detections.png") as preview:
        assert preview.format == "PNG" and preview.width >= 600 and preview.height >= 300
        colours = len(np.unique(np.asarray(preview.convert("RGB")).reshape(-1, 3), axis=0))
    assert colours > 1000  # photographs of the shapes, not an empty figure
    assert "Tip: Use `take_batch()`" not in proc.stdout + proc.stderr  # drawing it adds no Ray Data noise


@pytest.mark.slow
def test_log_lines_match_sagemakers_metric_regexes(trained):
    proc, _ = trained
    logs = proc.stdout + proc.stderr
    regexes = {  # ../shared/spec/tuning.md, Object Detection metric definitions
        "train:progress": r"#progress_metric: host=\S+, completed (\S+) %",
        "train:smooth_l1": r"#quality_metric: host=\S+, epoch=\S+, batch=\S+ train smooth_l1 <loss>=(\S+)",
        "train:cross_entropy": r"#quality_metric: host=\S+, epoch=\S+, batch=\S+ train cross_entropy <loss>=(\S+)",
        "train:throughput": r"#throughput_metric: host=\S+, train throughput=(\S+) records/second",
        "validation:mAP": r"#quality_metric: host=\S+, epoch=\S+, validation mAP <score>=\((\S+)\)",
    }
    for name, regex in regexes.items():
        values = [float(v) for v in re.findall(regex, logs)]
        assert values, f"no {name} line"
        assert all(v >= 0 for v in values)
    assert [float(v) for v in re.findall(regexes["train:progress"], logs)][-1] == 100
    assert len(re.findall(regexes["validation:mAP"], logs)) == EPOCHS
    assert "host=algo-1" in logs and "Storing the best model with validation mAP:" in logs


@pytest.mark.slow
def test_artifact_is_sagemakers_layout(trained):
    _, output = trained
    with tarfile.open(output / "model.tar.gz") as tar:
        names = set(tar.getnames())
        hp = json.load(tar.extractfile("hyperparams.json"))
    assert {"hyperparams.json", "raysight.json"} <= names
    assert next(n for n in names if n.endswith(".params")).startswith("model_algo_1-")
    assert hp["base_network"] == "resnet-50" and hp["num_classes"] == 3


@pytest.fixture(scope="module")
def endpoint(trained):
    from ray import serve

    from raysight.serve import app
    from raysight.serve.options import ServeOptions

    port = free_port()
    assert app.run(str(trained[1] / "model.tar.gz"), port=port, options=ServeOptions(name="od"))["error"] is None
    yield port
    serve.shutdown()


@pytest.mark.slow
def test_served_boxes_score_the_mAP_the_job_recorded(endpoint, trained, shapes_data):
    """The endpoint serves the model the job stored (its best epoch), with the validation
    pipeline's preprocessing: its answers on the validation images score the mAP the job
    recorded for that epoch, well above chance. (Whether a small SSD from scratch breaks
    through by a given epoch is the training test's claim; this one holds for any model.)"""
    root = shapes_data[0]
    truth = validation_truth(root)
    assert ping(endpoint) == 200
    detections = []
    for name in truth:
        with open(os.path.join(root, "json", "validation", name), "rb") as f:
            status, ctype, body = post(endpoint, f.read(), "image/jpeg")
        assert status == 200 and ctype.startswith("application/json")
        rows = json.loads(body)["prediction"]
        assert rows and all(len(r) == 6 for r in rows)
        scores = [r[1] for r in rows]
        assert scores == sorted(scores, reverse=True) and 0 <= scores[-1] <= scores[0] <= 1
        assert all(isinstance(r[0], float) and r[0] in (0.0, 1.0, 2.0) for r in rows)
        assert all(0 <= v <= 1 for r in rows for v in r[2:]) and all(r[4] > r[2] and r[5] > r[3] for r in rows)
        detections.append(np.array(rows))
    served = evaluation.mean_ap(detections, list(truth.values()), 3)[0]
    with open(trained[1] / "metrics.json") as f:
        best = max(h["validation:mAP"] for h in json.load(f))
    chance = np.mean([chance_map(list(truth.values()), s) for s in range(5)])
    assert served > 4 * chance, (served, chance)
    assert abs(served - best) <= 0.02 + 0.1 * best, (served, best)


@pytest.mark.slow
def test_annotation_accept_answers_in_pixels(endpoint):
    body = encode("PNG", size=(150, 100))
    status, _, plain = post(endpoint, body, "image/png")
    status2, ctype, annotated = post(endpoint, body, "image/png", accept="application/json;annotation=1")
    assert status == status2 == 200 and ctype.startswith("application/json")
    rows, doc = json.loads(plain)["prediction"], json.loads(annotated)
    assert doc["image_size"] == [{"width": 150, "height": 100, "depth": 3}]
    assert len(doc["annotations"]) == len(rows)
    first, row = doc["annotations"][0], rows[0]
    assert first["class_id"] == int(row[0]) and first["score"] == row[1]
    assert abs(first["left"] - row[2] * 150) <= 1 and abs(first["top"] - row[3] * 100) <= 1
    assert abs(first["width"] - (row[4] - row[2]) * 150) <= 1


@pytest.mark.slow
def test_jsonlines_accept_is_one_prediction_line(endpoint):
    body = encode("PNG", size=(150, 100))
    _, _, plain = post(endpoint, body, "image/png")
    status, ctype, lines = post(endpoint, body, "image/png", accept="application/jsonlines")
    assert status == 200 and ctype.startswith("application/jsonlines")
    [line] = lines.decode().splitlines()
    assert json.loads(line) == json.loads(plain)  # {"prediction": [[class, score, x0, y0, x1, y1], ...]}


@pytest.mark.slow
def test_bad_requests_get_4xx(endpoint):
    assert post(endpoint, b"nope", "text/csv")[0] == 415
    assert post(endpoint, b"\xff\xd8 not a jpeg", "image/jpeg")[0] == 400
    assert post(endpoint, encode("PNG"), "image/png", accept="text/csv")[0] == 406
    assert ping(endpoint) == 200


@pytest.mark.slow
def test_incremental_training_starts_from_the_model(trained, shapes_data, tmp_path):
    root, counts = shapes_data
    model = str(trained[1] / "model.tar.gz")
    with open(trained[1] / "metrics.json") as f:
        best = max(h["validation:mAP"] for h in json.load(f))

    def request(name, **hp):
        r = shapes.training_request(root, str(tmp_path), "json", name=name, counts=counts, epochs="1", **hp)
        r["InputDataConfig"].append({"ChannelName": "model", "ContentType": "application/x-sagemaker-model",
                                     "InputMode": "File",
                                     "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": model}}})
        return write_json(tmp_path / f"{name}.json", r)

    # Fine-tuning at a tenth of the rate, as users do: Adam's fresh moments make the first steps at the
    # full rate large enough to knock a converged model back (0.41 -> 0.14 seen in CI).
    proc = run_cli("train", request("od-more", learning_rate="0.0001"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(tmp_path / "od-more" / "output" / "metrics.json") as f:
        first = json.load(f)[0]["validation:mAP"]
    assert first > 0.5 * best, (first, best)  # one more epoch from the model, not from scratch (~0.01)
    for name, hp, text in [("od-k", {"num_classes": "4"}, "num_classes is 3 in the model but 4 in this job"),
                           ("od-net", {"base_network": "vgg-16"}, "base_network is resnet-50 in the model"),
                           ("od-512", {"image_shape": "512"}, "do not fit the network")]:
        with open(request(name, **hp)) as f:
            job, algo, values = driver.prepare(json.load(f))
        with pytest.raises(ClientError, match=text):  # checked in the driver, before any worker starts
            algo.initial_state(job, values)


@pytest.fixture(scope="module")
def small_shapes(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("small-shapes"))
    counts = shapes.write(root, 32, 16, 64, seed=2)
    return root, counts


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["recordio", "manifest"])
def test_recordio_and_manifest_stream_from_s3(ray_cluster, s3, small_shapes, tmp_path, layout):
    root, counts = small_shapes
    prefix = upload_tree(s3, root, f"shapes-{layout}")
    request = shapes.training_request(prefix, str(tmp_path), layout, name=f"od-{layout}", counts=counts,
                                      epochs="1", mini_batch_size="8")
    for c in request["InputDataConfig"]:  # seeded, so a run from local files must score the same
        c["ShuffleConfig"] = {"Seed": 7}
    cache = tmp_path / "node-cache"
    score = completed_with_map(request, tmp_path, env={"RAYSIGHT_CACHE_DIR": str(cache)})
    assert 0 <= score <= 1
    if layout == "recordio":  # the streamed bytes were the local files' bytes, record for record
        local = json.loads(json.dumps(request).replace(prefix, root))
        local["TrainingJobName"] = "od-recordio-local"
        assert completed_with_map(local, tmp_path) == score
    # Pipe mode streams: records and images go from S3 to the decode tasks, no node-local copy
    assert not cache.exists() or not any(cache.iterdir())
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix=f"shapes-{layout}/")["Contents"]]
    assert listed  # and the data the job read exists only there (the request names s3:// URIs)
    assert all(c["DataSource"]["S3DataSource"]["S3Uri"].startswith("s3://") for c in request["InputDataConfig"])


def completed_with_map(request, out, env=None) -> float:
    """`raysight train` on the request ends Completed and reports validation:mAP (returned)."""
    proc = run_cli("train", write_json(out / "r.json", request), env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    with open(out / request["TrainingJobName"] / "output" / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobStatus"] == "Completed"
    final = {m["MetricName"]: m["Value"] for m in job["FinalMetricDataList"]}
    assert "validation:mAP" in final
    return final["validation:mAP"]


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["json", "recordio"])
def test_manifest_file_channels_train_a_detector(ray_cluster, small_shapes, tmp_path, layout):
    """S3DataType ManifestFile for every channel of images + JSON (File mode) and of RecordIO (Pipe)."""
    root, counts = small_shapes
    request = shapes.training_request(root, str(tmp_path), layout, name=f"od-mf-{layout}", counts=counts,
                                      epochs="1", mini_batch_size="8")
    for c in request["InputDataConfig"]:
        source = c["DataSource"]["S3DataSource"]
        folder = source["S3Uri"]
        listed = tmp_path / f"{c['ChannelName']}.manifest.json"
        listed.write_text(json.dumps([{"prefix": folder + "/"}] + sorted(os.listdir(folder))))
        source.update(S3DataType="ManifestFile", S3Uri=str(listed))
    completed_with_map(request, tmp_path)


def test_bad_annotations_fail_before_training(ray_cluster, small_shapes, tmp_path):
    root, counts = small_shapes
    request = shapes.training_request(root, str(tmp_path), "json", name="od-width", counts=counts,
                                      label_width="11")  # room for one object: 2 + 5
    proc = run_cli("train", write_json(tmp_path / "w.json", request))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1 and "ClientError" in out
    assert re.search(r"train_annotation/\d{5}\.json: \d objects need a label of length \d+, more than "
                     r"label_width=11", out)
    assert "Training job od-width" in out and "Epoch" not in out  # no training started
    bad = tmp_path / "bad"
    os.makedirs(bad / "ann")
    with open(os.path.join(root, "json", "train_annotation", "00003.json")) as f:
        doc = json.load(f)
    doc["annotations"][0]["left"] = 90  # 64 px image
    with open(bad / "ann" / "00003.json", "w") as f:
        json.dump(doc, f)
    request = shapes.training_request(root, str(tmp_path), "json", name="od-box", counts=counts)
    request["InputDataConfig"][2]["DataSource"]["S3DataSource"]["S3Uri"] = str(bad / "ann")
    job, algo, values = driver.prepare(request)
    with pytest.raises(ClientError, match=r"00003\.json annotation 0: box \(90, .* lies outside the 64x64 image"):
        algo.datasets(job, values)


@pytest.mark.slow
def test_recordio_label_wider_than_label_width_names_the_record(ray_cluster, small_shapes, tmp_path):
    root, counts = small_shapes
    request = shapes.training_request(root, str(tmp_path), "recordio", name="od-rec-width", counts=counts,
                                      label_width="8")
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1
    assert re.search(r"shapes\.rec record at byte \d+: label of length \d+ exceeds label_width=8", out), out[-3000:]
    assert not os.path.exists(tmp_path / "od-rec-width" / "output" / "model.tar.gz")


def test_procedural_data_set_cli(tmp_path):
    proc = run_cli("shapes", str(tmp_path / "s"), "--train", "6", "--validation", "3", "--size", "80")
    assert proc.returncode == 0, proc.stderr
    for layout in shapes.FORMATS:
        with open(tmp_path / "s" / f"request-{layout}.json") as f:
            assert json.load(f)["HyperParameters"]["num_training_samples"] == "6"
    assert len(os.listdir(tmp_path / "s" / "json" / "train")) == 6
    proc = run_cli("train", "--validate-only", str(tmp_path / "s" / "request-manifest.json"))
    assert proc.returncode == 0, proc.stderr
    with open(tmp_path / "s" / "json" / "validation.manifest") as f:
        assert len(f.read().splitlines()) == 3


@pytest.mark.slow
def test_vgg16_ssd512_trains_and_its_model_loads(ray_cluster, small_shapes, tmp_path):
    """base_network=vgg-16 at image_shape=512 (SSD512: one feature map more than SSD300),
    trained for an epoch; the written model rebuilds with SSD512's default boxes."""
    from raysight import algorithms
    from raysight.models import ssd

    root, counts = small_shapes
    request = shapes.training_request(root, str(tmp_path), "json", name="od-vgg512", counts=counts, epochs="1",
                                      mini_batch_size="8", base_network="vgg-16", image_shape="512")
    completed_with_map(request, tmp_path)
    algo, model, meta = algorithms.load_model(str(tmp_path / "od-vgg512" / "output" / "model.tar.gz"))
    assert (meta["hyperparameters"]["base_network"], meta["hyperparameters"]["image_shape"]) == ("vgg-16", 512)
    width = meta["hyperparameters"]["raysight_width_multiplier"]
    assert model.anchors.shape == ssd.default_boxes("vgg-16", 512, width).shape
    assert len(model.anchors) > len(ssd.default_boxes("vgg-16", 300, width))
