"""Any bytes at all: the codecs answer with a ClientError (or a result), never anything else."""
import io
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysight.errors import ClientError
from raysight.formats import detection, recordio
from raysight.formats.lst import parse_lst
from raysight.formats.manifest import parse_manifest

FUZZ = settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)


def only_client_errors(call):
    try:
        call()
    except ClientError:
        pass


@FUZZ
@given(st.binary(max_size=400) | st.builds(lambda p, cut: recordio.encode_record(p)[:cut], st.binary(max_size=64),
                                           st.integers(0, 80)))
def test_recordio_reader(blob):
    def read_all():
        for _, payload in recordio.iter_records(io.BytesIO(blob), "f.rec"):
            recordio.unpack_image(payload, "f.rec record")

    only_client_errors(read_all)


@FUZZ
@given(text)
def test_idx_parser(body):
    only_client_errors(lambda: recordio.parse_idx(body, "f.idx"))


@FUZZ
@given(text | st.lists(st.lists(st.sampled_from(["1", "0.5", "a/b.png", "", " ", "x", "1e3", "nan"]),
                                max_size=5).map("\t".join), max_size=5).map("\n".join))
def test_lst_parser(body):
    only_client_errors(lambda: parse_lst(body, "f.lst"))


@FUZZ
@given(text | st.lists(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                                    lambda kids: st.lists(kids, max_size=3)
                                    | st.dictionaries(st.sampled_from(["source-ref", "class", "x"]), kids,
                                                      max_size=3)).map(json.dumps), max_size=4).map("\n".join))
def test_manifest_parser(body):
    def parse():
        for line in parse_manifest(body, ["source-ref", "class"], "f.manifest"):
            from raysight.formats.manifest import label_values

            try:
                label_values(line.label)
            except ValueError:  # callers turn this into a ClientError naming the line (data.manifest_rows)
                pass

    only_client_errors(parse)


annotation = st.fixed_dictionaries({}, optional={
    "file": st.text(max_size=8) | st.integers(),
    "image_size": st.lists(st.dictionaries(st.sampled_from(["width", "height", "depth"]),
                                           st.integers(-5, 600) | st.text(max_size=3) | st.none()), max_size=2)
    | st.integers(),
    "annotations": st.lists(st.dictionaries(st.sampled_from(["class_id", "left", "top", "width", "height"]),
                                            st.integers(-5, 600) | st.floats(allow_nan=True) | st.text(max_size=3)
                                            | st.none()), max_size=3) | st.text(max_size=3),
})


@FUZZ
@given(text | annotation.map(json.dumps))
def test_annotation_parser(body):
    def parse():
        _, boxes = detection.load_annotation(body, "a.json", num_classes=3)
        assert np.isfinite(boxes).all() and ((boxes[:, 1:] >= 0) & (boxes[:, 1:] <= 1)).all(), boxes

    only_client_errors(parse)


@FUZZ
@given(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=30))
def test_detection_label_vector(values):
    only_client_errors(lambda: detection.parse_label_vector(np.asarray(values, dtype=np.float32), "r"))
