"""Object detection without a cluster: hyperparameters, SSD networks, freezing by
SageMaker layer names, pretrained loading, augmentation, loss and the predictor."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from raysight import algorithms
from raysight.algorithms.object_detection import WIDTH, augment
from raysight.errors import ClientError
from raysight.hyperparams import parse_hyperparameters
from raysight.models import ssd
from raysight.train.optim import build_optimizer

OD = algorithms.get("object-detection")


def hp(**overrides):
    raw = {"num_classes": "3", "num_training_samples": "100", "use_pretrained_model": "0", WIDTH: "0.125"}
    return parse_hyperparameters(OD.hyperparameters, {**raw, **{k: str(v) for k, v in overrides.items()}})


def test_defaults_and_ranges_are_sagemakers():
    values = parse_hyperparameters(OD.hyperparameters, {"num_classes": "2", "num_training_samples": "10"})
    assert (values["base_network"], values["use_pretrained_model"], values["image_shape"], values["epochs"],
            values["label_width"], values["learning_rate"], values["mini_batch_size"], values["nms_threshold"],
            values["overlap_threshold"], values["optimizer"], values["weight_decay"], values[WIDTH]) == \
        ("vgg-16", 1, 300, 30, 350, 0.001, 32, 0.45, 0.5, "sgd", 0.0005, 1.0)
    for name, bad, text in [("image_shape", "299", ">= 300"), ("base_network", "resnet-101", "vgg-16, resnet-50"),
                            ("optimizer", "nag", "adadelta"), ("nms_threshold", "0", "(0, 1]"),
                            ("lr_scheduler_factor", "1", "(0, 1)"), ("num_classes", "0", ">= 1")]:
        with pytest.raises(ClientError, match=name) as e:
            hp(**{name: bad})
        assert text in str(e.value)
    with pytest.raises(ClientError, match="'num_layers' was unexpected"):
        hp(num_layers=50)
    assert hp(_tuning_objective_metric="validation:mAP")["epochs"] == 30


@pytest.mark.parametrize("base", ssd.BASE_NETWORKS)
def test_ssd_outputs_and_default_boxes(base):
    model = OD.build_model(hp(base_network=base))
    out = model(torch.zeros(2, 3, 300, 300))
    assert out.shape == (2, 8732, 4 + 3 + 1)  # SSD300's 8732 default boxes, 3 classes + background
    assert torch.equal(model.anchors, ssd.default_boxes(base, 300, 0.125))
    assert float(model.anchors.min()) >= 0 and float(model.anchors.max()) <= 1
    big = OD.build_model(hp(base_network=base, image_shape=512))  # SSD512: one more feature map
    assert big(torch.zeros(1, 3, 512, 512)).shape[1] == len(big.anchors) > 8732


def test_published_networks_take_torchvision_imagenet_files():
    import torchvision

    vgg = ssd.vgg16_trunk()
    vgg.load_state_dict(torchvision.models.vgg16().features.state_dict())  # same names and shapes
    r50 = ssd.resnet50_trunk()
    state = torchvision.models.resnet50().state_dict()
    r50.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in dict(r50.named_children())})


def test_freeze_layer_pattern_speaks_mxnet_and_raysight_names():
    model = OD.build_model(hp(freeze_layer_pattern="^(conv1_|conv2_).*"))
    frozen = sorted(n for n, p in model.named_parameters() if not p.requires_grad)
    assert frozen == sorted(f"backbone.features.{i}.{k}" for i in (0, 2, 5, 7) for k in ("weight", "bias"))
    r50 = OD.build_model(hp(base_network="resnet-50", freeze_layer_pattern="^(conv0|bn0|stage1_)"))
    frozen = {n for n, p in r50.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in r50.named_parameters()
                      if n.startswith(("backbone.trunk.conv1.", "backbone.trunk.bn1.", "backbone.trunk.layer1."))}
    assert ssd.mxnet_name("resnet-50", "backbone.trunk.layer2.0.downsample.0.weight") == "stage2_unit1_sc_weight"
    assert ssd.mxnet_name("vgg-16", "backbone.extra.0.1.weight") == "conv5_1_weight"
    assert ssd.mxnet_name("vgg-16", "backbone.extra.0.7.3.bias") == "fc7_bias"
    by_own_name = OD.build_model(hp(base_network="resnet-50", freeze_layer_pattern=r"trunk\.layer3"))
    assert any(not p.requires_grad for n, p in by_own_name.named_parameters() if "layer3" in n)
    with pytest.raises(ClientError, match="not a valid regex"):
        _check(hp(freeze_layer_pattern="(conv1"))


def test_frozen_layers_do_not_move_when_trained():
    values = hp(freeze_layer_pattern="^conv1_", optimizer="sgd", learning_rate=0.1)
    model = OD.build_model(values)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = build_optimizer(values, [p for p in model.parameters() if p.requires_grad], OD.weight_decay_optimizers)
    labels = torch.tensor([[[0, 0.1, 0.1, 0.5, 0.5], [-1, -1, -1, -1, -1]]], dtype=torch.float32)
    loss, _ = OD.criterion(values, {}, model)(model(torch.randn(1, 3, 300, 300)), {"label": labels})
    loss.backward()
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "backbone.features.0.weight" not in moved and "backbone.features.2.bias" not in moved
    assert "backbone.features.5.weight" in moved and "head.classification_head.module_list.0.weight" in moved


def test_weight_decay_applies_to_sgd_and_rmsprop_only():
    p = [torch.nn.Parameter(torch.zeros(1))]
    decays = {o: build_optimizer(hp(optimizer=o), p, OD.weight_decay_optimizers).param_groups[0]["weight_decay"]
              for o in ("sgd", "adam", "rmsprop", "adadelta")}
    assert decays == {"sgd": 0.0005, "adam": 0.0, "rmsprop": 0.0005, "adadelta": 0.0}


def test_pretrained_backbone_from_a_local_file(tmp_path, monkeypatch):
    import torchvision

    values = hp(base_network="resnet-50", use_pretrained_model=1, **{WIDTH: 1})
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("RAYSIGHT_PRETRAINED_WEIGHTS", raising=False)
    with pytest.raises(ClientError, match="no ImageNet weights for resnet50; looked in .*resnet50-"):
        OD.pretrained_state(values)
    torch.manual_seed(3)
    made = torchvision.models.resnet50().state_dict()
    torch.save(made, tmp_path / "resnet50.pth")
    monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", str(tmp_path))
    state = OD.pretrained_state(values)
    assert torch.equal(state["backbone.trunk.layer2.1.conv2.weight"], made["layer2.1.conv2.weight"])
    assert torch.equal(state["backbone.trunk.bn1.running_mean"], made["bn1.running_mean"])
    with pytest.raises(ClientError, match=f"needs {WIDTH}=1"):
        _check(hp(use_pretrained_model=1))


def test_pretrained_vgg16_trunk_from_an_s3_folder(s3, monkeypatch):
    """The VGG-16 branch of pretrained_state, its weights read from an s3:// folder
    RAYSIGHT_PRETRAINED_WEIGHTS (torchvision's `features.*` names; only those are used)."""
    import io

    from tests.conftest import BUCKET

    torch.manual_seed(5)
    made = {f"features.{k}": v for k, v in ssd.vgg16_trunk().state_dict().items()}
    buf = io.BytesIO()
    torch.save(made, buf)
    s3.put_object(Bucket=BUCKET, Key="weights/vgg16.pth", Body=buf.getvalue())
    monkeypatch.setenv("RAYSIGHT_PRETRAINED_WEIGHTS", f"s3://{BUCKET}/weights")
    state = OD.pretrained_state(hp(base_network="vgg-16", use_pretrained_model=1, **{WIDTH: 1}))
    convs = [k for k in made if k.endswith("weight") and made[k].dim() == 4]
    for key in (convs[0], convs[-1]):
        [ours] = [k for k, v in state.items() if v.shape == made[key].shape and torch.equal(v, made[key])]
        assert ours.startswith("backbone."), ours


def _check(values):
    from tests.conftest import parse_job

    job = parse_job({"TrainingJobName": "x", "AlgorithmSpecification": {"AlgorithmName": "object-detection",
                              "TrainingInputMode": "Pipe"}, "HyperParameters": {},
                              "InputDataConfig": [{"ChannelName": c, "ContentType": "application/x-recordio",
                                                   "DataSource": {"S3DataSource": {"S3Uri": f"/tmp/{c}"}}}
                                                  for c in ("train", "validation")],
                              "OutputDataConfig": {"S3OutputPath": "/tmp/out"}})
    problems = OD.check(values, job)
    if problems:
        raise ClientError(problems)


def test_augmentation_keeps_boxes_on_the_object():
    """A white square on black: after any augmentation the box still frames white pixels."""
    image = Image.new("RGB", (200, 160))
    ImageDraw.Draw(image).rectangle((50, 40, 129, 99), fill=(255, 255, 255))
    boxes = np.array([[2, 50 / 200, 40 / 160, 130 / 200, 100 / 160]], dtype=np.float32)
    torch.manual_seed(0)
    kept = 0
    for _ in range(40):
        pixels, out = augment(image, boxes, 300, training=True)
        assert pixels.shape == (300, 300, 3) and pixels.dtype == np.uint8
        assert out.shape[1] == 5 and np.all((out[:, 1:] >= 0) & (out[:, 1:] <= 1))
        if len(out):
            kept += 1
            c, x0, y0, x1, y1 = out[0]
            assert c == 2 and x1 > x0 and y1 > y0
            gray = pixels.astype(float).mean(axis=2)
            inside = gray[int(y0 * 300) + 2: int(y1 * 300) - 2, int(x0 * 300) + 2: int(x1 * 300) - 2]
            outside = np.ones_like(gray, dtype=bool)
            outside[int(y0 * 300) - 2: int(y1 * 300) + 2, int(x0 * 300) - 2: int(x1 * 300) + 2] = False
            assert inside.mean() > gray[outside].mean() + 40
    assert kept >= 30  # crops may cut the object away now and then, not usually
    pixels, out = augment(image, boxes, 300, training=False)  # validation: resize only
    assert np.allclose(out, boxes, atol=1e-6)


def test_loss_prefers_the_right_answer():
    values = hp()
    anchors = ssd.default_boxes("vgg-16", 300, 0.125)
    labels = torch.tensor([[[1, 0.2, 0.2, 0.6, 0.7]]])
    from torchvision.models.detection import _utils as det_utils
    from torchvision.ops import box_iou

    matched = det_utils.SSDMatcher(0.5)(box_iou(labels[0, :, 1:], anchors))
    perfect = torch.zeros(1, len(anchors), 8)
    perfect[0, :, 4] = 10.0  # background everywhere ...
    fg = matched >= 0
    perfect[0, fg, 4], perfect[0, fg, 6] = 0.0, 10.0  # ... but class 1 on the matched anchors
    perfect[0, fg, :4] = det_utils.BoxCoder(ssd.BOX_WEIGHTS).encode_single(labels[0, matched[fg], 1:], anchors[fg])
    ce, l1 = ssd.multibox_loss(perfect, labels, anchors)
    assert float(ce) < 1e-3 and float(l1) < 1e-6
    wrong = perfect.clone()
    wrong[0, fg, 6], wrong[0, fg, 5] = 0.0, 10.0
    assert float(ssd.multibox_loss(wrong, labels, anchors)[0]) > 5
    rows = ssd.detect(perfect, anchors, values["nms_threshold"])[0]
    assert rows[0, 0] == 1 and rows[0, 1] > 0.99  # NMS leaves one box per object
    assert torch.allclose(rows[0, 2:], labels[0, 0, 1:], atol=1e-4)
    assert (rows[:, 1] > 0.5).sum() == 1



def test_channel_sets_are_checked_before_training():
    from tests.conftest import parse_job

    def job(content_type, names, **source):
        return parse_job({
            "TrainingJobName": "x", "AlgorithmSpecification": {"AlgorithmName": "object-detection",
                                                               "TrainingInputMode": "File"},
            "HyperParameters": {}, "OutputDataConfig": {"S3OutputPath": "/tmp/out"},
            "InputDataConfig": [{"ChannelName": c, "ContentType": content_type,
                                 "DataSource": {"S3DataSource": {"S3Uri": f"/tmp/{c}", **source}}} for c in names]})

    assert OD.check(hp(), job("image/jpeg", ["train", "validation", "train_annotation"])) == [
        "content type 'image/jpeg' needs channels train, validation, train_annotation, validation_annotation; "
        "missing validation_annotation"]
    assert OD.check(hp(), job("image/png", ["train", "validation", "train_annotation", "validation_annotation"])) == []
    assert "'bounding-box' attribute" in OD.check(hp(), job("application/x-recordio", ["train", "validation"],
                                                            S3DataType="AugmentedManifestFile",
                                                            AttributeNames=["source-ref"]))[0]
    assert "content type 'text/csv' names no input format raysight reads" in OD.check(hp(), job("text/csv", ["train", "validation"]))[0]
    assert OD.check(hp(), job("application/x-recordio", ["train"])) == [
        "channel 'validation' is required (got: train)"]


def test_inspect_summarises_detection_records(tmp_path):
    from raysight import inspection as inspect
    from raysight.sample_data import shapes

    shapes.write(str(tmp_path), train=12, validation=2, size=64, seed=3, formats=("recordio",))
    summary = inspect.summarize(str(tmp_path / "recordio" / "train"))
    assert summary["records"] == 12 and summary["problems"] == []
    assert set(summary["labels"]) <= {"class 0", "class 1", "class 2"}
    assert sum(int(k) * v for k, v in summary["objects_per_image"].items()) == sum(summary["labels"].values())
    assert sum(summary["objects_per_image"].values()) == 12
    assert inspect.detection_classes([3.0]) is None and inspect.detection_classes([1, 0, 1, 0, 0, 1, 1]) is None
    assert inspect.detection_classes([2, 5, 1, 0.1, 0.1, 0.5, 0.5, 0, 0.2, 0.2, 0.4, 0.4]) == [1, 0]
