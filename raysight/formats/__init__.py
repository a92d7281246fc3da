"""Pure codecs for SageMaker's input formats: bytes in, records out, no Ray."""
from __future__ import annotations

# Content types of an images channel (and of an inference request), and of RecordIO.
IMAGE_TYPES = ("image/jpeg", "image/png", "application/x-image")
RECORDIO = "application/x-recordio"


def class_id_problem(ids, where: str, num_classes: int) -> str | None:
    """The one message for class ids outside [0, num_classes), for every format."""
    k = num_classes
    bad = [int(c) if float(c).is_integer() else float(c) for c in ids if not float(c).is_integer() or not 0 <= c < k]
    if not bad:
        return None
    if len(ids) == 1:
        return f"{where}: class id {bad[0]} must be an integer in [0, {k - 1}] (num_classes={k})"
    return f"{where}: class ids {bad} must be integers in [0, {k - 1}] (num_classes={k})"
