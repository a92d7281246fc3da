"""Pure codecs for SageMaker's input formats: bytes in, records out, no Ray."""
from __future__ import annotations

# Content types of an inference request (SageMaker's IC and OD endpoints take these three), and of RecordIO.
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
RECORDIO = "application/x-recordio"
# An images channel (and a transform job's input) as SageMaker's built-in image algorithms take it:
# any image/* type, the documented application/x-image, and the spellings AWS's own example
# notebooks use ("Image classification, lst format": application/jpeg; its text: application/x-jpeg).
IMAGE_CHANNEL_TYPES = ("image/*", "application/x-image", "application/jpeg", "application/x-jpeg")


def is_image_type(mime: str) -> bool:
    """Whether a content type (without parameters, lower-cased) names images."""
    return (mime.startswith("image/") and len(mime) > len("image/")) or mime in IMAGE_CHANNEL_TYPES[1:]


def accepted_channel_types() -> str:
    return ", ".join(IMAGE_CHANNEL_TYPES) + f" (images + index files) or {RECORDIO} (RecordIO)"


def class_id_problem(ids, where: str, num_classes: int) -> str | None:
    """The one message for class ids outside [0, num_classes), for every format."""
    k = num_classes
    bad = [int(c) if float(c).is_integer() else float(c) for c in ids if not float(c).is_integer() or not 0 <= c < k]
    if not bad:
        return None
    if len(ids) == 1:
        return f"{where}: class id {bad[0]} must be an integer in [0, {k - 1}] (num_classes={k})"
    return f"{where}: class ids {bad} must be integers in [0, {k - 1}] (num_classes={k})"
