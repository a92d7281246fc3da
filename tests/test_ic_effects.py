"""Each image-classification hyperparameter's observable effect."""
import colorsys
import json
import re
import tarfile

import numpy as np
import pytest
import torch

from raysight import algorithms, images
from raysight.algorithms.image_classification import AccuracyMeter, Decode, positive_weights
from raysight.hyperparams import parse_hyperparameters
from raysight.train.loop import Progress, steps_per_epoch
from raysight.train.optim import build_optimizer, lr_multiplier
from tests.conftest import run_cli, tiny_request, write_json

IC = algorithms.get("image-classification")


def hp(**values):
    return parse_hyperparameters(IC.hyperparameters, {"num_classes": "4", "num_training_samples": "1000",
                                                      **{k: str(v) for k, v in values.items()}})


@pytest.mark.parametrize("name,cls,check", [
    ("sgd", torch.optim.SGD, lambda g: g["momentum"] == 0.8 and g["weight_decay"] == 0.01 and not g["nesterov"]),
    ("nag", torch.optim.SGD, lambda g: g["nesterov"] and g["momentum"] == 0.8),
    ("adam", torch.optim.Adam, lambda g: g["betas"] == (0.7, 0.95) and g["eps"] == 1e-6),
    ("rmsprop", torch.optim.RMSprop, lambda g: g["alpha"] == 0.85 and g["eps"] == 1e-6),
])
def test_optimizer_and_its_settings(name, cls, check):
    values = hp(optimizer=name, learning_rate=0.02, momentum=0.8, weight_decay=0.01, beta_1=0.7, beta_2=0.95,
                eps=1e-6, gamma=0.85)
    opt = build_optimizer(values, [torch.nn.Parameter(torch.zeros(2))])
    assert type(opt) is cls and opt.param_groups[0]["lr"] == 0.02
    assert check(opt.param_groups[0])


def test_lr_decays_at_sagemakers_step_points():
    values = hp(lr_scheduler_step="2, 4", lr_scheduler_factor=0.5, mini_batch_size=32)
    spe = steps_per_epoch(values, num_hosts=2)  # ceil(floor(1000 / 2) / 32) = 16
    assert spe == 16
    assert [lr_multiplier(values, s, spe) for s in (0, 31, 32, 63, 64, 500)] == [1, 1, 0.5, 0.5, 0.25, 0.25]
    assert lr_multiplier(hp(), 10_000, spe) == 1  # no steps: constant


@pytest.mark.parametrize("dh,ds,dl", [(36, -50, 20), (-36, 50, -50), (-3.5, 7.25, 0), (0, -50, 50)])
def test_hls_jitter_matches_colorsys(dh, ds, dl):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 17, 3), dtype=np.uint8)
    out = images.jitter_hls(rgb, dh, ds, dl)
    for (r, g, b), got in zip(rgb.reshape(-1, 3), out.reshape(-1, 3)):
        h, light, s = colorsys.rgb_to_hls(r / 255, g / 255, b / 255)
        want = colorsys.hls_to_rgb((h + dh / 180) % 1, min(1, max(0, light + dl / 255)), min(1, max(0, s + ds / 255)))
        assert np.allclose(got, np.array(want) * 255, atol=1.01)
    assert np.array_equal(images.jitter_hls(rgb, 0, 0, 0), rgb) or np.abs(
        images.jitter_hls(rgb, 0, 0, 0).astype(int) - rgb).max() <= 1


def _batch(n=8, size=40, seed=0):
    import io

    from PIL import Image

    rng = np.random.default_rng(seed)
    blobs = []
    for _ in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (size, size + 10, 3), dtype=np.uint8)).save(buf, "PNG")
        blobs.append(buf.getvalue())
    return blobs


@pytest.mark.parametrize("aug", [None, "crop", "crop_color", "crop_color_transform"])
def test_augmentation_output_shapes_and_randomness(tmp_path, aug):
    blobs = _batch()
    uris = []
    for i, b in enumerate(blobs):
        (tmp_path / f"{i}.png").write_bytes(b)
        uris.append(str(tmp_path / f"{i}.png"))
    values = hp(image_shape="3,24,24", resize=32, **({"augmentation_type": aug} if aug else {}))
    decode = Decode(values, training=True)
    batch = {"uri": np.array(uris), "label": [[1.0]] * len(uris), "id": np.arange(len(uris))}
    a, b = decode(batch)["image"], decode(batch)["image"]
    assert a.shape == (8, 24, 24, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) == (aug is None)  # no augmentation: the same center crop every time
    if aug == "crop":  # crop + flip only: every output pixel comes from the resized image
        resized = np.asarray(images.resize_shorter(images.decode_rgb(blobs[0]), 32))
        found = {tuple(p) for p in resized.reshape(-1, 3)}
        assert all(tuple(p) in found for p in a[0].reshape(-1, 3))


def measured_affine(out):
    """(rotation in degrees, shear ratio, aspect ratio) of random_affine's output, recovered
    from where the red, green and blue squares of `affine_target` landed: the linear map is
    R(angle) @ [[1, -shear], [0, 1]] @ diag(sqrt(r), 1/sqrt(r)) (torchvision's affine, after
    the aspect resize), whose first column gives the angle and second the shear."""
    pixels = np.asarray(out).astype(float)
    centres = []
    for ch in range(3):
        others = [c for c in range(3) if c != ch]
        mask = (pixels[..., ch] > 60) & (pixels[..., ch] > 2 * pixels[..., others].max(axis=-1))
        ys, xs = np.nonzero(mask)
        centres.append(np.array([xs.mean(), ys.mean()]))
    first, second = (centres[1] - centres[0]) / 50, (centres[2] - centres[0]) / 50
    angle = np.arctan2(first[1], first[0])
    back = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
    x, y = back @ second
    return np.degrees(angle), -x / y, np.hypot(*first) / y


def affine_target():
    image = np.zeros((200, 200, 3), np.uint8)
    for ch, (cx, cy) in enumerate([(100, 100), (150, 100), (100, 150)]):
        image[cy - 3:cy + 4, cx - 3:cx + 4, ch] = 255
    return image


def test_affine_rotates_shears_and_stretches_within_mxnets_ranges():
    """crop_color_transform's affine: rotation within ±10°, shear within ±0.1, aspect in
    [0.75, 1.25], each measured on the output image, and each really drawn (not ~0)."""
    rng = np.random.default_rng(0)
    measured = np.array([measured_affine(images.random_affine(affine_target(), rng)) for _ in range(40)])
    angles, shears, aspects = measured.T
    assert np.abs(angles).max() <= 10.5 and np.abs(angles).max() > 6
    assert np.abs(shears).max() <= 0.11 and np.abs(shears).max() > 0.06
    assert aspects.min() >= 0.73 and aspects.max() <= 1.27 and aspects.max() - aspects.min() > 0.3
    assert (angles > 0).any() and (angles < 0).any() and (shears > 0).any() and (shears < 0).any()


def test_weighted_loss_weights_rare_classes_up():
    labels = [[1, 0, 1], [1, 0, 0], [1, 1, 0], [1, 0, 0]]
    assert positive_weights(labels) == [0.0, 3.0, 3.0]
    values = hp(multi_label=1, use_weighted_loss=1, num_classes=3)
    state = IC.runtime_state(values, [{"label": row} for row in labels], [])
    assert state == {"pos_weight": positive_weights(labels)}
    logits, target = torch.zeros(1, 3), torch.tensor([[1.0, 1.0, 0.0]])
    plain, _ = IC.criterion(hp(multi_label=1, num_classes=3), {}, None)(logits, {"label": target})
    weighted, _ = IC.criterion(values, state, None)(logits, {"label": target})
    assert weighted > plain


def test_top_k_and_multi_label_accuracy():
    meter = AccuracyMeter("validation", multi_label=False, top_k=2)
    outputs = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]])
    meter.update(outputs, {"label": torch.tensor([1, 1, 0])})
    m = meter.compute()
    assert m == {"validation:accuracy": pytest.approx(1 / 3), "validation:top_k_accuracy_2": pytest.approx(2 / 3)}
    lines = IC.log_epoch(3, {"train:accuracy": 0.5, **m}, 1.0, hp())
    assert "Epoch[3] Validation-top_k_accuracy_2=0.666667" in lines
    multi = AccuracyMeter("train", multi_label=True, top_k=None)
    multi.update(torch.tensor([[2.0, -1.0, 3.0]]), {"label": torch.tensor([[1.0, 1.0, 1.0]])})
    assert multi.compute()["train:accuracy"] == pytest.approx(2 / 3)  # averaged over classes


def test_early_stopping_rule():
    rule = Progress(hp(early_stopping="True", early_stopping_min_epochs=3, early_stopping_patience=2,
                       early_stopping_tolerance=0.1))
    stops = []
    for epoch, score in enumerate([0.5, 0.6, 0.62, 0.64, 0.65, 0.9]):
        rule.update(score)
        stops.append(rule.should_stop(epoch))
    # 0.62 and 0.64 improve by < 10% on 0.6: patience 2 runs out at epoch 3
    assert stops == [False, False, False, True, True, False]
    assert rule.best == 0.9
    assert not Progress(hp()).should_stop(100)  # off by default


@pytest.mark.slow
def test_checkpoint_frequency_and_top_k_in_a_real_job(ray_cluster, digits_small, tmp_path):
    root, counts = digits_small
    request = tiny_request(root, str(tmp_path), "freq", counts, epochs="3", checkpoint_frequency="1", top_k="3")
    proc = run_cli("train", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 0, proc.stderr[-2000:]
    with tarfile.open(tmp_path / "freq" / "output" / "model.tar.gz") as tar:
        params = sorted(n for n in tar.getnames() if n.endswith(".params"))
        meta = json.load(tar.extractfile("raysight.json"))
    assert params == [f"image-classification-{e:04d}.params" for e in (1, 2, 3)]
    assert meta["params"] in params  # the served one is the best epoch's
    assert re.search(r"Epoch\[2\] Validation-top_k_accuracy_3=[0-9.]+", proc.stdout + proc.stderr)
    with open(tmp_path / "freq" / "output" / "job.json") as f:
        names = {m["MetricName"] for m in json.load(f)["FinalMetricDataList"]}
    assert "validation:top_k_accuracy_3" in names
