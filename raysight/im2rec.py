"""`raysight im2rec`: MXNet's tools/im2rec.py, same arguments and output files.

`--list` walks ROOT and writes PREFIX.lst (or PREFIX_train/_val/_test.lst);
without it, every PREFIX*.lst becomes a .rec + .idx pair that MXNet reads.
"""
from __future__ import annotations

import glob
import io
import os
import random
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from raysight.formats import recordio
from raysight.formats.lst import ListEntry, format_lst, parse_lst

EXTS = (".jpeg", ".jpg", ".png")


def list_images(root: str, recursive: bool, exts=EXTS):
    """(index, relative path, label) like im2rec.list_image: with --recursive each
    sub-folder is a class, numbered in sorted walk order; else every label is 0."""
    i = 0
    if recursive:
        labels: dict[str, int] = {}
        for path, dirs, files in os.walk(root, followlinks=True):
            dirs.sort()
            for fname in sorted(files):
                if os.path.splitext(fname)[1].lower() in exts:
                    folder = os.path.relpath(path, root)
                    labels.setdefault(folder, len(labels))
                    yield i, os.path.relpath(os.path.join(path, fname), root).replace(os.sep, "/"), labels[folder]
                    i += 1
    else:
        for fname in sorted(os.listdir(root)):
            if os.path.isfile(os.path.join(root, fname)) and os.path.splitext(fname)[1].lower() in exts:
                yield i, fname, 0
                i += 1


def make_lists(prefix: str, root: str, recursive: bool, train_ratio: float = 1.0, test_ratio: float = 0.0,
               shuffle: bool = True, seed: int = 100) -> list[str]:
    items = list(list_images(root, recursive))
    if shuffle:
        random.Random(seed).shuffle(items)
    n = len(items)
    n_test = int(n * test_ratio)
    n_train = int(n * train_ratio)
    if train_ratio == 1.0 and test_ratio == 0.0:
        parts = {prefix + ".lst": items}
    else:
        parts = {prefix + "_test.lst": items[:n_test], prefix + "_train.lst": items[n_test:n_test + n_train],
                 prefix + "_val.lst": items[n_test + n_train:]}
    written = []
    for path, chunk in parts.items():
        if not chunk and path.endswith("_val.lst"):
            continue
        with open(path, "w") as f:
            f.write(format_lst(ListEntry(i, (float(label),), rel) for i, rel, label in chunk))
        written.append(path)
    return written


def encode_image(path: str, resize: int, quality: int, encoding: str, pass_through: bool) -> bytes:
    if pass_through:
        with open(path, "rb") as f:
            return f.read()
    image = Image.open(path)
    image = image.convert("RGB")
    if resize:
        w, h = image.size
        scale = resize / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.BILINEAR)
    buf = io.BytesIO()
    if encoding == ".png":
        image.save(buf, format="PNG", compress_level=min(9, max(0, quality)))
    else:
        image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def pack_list(lst_path: str, root: str, pack_label: bool, resize: int = 0, quality: int = 95,
              num_thread: int = 1, encoding: str = ".jpg", pass_through: bool = False) -> tuple[str, int]:
    """Write lst_path's .rec and .idx; return (rec path, record count)."""
    with open(lst_path) as f:
        entries = parse_lst(f.read(), lst_path)
    base = os.path.splitext(lst_path)[0]

    def payload(e: ListEntry) -> bytes:
        blob = encode_image(os.path.join(root, e.path), resize, quality, encoding, pass_through)
        label = list(e.labels) if pack_label and len(e.labels) > 1 else e.labels[0]
        return recordio.pack_image(label, blob, id=e.index)

    with ThreadPoolExecutor(max(1, num_thread)) as pool:
        payloads = pool.map(payload, entries)  # map keeps list order, as im2rec's writer does
        with open(base + ".rec.partial", "wb") as rec:
            offsets = recordio.write_records(rec, payloads)
    with open(base + ".idx.partial", "w") as idx:
        idx.write(recordio.format_idx(zip((e.index for e in entries), offsets)))
    os.replace(base + ".rec.partial", base + ".rec")
    os.replace(base + ".idx.partial", base + ".idx")
    return base + ".rec", len(entries)


def run(args) -> int:
    if args.list:
        for path in make_lists(args.prefix, args.root, args.recursive, args.train_ratio, args.test_ratio,
                               shuffle=not args.no_shuffle):
            print(f"wrote {path}")
        return 0
    lists = [args.prefix] if args.prefix.endswith(".lst") else sorted(glob.glob(args.prefix + "*.lst"))
    if not lists:
        print(f"no .lst files match {args.prefix}*.lst; run with --list first")
        return 2
    for lst in lists:
        rec, n = pack_list(lst, args.root, args.pack_label, args.resize, args.quality, args.num_thread,
                           args.encoding, args.pass_through)
        print(f"wrote {rec} and its .idx: {n} records")
    return 0


def add_arguments(p) -> None:
    p.add_argument("prefix", help="prefix of the .lst/.rec/.idx files (or a .lst file)")
    p.add_argument("root", help="folder holding the images")
    p.add_argument("--list", action="store_true", help="make .lst files instead of .rec")
    p.add_argument("--recursive", action="store_true", help="each sub-folder is a class")
    p.add_argument("--no-shuffle", action="store_true", help="keep walk order in the .lst")
    p.add_argument("--train-ratio", type=float, default=1.0)
    p.add_argument("--test-ratio", type=float, default=0.0)
    p.add_argument("--pack-label", action="store_true", help="store every label column (multi-label)")
    p.add_argument("--resize", type=int, default=0, help="rescale the shorter side to N pixels")
    p.add_argument("--quality", type=int, default=95, help="JPEG quality (PNG: compression level)")
    p.add_argument("--encoding", choices=(".jpg", ".png"), default=".jpg")
    p.add_argument("--pass-through", action="store_true", help="store the image files' bytes unchanged")
    p.add_argument("--num-thread", type=int, default=1)
