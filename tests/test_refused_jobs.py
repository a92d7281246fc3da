"""Every data fault a job can meet, through `raysight train` on the shared Ray: the job
ends Failed with exactly one `ClientError: <file> <record/line/entry>: <what>` line on the
console (no traceback) that is also job.json's FailureReason, and no model is written.

Faults found while the index is built end the job before any worker starts; faults in
bytes (RecordIO framing, image headers) are met by Ray Data tasks inside the workers
(marked slow: each starts a Train worker group)."""
from __future__ import annotations

import io
import json
import shutil
import struct

import numpy as np
import pytest
from PIL import Image

from raysight.formats import recordio
from raysight.formats.lst import ListEntry, format_lst
from raysight.sample_data import channel, shapes
from tests.conftest import run_cli, tiny_request, write_json
from tests.test_bad_input import png, rec_channel, rec_request
from tests.test_serve import png_header

slow = pytest.mark.slow


def jpeg(size=(8, 8)):
    buf = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def images_job(tmp, name, train_lst=None, train_images=None, repoint=None):
    """4 + 4 PNGs with .lst files (image-classification, File mode); the arguments replace
    the train .lst text, put {file: bytes} among the train images, or repoint channels
    ({name: tmp -> URI})."""
    for split in ("train", "validation"):
        (tmp / split).mkdir()
        (tmp / f"{split}_lst").mkdir()
        for i in range(4):
            (tmp / split / f"{i}.png").write_bytes(png())
        (tmp / f"{split}_lst" / f"{split}.lst").write_text(
            format_lst([ListEntry(i, (float(i),), f"{i}.png") for i in range(4)]))
    for file, blob in (train_images or {}).items():
        (tmp / "train" / file).write_bytes(blob)
    if train_lst is not None:
        (tmp / "train_lst" / "train.lst").write_text(train_lst)
    request = tiny_request(str(tmp), str(tmp / "out"), name, {"train": 4}, epochs="1")
    for ch in request["InputDataConfig"]:
        if ch["ChannelName"] in (repoint or {}):
            ch["DataSource"]["S3DataSource"]["S3Uri"] = str(repoint[ch["ChannelName"]](tmp))
    return write_json(tmp / "request.json", request)


def lst_of(*rows):
    return "".join(rows)


def recordio_job(tmp, name, edit=None, idx=None, payloads=None):
    """A .rec training channel (4 records, or `payloads`), its bytes passed through `edit`,
    an .idx beside it when `idx` maps the record offsets to its text."""
    good = [recordio.pack_image(i % 10, png(), id=i) for i in range(4)]
    validation = rec_channel(tmp, "validation", good)
    train = rec_channel(tmp, "train", payloads if payloads is not None else good, idx=idx)
    if edit is not None:
        rec = train / "data.rec"
        rec.write_bytes(edit(rec.read_bytes(), recordio_offsets(payloads or good)))
    return rec_request(tmp, train, validation, name)


def recordio_offsets(payloads):
    return recordio.write_records(io.BytesIO(), payloads)


def with_length(blob, at, length):
    """The record at byte `at` with its length field replaced (cflag 0)."""
    return blob[:at + 4] + struct.pack("<I", length) + blob[at + 8:]


def manifest_job(tmp, name, train_lines, attributes=("source-ref", "class")):
    (tmp / "images").mkdir()
    for i in range(4):
        (tmp / "images" / f"{i}.png").write_bytes(png())
    good = "".join(json.dumps({"source-ref": f"images/{i}.png", "class": i}) + "\n" for i in range(4))
    (tmp / "train.manifest").write_text(train_lines)
    (tmp / "validation.manifest").write_text(good)
    request = tiny_request(str(tmp), str(tmp / "out"), name, {"train": 4}, epochs="1")
    request["InputDataConfig"] = [
        channel(s, str(tmp / f"{s}.manifest"), "application/x-recordio", S3DataType="AugmentedManifestFile",
                AttributeNames=list(attributes), RecordWrapperType="RecordIO", InputMode="Pipe")
        for s in ("train", "validation")]
    return write_json(tmp / "request.json", request)


def detection_job(tmp, name, annotation=None, image=None):
    """shapes' JSON layout (2 + 2 images of 48 px); `annotation` edits train image 0's
    annotation document, `image` replaces its bytes."""
    root = tmp / "shapes"
    shapes.write(str(root), 2, 2, 48, seed=0, formats=("json",))
    doc_path = root / "json" / "train_annotation" / "00000.json"
    if annotation is not None:
        doc = json.loads(doc_path.read_text())
        doc_path.write_text(annotation(doc) if callable(annotation) else annotation)
    if image is not None:
        (root / "json" / "train" / "00000.jpg").write_bytes(image)
    request = shapes.training_request(str(root), str(tmp / "out"), "json", name=name, counts={"train": 2},
                                      epochs="1", mini_batch_size="2")
    return write_json(tmp / "request.json", request)


def box(doc, **values):
    doc["annotations"][0].update(values)
    return json.dumps(doc)


def empty_dir(tmp):
    (tmp / "nothing").mkdir()
    return tmp / "nothing"


# name -> (build(tmp, name) -> request path, fragments the one ClientError line must hold)
CASES = {
    # RecordIO framing and image records: met by the workers' read tasks
    "rec-bad-magic": (lambda t, n: recordio_job(t, n, edit=lambda b, o: b"not a recordio file at all!!" + b),
                      ["data.rec at byte 0: bad magic"], slow),
    "rec-truncated-header": (lambda t, n: recordio_job(t, n, edit=lambda b, o: b + recordio.MAGIC_BYTES + b"\0"),
                             ["data.rec at byte ", "truncated record header (5 of 8 bytes)"], slow),
    "rec-truncated-payload": (lambda t, n: recordio_job(t, n, edit=lambda b, o: b[:-10]),
                              ["data.rec at byte ", "truncated record (", " bytes)"], slow),
    "rec-length-past-end": (lambda t, n: recordio_job(t, n, edit=lambda b, o: with_length(b, o[3], 10**6)),
                            ["data.rec at byte ", "of 1000000 bytes"], slow),
    "rec-zero-length": (lambda t, n: recordio_job(t, n, payloads=[recordio.pack_image(1, png()), b""]),
                        ["data.rec record at byte ", "record of 0 bytes is shorter than the 24-byte image header"],
                        slow),
    "rec-label-count-vs-flag": (lambda t, n: recordio_job(t, n, payloads=[struct.pack(recordio.IR_FORMAT, 5, 0, 0, 0)
                                                                          + struct.pack("<2f", 1, 2)]),
                                ["data.rec record at byte 0", "header promises 5 labels but the record ends first"],
                                slow),
    "idx-past-end": (lambda t, n: recordio_job(t, n, idx=lambda o: recordio.format_idx([(0, o[0]), (1, 10**6)])),
                     ["data.idx: key 1 offset 1000000 does not point at a record"], None),
    "idx-out-of-order": (lambda t, n: recordio_job(t, n, idx=lambda o: recordio.format_idx(
        [(0, o[0]), (1, o[2]), (2, o[1])])), ["data.idx: key 2 offset", "is not after the previous entry's"], None),
    "idx-inside-a-record": (lambda t, n: recordio_job(t, n, idx=lambda o: recordio.format_idx(
        [(0, o[0]), (1, o[1] + 4)])), ["data.idx: key 1 offset", "does not point at a record"], None),
    "idx-not-numbers": (lambda t, n: recordio_job(t, n, idx=lambda o: "0\t0\nkey\toffset\n"),
                        ["data.idx line 2: expected 'key<TAB>offset'"], None),
    "rec-channel-without-rec": (lambda t, n: rec_request(t, empty_dir(t), rec_channel(
        t, "validation", [recordio.pack_image(0, png())]), n), ["channel 'train'", "holds no .rec files"], None),
    # .lst files and the images they name
    "lst-short-row": (lambda t, n: images_job(t, n, lst_of("0\t0\t0.png\n", "1\t1.png\n")),
                      ["train.lst line 2: needs an index, at least one label and a path"], None),
    "lst-index-not-a-number": (lambda t, n: images_job(t, n, lst_of("x\t0\t0.png\n")),
                               ["train.lst line 1: index 'x' is not a number"], None),
    "lst-label-not-a-number": (lambda t, n: images_job(t, n, lst_of("0\tcat\t0.png\n")),
                               ["train.lst line 1:", "'cat'"], None),
    "lst-class-out-of-range": (lambda t, n: images_job(t, n, lst_of("0\t12\t0.png\n")),
                               ["train.lst entry 0: class id 12 must be an integer in [0, 9]"], None),
    "lst-image-missing": (lambda t, n: images_job(t, n, lst_of("0\t1\tnope.png\n")),
                          ["train.lst entry 0: image 'nope.png' not found under"], None),
    "lst-channel-without-lst": (lambda t, n: images_job(t, n, repoint={"train_lst": lambda t: t / "train"}),
                                ["channel 'train_lst'", "holds no .lst files"], None),
    "image-channel-is-a-file": (lambda t, n: images_job(t, n, repoint={"train": lambda t: t / "train" / "0.png"}),
                                ["channel 'train'", "0.png) names a file; it must be a prefix"], None),
    "image-channel-empty": (lambda t, n: images_job(t, n, repoint={"train": empty_dir}),
                            ["channel 'train'", "nothing) is empty"], None),
    "image-zero-bytes": (lambda t, n: images_job(t, n, train_images={"0.png": b""}),
                         ["train/0.png: cannot decode image (0 bytes)"], slow),
    "image-truncated-jpeg": (lambda t, n: images_job(t, n, train_images={"0.png": jpeg((64, 64))[:300]}),
                             ["train/0.png: cannot decode image"], slow),
    "image-decompression-bomb": (lambda t, n: images_job(t, n, train_images={"0.png": png_header(40000, 40000)}),
                                 ["train/0.png: image header declares more than"], slow),
    # augmented manifests
    "manifest-missing-source-ref": (lambda t, n: manifest_job(t, n, '{"class": 1}\n'),
                                    ["train.manifest line 1: missing attribute 'source-ref'"], None),
    "manifest-wrong-attribute": (lambda t, n: manifest_job(t, n, '{"source-ref": "images/0.png", "class": 1}\n',
                                                           attributes=("source-ref", "label")),
                                 ["train.manifest line 1: missing attribute 'label'"], None),
    "manifest-line-not-an-object": (lambda t, n: manifest_job(t, n, '[1, 2]\n'),
                                    ["train.manifest line 1: not a JSON object"], None),
    "manifest-line-not-json": (lambda t, n: manifest_job(t, n, 'source-ref=images/0.png\n'),
                               ["train.manifest line 1: not JSON"], None),
    # object detection's JSON annotations
    "annotation-negative-width": (lambda t, n: detection_job(t, n, lambda d: box(d, width=-5)),
                                  ["00000.json annotation 0: box size -5x"], None),
    "annotation-class-out-of-range": (lambda t, n: detection_job(t, n, lambda d: box(d, class_id=7)),
                                      ["00000.json annotation 0: class id 7"], None),
    "annotation-box-outside-image": (lambda t, n: detection_job(t, n, lambda d: box(d, left=40, width=30)),
                                     ["00000.json annotation 0: box (40, ", "lies outside the 48x48 image"], None),
    "annotation-not-json": (lambda t, n: detection_job(t, n, "{'file': 'x.jpg'}"),
                            ["00000.json: not JSON"], None),
    "annotation-image-size-disagrees": (lambda t, n: detection_job(t, n, image=jpeg((64, 48))),
                                        ["00000.json: image_size 48x48 disagrees with", "00000.jpg, which is 64x48"],
                                        slow),
}


@pytest.mark.parametrize("case", [pytest.param(k, marks=[m] if m else []) for k, (_, _, m) in CASES.items()])
def test_a_data_fault_fails_the_job_with_one_clean_line(ray_cluster, tmp_path, case):
    build, fragments, _ = CASES[case]
    proc = run_cli("train", build(tmp_path, case), timeout=300)
    console = proc.stdout + proc.stderr
    assert proc.returncode == 1, console[-3000:]
    assert "Traceback" not in console and "RayTaskError" not in console, console[-3000:]
    lines = [line for line in console.splitlines() if "ClientError" in line and '"FailureReason"' not in line]
    assert len(lines) == 1 and lines[0].startswith("ClientError: ") and "ClientError: ClientError" not in lines[0], \
        console[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    output = tmp_path / "out" / case / "output"
    job = json.loads((output / "job.json").read_text())
    assert job["TrainingJobStatus"] == "Failed" and job["FailureReason"] == lines[0]
    assert not (output / "model.tar.gz").exists()
    shutil.rmtree(tmp_path / "out" / case / "checkpoints", ignore_errors=True)


def test_the_matrix_is_wide():
    assert len(CASES) >= 30
