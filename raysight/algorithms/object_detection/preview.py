"""detections.png: what the trained detector finds on a few validation images."""
from __future__ import annotations

from raysight import images, plots


def draw(model, validation, hp, count: int = 8, min_score: float = 0.3) -> tuple[str, bytes]:
    """Validation images as the network sees them, ground truth dashed white, the ten
    best detections scoring >= min_score coloured by class, with score."""
    import torch

    from raysight.models import ssd

    plt = plots.pyplot()
    batch = validation.take_batch(count, batch_format="numpy")  # take() would print Ray Data's tip in every job
    pixels, labels = batch["image"], batch["label"]
    with torch.inference_mode():
        found = ssd.detect(model(images.normalize(torch.from_numpy(pixels))), model.anchors, hp["nms_threshold"])
    size = hp["image_shape"]
    fig, axes = plt.subplots(2, (len(pixels) + 1) // 2, figsize=(3 * ((len(pixels) + 1) // 2), 6.4), squeeze=False)
    colours = plt.get_cmap("tab10")
    for ax, image, label, det in zip(axes.ravel(), pixels, labels, found):
        ax.imshow(image)
        for c, x0, y0, x1, y1 in label[label[:, 0] >= 0]:
            ax.add_patch(plt.Rectangle((x0 * size, y0 * size), (x1 - x0) * size, (y1 - y0) * size,
                                       fill=False, ec="white", ls="--", lw=1))
        for c, score, x0, y0, x1, y1 in det[:10].tolist():  # highest scores first
            if score < min_score:
                break
            ax.add_patch(plt.Rectangle((x0 * size, y0 * size), (x1 - x0) * size, (y1 - y0) * size,
                                       fill=False, ec=colours(int(c) % 10), lw=2))
            ax.text(x0 * size, y0 * size, f"{int(c)}: {score:.2f}", color="white", fontsize=7,
                    bbox={"facecolor": colours(int(c) % 10), "pad": 1, "lw": 0})
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle(f"validation detections (score >= {min_score}); ground truth dashed")
    fig.tight_layout()
    return "detections.png", plots.png(fig, dpi=80)
