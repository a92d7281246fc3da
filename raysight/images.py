"""Image decoding shared by training data and serving."""
from __future__ import annotations

import io
import math
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


class UnsupportedImage(BadImage):
    """A decodable image in a format the caller does not take (e.g. GIF where JPEG/PNG are asked for)."""


def cv2():
    """OpenCV, limited to one thread: decoding runs in one-CPU Ray tasks, and OpenCV's own
    thread pool would oversubscribe the cores Ray handed out."""
    import cv2 as module

    if module.getNumThreads() != 1:
        module.setNumThreads(1)
    return module


def decode_rgb(data: bytes, source: str = "image", draft: int | None = None,
               formats: tuple[str, ...] | None = None) -> Image.Image:
    """Decode JPEG/PNG bytes into RGB; grayscale, palette, RGBA, CMYK and 16-bit images
    are converted (SageMaker needs 3 channels); anything undecodable raises BadImage. An
    image whose header declares more than PIL's MAX_IMAGE_PIXELS is refused from the
    header alone, before a pixel is decoded (a decompression bomb).

    `draft`: the caller needs only a shorter side of this many pixels, so a JPEG is decoded
    at the smallest DCT scale (1/2, 1/4, 1/8) that still gives at least that (libjpeg-turbo's
    scaled decode, through PIL's `draft`). `image.info["full_size"]` keeps the size the
    header declares, so callers can size their output as a full decode would.

    `formats`: PIL format names taken (e.g. ("JPEG", "PNG")); others raise UnsupportedImage
    from the header, before any pixel is decoded."""
    if not data:
        raise BadImage(f"{source}: cannot decode image (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))  # reads the header only
        full_size = image.size
        kind = "JPEG" if image.format == "MPO" else image.format  # MPO: a camera's multi-picture JPEG
        if formats and kind not in formats:
            raise UnsupportedImage(f"{source}: {kind} images are not accepted; send {' or '.join(formats)}")
        if limit and full_size[0] * full_size[1] > limit:
            raise Image.DecompressionBombError(limit)
        if draft and image.format == "JPEG" and min(full_size) >= 2 * draft:
            image.draft(None, (draft, draft))
        image.load()
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage(f"{source}: image header declares more than {limit} pixels (a decompression bomb); "
                       "not decoded") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise BadImage(f"{source}: cannot decode image ({exc})") from None
    if image.mode != "RGB":
        image = image.convert("RGB")
    image.info["full_size"] = full_size
    return image


def shorter_side_size(size: tuple[int, int], shorter: int) -> tuple[int, int]:
    """(width, height) with the shorter side `shorter` and the aspect ratio of `size`."""
    w, h = size
    if w <= h:
        return shorter, max(1, round(h * shorter / w))
    return max(1, round(w * shorter / h)), shorter


def decode_scale(full: tuple[int, int], decoded: tuple[int, int]) -> int:
    """The DCT scale (1, 2, 4 or 8) that decoded a full (width, height) JPEG into `decoded`:
    libjpeg rounds a scaled size up."""
    for s in (1, 2, 4, 8):
        if (-(-full[0] // s), -(-full[1] // s)) == tuple(decoded):
            return s
    raise ValueError(f"{decoded} is no DCT scale of {full}")


def resize(pixels: np.ndarray, size: tuple[int, int], extent: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 HxWx3 → (width, height), bilinear, as MXNet's ImageRecordIter resizes.
    `extent`: the full image's (width, height) when `pixels` is a reduced-scale decode of
    it (each pixel then covers an s x s block, the last ones clipped); the output samples
    the same points of the full image as a full decode would. A downscale of 2x or more
    first averages whole blocks (_box_reduce), so the bilinear step does not alias."""
    cv = cv2()
    h, w = pixels.shape[:2]
    full_w, full_h = extent or (w, h)
    if (w, h) == tuple(size) == (full_w, full_h):
        return pixels
    pixels, scale = _box_reduce(pixels, (full_w, full_h), size)
    if pixels.shape[1] * scale == full_w and pixels.shape[0] * scale == full_h:
        return cv.resize(pixels, tuple(size), interpolation=cv.INTER_LINEAR)
    # clipped blocks: output pixel j's centre is at full-image x = (j + 0.5) * full_w / width,
    # decoded pixel i's at (i + 0.5) * scale; a warp samples exactly there (cv.resize cannot)
    ax, ay = full_w / (size[0] * scale), full_h / (size[1] * scale)
    matrix = np.array([[ax, 0.0, 0.5 * ax - 0.5], [0.0, ay, 0.5 * ay - 0.5]])
    return cv.warpAffine(pixels, matrix, tuple(size), flags=cv.INTER_LINEAR | cv.WARP_INVERSE_MAP,
                         borderMode=cv.BORDER_REPLICATE)


def _box_reduce(pixels: np.ndarray, full: tuple[int, int], size: tuple[int, int]) -> tuple[np.ndarray, int]:
    """(pixels, full-image pixels per pixel) after averaging whole k x k blocks when the
    way from `pixels` down to `size` is 2x or more, so a bilinear step after it skips no
    source pixels; the blocks are OpenCV's INTER_AREA at an integer factor (fast)."""
    scale = decode_scale(full, (pixels.shape[1], pixels.shape[0]))
    k = min(full[0] // (scale * size[0]), full[1] // (scale * size[1]))
    if k < 2:
        return pixels, scale
    h, w = pixels.shape[:2]
    cv = cv2()
    return cv.resize(pixels[: h - h % k, : w - w % k], (w // k, h // k), interpolation=cv.INTER_AREA), scale * k


def resize_shorter(image: Image.Image | np.ndarray, size: int) -> np.ndarray:
    """Rescale so the shorter side is `size`, keeping the aspect ratio. A PIL image
    decoded with `draft` is sized and sampled from its full (header) size, so the output
    is the size a full decode gives, and a random crop from it covers the same regions."""
    if isinstance(image, Image.Image):
        extent = image.info.get("full_size", image.size)
        return resize(np.asarray(image), shorter_side_size(extent, size), extent)
    return resize(image, shorter_side_size((image.shape[1], image.shape[0]), size))


def crop(pixels: np.ndarray, height: int, width: int, rng: np.random.Generator | None) -> np.ndarray:
    """Center crop, or a uniformly random crop when `rng` is given."""
    h, w = pixels.shape[:2]
    if rng is None:
        left, top = (w - width) // 2, (h - height) // 2
    else:
        left, top = int(rng.integers(0, w - width + 1)), int(rng.integers(0, h - height + 1))
    return pixels[top:top + height, left:left + width]


def jitter_hls(rgb: np.ndarray, dh: float, ds: float, dl: float) -> np.ndarray:
    """Add (dh, ds, dl) in OpenCV's HLS scale (hue 0-180, saturation and lightness
    0-255) to a uint8 RGB array, as MXNet's `random_hls` augmenter does; hue wraps round
    the colour circle, saturation and lightness saturate. OpenCV's float32 conversion
    (exact, unlike its uint8 one, which rounds hue to 2 degrees) does the per-pixel work."""
    cv = cv2()
    x = np.multiply(rgb, np.float32(1 / 255), dtype=np.float32)
    hls = cv.cvtColor(x, cv.COLOR_RGB2HLS)  # hue in degrees, lightness and saturation 0-1
    # a hue shift taken mod 360 keeps hue in [0, 720), which HLS2RGB wraps (it does not wrap < 0)
    hls = cv.add(hls, ((dh * 2) % 360, dl / 255, ds / 255, 0))
    hls = cv.min(cv.max(hls, (0, 0, 0, 0)), (720, 1, 1, 0))
    return cv.convertScaleAbs(cv.cvtColor(hls, cv.COLOR_HLS2RGB), alpha=255.0)


def _shift(d: float) -> np.ndarray:
    return np.array([[1.0, 0.0, d], [0.0, 1.0, d], [0.0, 0.0, 1.0]])


def _random_affine(size: tuple[int, int], rng: np.random.Generator, max_rotate=10.0, max_shear=0.1,
                   max_aspect=0.25) -> tuple[np.ndarray, tuple[int, int]]:
    """Rotation ≤ max_rotate degrees, shear ratio ≤ max_shear and aspect-ratio change in
    [1 - max_aspect, 1 + max_aspect] (MXNet's crop_color_transform ranges) about the
    centre of a (width, height) image: the 3x3 map between continuous coordinates (pixel
    i spans [i, i + 1)) and the warped image's size, sqrt(ratio) wider and shorter."""
    ratio = rng.uniform(1 - max_aspect, 1 + max_aspect)
    angle = math.radians(rng.uniform(-max_rotate, max_rotate))
    shear = rng.uniform(-max_shear, max_shear)
    w, h = size
    out_w, out_h = max(1, round(w * math.sqrt(ratio))), max(1, round(h / math.sqrt(ratio)))
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    linear = rotate @ np.array([[1.0, -shear], [0.0, 1.0]]) @ np.diag([out_w / w, out_h / h])
    forward = np.eye(3)
    forward[:2, :2] = linear
    forward[:2, 2] = np.array([out_w, out_h]) / 2 - linear @ (np.array([w, h]) / 2)
    return forward, (out_w, out_h)


def _warp(pixels: np.ndarray, forward: np.ndarray, size: tuple[int, int], fill: int) -> np.ndarray:
    """Bilinear warp by a continuous-coordinate map (OpenCV puts pixel centres at integers)."""
    cv = cv2()
    matrix = _shift(-0.5) @ forward @ _shift(0.5)
    return cv.warpAffine(pixels, matrix[:2], tuple(size), flags=cv.INTER_LINEAR,
                         borderMode=cv.BORDER_CONSTANT, borderValue=(fill, fill, fill))


def random_affine(pixels: np.ndarray, rng: np.random.Generator, fill: int = 255) -> np.ndarray:
    """MXNet's random rotation, shear and aspect change of a whole image (see
    _random_affine); uncovered pixels get MXNet's fill_value (255)."""
    forward, size = _random_affine((pixels.shape[1], pixels.shape[0]), rng)
    return _warp(pixels, forward, size, fill)


def transform_crop(image: Image.Image, resize: int | None, height: int, width: int,
                   rng: np.random.Generator, fill: int = 255) -> np.ndarray:
    """crop_color_transform's geometry as one warp from the decoded image: resize (shorter
    side `resize`), MXNet's random affine, grow to max(height, width) if the affine left
    it smaller, then a uniformly random height x width crop. Only the crop's pixels are
    computed, and they are interpolated once, not at each step."""
    full_w, full_h = image.info.get("full_size", image.size)
    pixels = np.asarray(image)
    target = shorter_side_size((full_w, full_h), resize) if resize else (full_w, full_h)
    pixels, scale = _box_reduce(pixels, (full_w, full_h), target)  # so the warp skips no pixels
    to_target = np.diag([target[0] * scale / full_w, target[1] * scale / full_h, 1.0])
    affine, (out_w, out_h) = _random_affine(target, rng)
    grow = max(1.0, max(height, width) / min(out_w, out_h)) if out_w < width or out_h < height else 1.0
    out_w, out_h = max(width, round(out_w * grow)), max(height, round(out_h * grow))
    left, top = int(rng.integers(0, out_w - width + 1)), int(rng.integers(0, out_h - height + 1))
    crop_at = np.array([[grow, 0.0, -left], [0.0, grow, -top], [0.0, 0.0, 1.0]])
    return _warp(pixels, crop_at @ affine @ to_target, (width, height), fill)
