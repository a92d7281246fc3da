"""Bad data gets a ClientError naming the file, line or record offset, and nothing
half-written is left as if complete."""
import io
import json

import numpy as np
import pytest
from PIL import Image

from raysight.errors import ClientError
from raysight.formats import recordio
from raysight.formats.manifest import parse_manifest
from tests.conftest import parse_job, run_cli, tiny_request, write_json


def png(size=(8, 8), mode="RGB"):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((size[1], size[0], 3), np.uint8)).convert(mode).save(buf, "PNG")
    return buf.getvalue()


def rec_channel(tmp_path, name, payloads, idx=None):
    folder = tmp_path / name
    folder.mkdir()
    with open(folder / "data.rec", "wb") as f:
        offsets = recordio.write_records(f, payloads)
    if idx is not None:
        (folder / "data.idx").write_text(idx(offsets))
    return folder


def rec_request(tmp_path, train, validation, name):
    request = tiny_request("/unused", str(tmp_path / "out"), name, {"train": 4}, epochs="1")
    request["HyperParameters"].pop("resize")
    request["InputDataConfig"] = [
        {"ChannelName": c, "ContentType": "application/x-recordio",
         "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(u)}}}
        for c, u in (("train", train), ("validation", validation))]
    return write_json(tmp_path / f"{name}.json", request)


def failed_job(tmp_path, name):
    with open(tmp_path / "out" / name / "output" / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobStatus"] == "Failed"
    assert not (tmp_path / "out" / name / "output" / "model.tar.gz").exists()
    return job["FailureReason"]


def test_inspect_names_a_bad_magic_word(tmp_path):
    """Every fault in a job: tests/test_refused_jobs.py; `raysight inspect` finds this one up front."""
    bad = rec_channel(tmp_path, "train-magic", [])
    (bad / "data.rec").write_bytes(b"not a recordio file at all")
    proc = run_cli("inspect", str(bad))
    assert proc.returncode == 1 and "data.rec at byte 0: bad magic" in proc.stdout


def test_grayscale_is_converted_and_cmyk_too(tmp_path):
    from raysight.images import BadImage, decode_rgb

    assert decode_rgb(png(mode="L")).mode == "RGB"
    buf = io.BytesIO()
    Image.new("CMYK", (4, 4)).save(buf, "JPEG")
    assert decode_rgb(buf.getvalue()).mode == "RGB"
    with pytest.raises(BadImage, match="x.png: cannot decode image"):
        decode_rgb(b"garbage", "x.png")


def test_manifest_problems_are_named():
    text = '{"source-ref": "a.png", "class": "1"}\nnot json\n{"source-ref": "b.png"}\n'
    with pytest.raises(ClientError) as e:
        parse_manifest(text, ["source-ref", "class"], "m.manifest")
    assert "m.manifest line 2: not JSON" in str(e.value)
    assert "m.manifest line 3: missing attribute 'class'" in str(e.value)
    with pytest.raises(ClientError, match="first attribute must be the image reference"):
        parse_manifest(text, ["class", "source-ref"], "m.manifest")


def test_train_and_validation_must_not_share_a_prefix():
    request = tiny_request("/data", "/out", "same-prefix", {"train": 4})
    request["InputDataConfig"][1]["DataSource"]["S3DataSource"]["S3Uri"] = "/data/train/sub"
    with pytest.raises(ClientError, match="must live under different prefixes"):
        parse_job(request)


def test_missing_required_channel_is_named(tmp_path):
    request = tiny_request("/data", str(tmp_path), "no-val", {"train": 4})
    request["InputDataConfig"] = request["InputDataConfig"][:1]
    proc = run_cli("train", "--validate-only", write_json(tmp_path / "r.json", request))
    assert proc.returncode == 2 and "channel 'validation' is required" in proc.stderr


def test_an_invalid_request_exits_2_with_one_line_and_a_failed_record(tmp_path):
    request = tiny_request("/data", str(tmp_path), "bad-hp", {"train": 4}, epochs="0", learning_rat="0.1")
    proc = run_cli("train", write_json(tmp_path / "r.json", request), timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["ClientError: Additional hyperparameters are not allowed ('learning_rat' was unexpected); "
                     "hyperparameter 'epochs' must be >= 1, got '0'"], proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    with open(tmp_path / "bad-hp" / "output" / "job.json") as f:
        job = json.load(f)
    assert job["TrainingJobStatus"] == "Failed" and job["FailureReason"] == lines[0]
    assert not (tmp_path / "bad-hp" / "output" / "model.tar.gz").exists()


def test_images_of_every_mode_decode_to_rgb_and_hostile_ones_are_refused():
    from raysight.images import BadImage, decode_rgb
    from tests.test_serve import png_header

    for mode, fmt in [("CMYK", "JPEG"), ("I;16", "PNG"), ("RGBA", "PNG"), ("P", "PNG"), ("LA", "PNG"),
                      ("L", "PNG"), ("1", "PNG")]:
        buf = io.BytesIO()
        Image.new(mode, (5, 4)).save(buf, format=fmt)
        image = decode_rgb(buf.getvalue(), f"{mode}.{fmt.lower()}")
        assert image.mode == "RGB" and image.size == (5, 4), mode
    with pytest.raises(BadImage, match=r"^bomb\.png: image header declares more than \d+ pixels"):
        decode_rgb(png_header(40000, 40000), "bomb.png")
    with pytest.raises(BadImage, match=r"^near\.png: image header declares more than"):  # within PIL's 2x grace
        decode_rgb(png_header(10000, 10000), "near.png")
    with pytest.raises(BadImage, match=r"^empty\.jpg: cannot decode image \(0 bytes\)"):
        decode_rgb(b"", "empty.jpg")
    jpeg = png()
    with pytest.raises(BadImage, match=r"^cut\.png: cannot decode image"):
        decode_rgb(jpeg[: len(jpeg) // 2], "cut.png")


def test_lst_and_manifest_accept_bom_crlf_and_spaces_and_name_short_rows():
    from raysight.formats.lst import parse_lst

    entries = parse_lst("\ufeff1\t 3.000000 \ta/b.png\r\n\r\n2\t4\t c.jpg \r\n", "t.lst")
    assert [(e.index, e.labels, e.path) for e in entries] == [(1, (3.0,), "a/b.png"), (2, (4.0,), "c.jpg")]
    with pytest.raises(ClientError, match=r"t\.lst line 2: needs an index, at least one label and a path"):
        parse_lst("1\t0\ta.png\n2\tb.png\n", "t.lst")
    with pytest.raises(ClientError, match=r"t\.lst line 1: index 'x' is not a number"):
        parse_lst("x\t0\ta.png\n", "t.lst")
    lines = parse_manifest('\ufeff{"source-ref": "a.png", "class": 1}\r\n{"source-ref": "b.png", "class": 0}\r\n',
                           ["source-ref", "class"], "m.manifest")
    assert [(line.ref, line.label) for line in lines] == [("a.png", 1), ("b.png", 0)]
    with pytest.raises(ClientError, match=r"m\.manifest line 2: not a JSON object"):
        parse_manifest('{"source-ref": "a.png", "class": 1}\n[1, 2]\n', ["source-ref", "class"], "m.manifest")
