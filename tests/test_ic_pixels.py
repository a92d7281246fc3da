"""Image-classification pixels: reduced-scale JPEG decoding against a full decode, and the
distributions of the random crop, flip and colour jitter (MXNet's ranges)."""
import colorsys
import io

import numpy as np
import pytest

from raysight import algorithms, images
from raysight.algorithms.image_classification import Decode
from raysight.hyperparams import parse_hyperparameters
from raysight.sample_data.photos import photo, sources

IC = algorithms.get("image-classification")
# What a reduced-scale decode + resize may differ from a full decode + resize, on photographs
# (benchmarks/README.md): the DCT's own downscale filter against a box + bilinear one.
MEAN_LEVELS, MIN_PSNR = 4.0, 30.0


def hp(**values):
    return parse_hyperparameters(IC.hyperparameters, {"num_classes": "4", "num_training_samples": "100",
                                                      **{k: str(v) for k, v in values.items()}})


def jpeg(width, height, seed=0):
    buf = io.BytesIO()
    photo(np.random.default_rng(seed), width, height, PICTURES).save(buf, "JPEG", quality=90)
    return buf.getvalue()


PICTURES = sources()


def psnr(a, b):
    mse = ((a.astype(float) - b.astype(float)) ** 2).mean()
    return 10 * np.log10(255 ** 2 / max(mse, 1e-9))


@pytest.mark.parametrize("width,height,target", [(1280, 720, 256), (1280, 720, 224), (1280, 720, 300),
                                                 (1279, 719, 256), (800, 513, 256), (2000, 1500, 224)])
def test_reduced_scale_decode_is_within_the_stated_bound_of_a_full_decode(width, height, target):
    blob = jpeg(width, height)
    reduced = images.decode_rgb(blob, draft=target)
    assert min(reduced.size) < min(width, height) and min(reduced.size) >= target  # really decoded smaller
    assert reduced.info["full_size"] == (width, height)
    full = images.resize_shorter(images.decode_rgb(blob), target)
    fast = images.resize_shorter(reduced, target)
    assert fast.shape == full.shape  # the size a full decode gives, so crops cover the same regions
    diff = np.abs(fast.astype(int) - full.astype(int))
    assert diff.mean() <= MEAN_LEVELS and psnr(fast, full) >= MIN_PSNR, (diff.mean(), psnr(fast, full))


def test_reduced_scale_only_when_the_target_is_at_most_half_the_shorter_side():
    blob = jpeg(500, 375)
    assert images.decode_rgb(blob, draft=256).size == (500, 375)  # 375 < 2 x 256: full decode
    assert images.decode_rgb(blob, draft=187).size == (250, 188)  # 1/2 scale, rounded up
    assert images.decode_rgb(blob, draft=90).size == (125, 94)  # 1/4
    png = io.BytesIO()
    images.Image.fromarray(np.zeros((400, 400, 3), np.uint8)).save(png, "PNG")
    assert images.decode_rgb(png.getvalue(), draft=100).size == (400, 400)  # only JPEG has DCT scales


def decode_batch(decode, paths, seed):
    decode.seed = seed
    uris = np.array([str(p) for p in paths])
    return decode({"uri": uris, "label": [[1.0]] * len(uris), "id": np.arange(len(uris))})["image"]


def test_training_decode_crops_the_same_regions_with_reduced_scale_decoding(tmp_path):
    """The same seeded draws give the same crops, flips and jitter whether the JPEG is
    decoded at 1/2 scale (what raysight does) or in full and then resized."""
    blobs = []
    for seed in range(6):
        blobs.append(tmp_path / f"{seed}.jpg")
        blobs[-1].write_bytes(jpeg(1280, 720, seed))
    values = hp(image_shape="3,224,224", resize=256, augmentation_type="crop_color")
    fast = Decode(values, training=True)
    full = Decode(values, training=True)
    full.decode_image = lambda raw, where: images.decode_rgb(raw, where)  # no draft
    a, b = decode_batch(fast, blobs, seed=3), decode_batch(full, blobs, seed=3)
    assert a.shape == b.shape == (6, 224, 224, 3)
    for x, y in zip(a, b):
        assert psnr(x, y) >= MIN_PSNR - 2  # jitter amplifies differences a little
    assert psnr(a[0], decode_batch(fast, blobs, seed=4)[0]) < 20  # another seed: other crops


def coordinates(width=64, height=48):
    """Red = column, green = row: where every output pixel came from."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 4, y * 5, np.full_like(x, 128)], -1).astype(np.uint8)


def test_random_crop_is_uniform_and_flips_half_the_time():
    source = coordinates()
    values = hp(image_shape="3,16,16", augmentation_type="crop")
    decode = Decode(values, training=True)
    rng = np.random.default_rng(0)
    lefts, tops, flips = [], [], 0
    for _ in range(2000):
        out, _ = decode.decode_one(images.Image.fromarray(source), [1.0], "x", rng)
        flipped = out[0, 0, 0] > out[0, -1, 0]
        flips += flipped
        lefts.append(int(out[0, -1 if flipped else 0, 0]) // 4)
        tops.append(int(out[0, 0, 1]) // 5)
    assert 0.45 < flips / 2000 < 0.55
    for offsets, count in ((lefts, 64 - 16 + 1), (tops, 48 - 16 + 1)):
        histogram = np.bincount(offsets, minlength=count)
        assert len(histogram) == count and histogram.min() > 0  # every offset, edges included
        expected = 2000 / count
        chi2 = ((histogram - expected) ** 2 / expected).sum()
        assert chi2 < count + 4 * np.sqrt(2 * count)  # uniform (chi-square, ~4 sigma)


def test_colour_jitter_draws_fill_mxnets_ranges():
    """crop_color on a flat colour: the hue, saturation and lightness shifts recovered with
    colorsys stay inside MXNet's ±36 / ±50 / ±50 and spread across them."""
    r, g, b = colorsys.hls_to_rgb(0.5, 0.5, 0.5)
    flat = np.zeros((20, 20, 3), np.uint8) + np.array([r, g, b]) * 255
    decode = Decode(hp(image_shape="3,8,8", augmentation_type="crop_color"), training=True)
    rng = np.random.default_rng(1)
    shifts = []
    for _ in range(300):
        out, _ = decode.decode_one(images.Image.fromarray(np.round(flat).astype(np.uint8)), [1.0], "x", rng)
        h, light, s = colorsys.rgb_to_hls(*(out[4, 4] / 255))
        shifts.append((((h - 0.5 + 0.5) % 1 - 0.5) * 180, (s - 0.5) * 255, (light - 0.5) * 255))
    shifts = np.array(shifts)
    for column, limit in zip(shifts.T, (36, 50, 50)):
        assert np.abs(column).max() <= limit + 1.5
        assert column.max() > 0.8 * limit and column.min() < -0.8 * limit


@pytest.mark.parametrize("width,height,resize", [(500, 375, 256), (1280, 720, 256), (300, 240, 224)])
def test_transform_crop_is_resize_then_affine_then_crop_in_one_warp(width, height, resize):
    """crop_color_transform's single warp gives what the three steps give one at a time
    (resize, MXNet's affine, random crop), from the same draws: only the crop is computed."""
    blob = jpeg(width, height, seed=5)
    for seed in range(5):
        fused = images.transform_crop(images.decode_rgb(blob, draft=resize), resize, 224, 224,
                                      np.random.default_rng(seed))
        rng = np.random.default_rng(seed)
        steps = images.random_affine(images.resize_shorter(images.decode_rgb(blob), resize), rng)
        if min(steps.shape[:2]) < 224:
            steps = images.resize_shorter(steps, 224)
        steps = images.crop(steps, 224, 224, rng)
        assert fused.shape == steps.shape == (224, 224, 3)
        assert psnr(fused, steps) >= 32, (seed, psnr(fused, steps))  # measured 35-41 dB
        assert psnr(fused[4:, 4:], steps[:-4, :-4]) < 25  # 4 pixels off: 16-20 dB


def test_tiny_jpegs_at_every_dct_scale_keep_their_full_decode_size_and_geometry():
    """Scaled sizes round up (libjpeg), so the last decoded pixel covers a clipped block;
    the resize still gives a full decode's size, sampled at the same places."""
    for width, height, target, scale in ((17, 16, 2, 8), (40, 30, 6, 4), (23, 20, 5, 4), (30, 26, 7, 2),
                                         (61, 47, 3, 8)):
        y, x = np.mgrid[0:height, 0:width]
        ramp = np.stack([x * 255 // width, y * 255 // height, np.full_like(x, 90)], -1).astype(np.uint8)
        buf = io.BytesIO()
        images.Image.fromarray(ramp).save(buf, "JPEG", quality=95)
        reduced = images.decode_rgb(buf.getvalue(), draft=target)
        assert images.decode_scale((width, height), reduced.size) == scale
        fast = images.resize_shorter(reduced, target)
        full = images.resize_shorter(images.decode_rgb(buf.getvalue()), target)
        assert fast.shape == full.shape and fast.shape[:2][::-1] == images.shorter_side_size((width, height), target)
        assert np.abs(fast.astype(int) - full.astype(int)).mean() <= 6, (width, height, target)
