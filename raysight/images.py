"""Image decoding shared by training data and serving."""
from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(pixels):
    """uint8 NHWC tensor → float NCHW with ImageNet mean/std: the same for training and
    serving, for every algorithm (torchvision's convention, so its weights fit)."""
    import torch

    x = pixels.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(IMAGENET_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


class BadImage(ValueError):
    pass


def decode_rgb(data: bytes, source: str = "image") -> Image.Image:
    """Decode JPEG/PNG bytes into RGB; grayscale, palette, RGBA, CMYK and 16-bit images
    are converted (SageMaker needs 3 channels); anything undecodable raises BadImage. An
    image whose header declares more than PIL's MAX_IMAGE_PIXELS is refused from the
    header alone, before a pixel is decoded (a decompression bomb)."""
    if not data:
        raise BadImage(f"{source}: cannot decode image (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
        if limit and image.size[0] * image.size[1] > limit:
            raise Image.DecompressionBombError(limit)
        image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{source}: image header declares more than {limit} pixels (a decompression bomb); "
                       "not decoded") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{source}: cannot decode image ({exc})") from None
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def resize_shorter(image: Image.Image, size: int) -> Image.Image:
    w, h = image.size
    if min(w, h) == size:
        return image
    if w <= h:
        return image.resize((size, max(1, round(h * size / w))), Image.BILINEAR)
    return image.resize((max(1, round(w * size / h)), size), Image.BILINEAR)


def crop(image: Image.Image, height: int, width: int, rng: np.random.Generator | None) -> Image.Image:
    """Center crop, or a uniformly random crop when `rng` is given."""
    w, h = image.size
    if rng is None:
        left, top = (w - width) // 2, (h - height) // 2
    else:
        left, top = int(rng.integers(0, w - width + 1)), int(rng.integers(0, h - height + 1))
    return image.crop((left, top, left + width, top + height))


def jitter_hls(rgb: np.ndarray, dh: float, ds: float, dl: float) -> np.ndarray:
    """Add (dh, ds, dl) in OpenCV's HLS scale (hue 0-180, saturation and lightness
    0-255) to a uint8 RGB array, as MXNet's `random_hls` augmenter does."""
    x = rgb.astype(np.float32) / 255.0
    r, g, b = x[..., 0], x[..., 1], x[..., 2]
    mx, mn = x.max(-1), x.min(-1)
    light = (mx + mn) / 2
    delta = mx - mn
    denom = np.where(light <= 0.5, mx + mn, 2.0 - mx - mn)
    sat = np.where(delta > 0, delta / np.maximum(denom, 1e-12), 0.0)
    safe = np.maximum(delta, 1e-12)
    hue = np.where(mx == r, (g - b) / safe, np.where(mx == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = np.where(delta > 0, (hue / 6.0) % 1.0, 0.0)
    hue = (hue + dh / 180.0) % 1.0
    sat = np.clip(sat + ds / 255.0, 0, 1)
    light = np.clip(light + dl / 255.0, 0, 1)
    q = np.where(light < 0.5, light * (1 + sat), light + sat - light * sat)
    p = 2 * light - q

    def channel(t):
        t = t % 1.0
        return np.where(t < 1 / 6, p + (q - p) * 6 * t,
               np.where(t < 1 / 2, q,
               np.where(t < 2 / 3, p + (q - p) * (2 / 3 - t) * 6, p)))

    out = np.stack([channel(hue + 1 / 3), channel(hue), channel(hue - 1 / 3)], axis=-1)
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def random_affine(image: Image.Image, rng: np.random.Generator, max_rotate=10.0, max_shear=0.1,
                  max_aspect=0.25) -> Image.Image:
    """Rotation ≤ max_rotate degrees, shear ratio ≤ max_shear and aspect-ratio change in
    [1 - max_aspect, 1 + max_aspect] (MXNet's crop_color_transform ranges)."""
    import math

    from torchvision.transforms.v2 import functional as F

    ratio = rng.uniform(1 - max_aspect, 1 + max_aspect)
    w, h = image.size
    image = image.resize((max(1, round(w * math.sqrt(ratio))), max(1, round(h / math.sqrt(ratio)))), Image.BILINEAR)
    angle = float(rng.uniform(-max_rotate, max_rotate))
    shear = math.degrees(math.atan(rng.uniform(-max_shear, max_shear)))
    return F.affine(image, angle=angle, translate=[0, 0], scale=1.0, shear=[shear, 0.0],
                    interpolation=F.InterpolationMode.BILINEAR)
