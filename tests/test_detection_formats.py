import json

import numpy as np
import pytest

from raysight.errors import ClientError
from raysight.formats.detection import label_vector, load_annotation, parse_annotation, parse_label_vector

DOC = {"file": "dir/img1.jpg", "image_size": [{"width": 500, "height": 400, "depth": 3}],
       "annotations": [{"class_id": 0, "left": 111, "top": 134, "width": 61, "height": 128},
                       {"class_id": 2, "left": 0, "top": 0, "width": 500, "height": 400}],
       "categories": [{"class_id": 0, "name": "dog"}]}


def test_json_annotation_to_normalised_corners():
    file, boxes = parse_annotation(DOC, "img1.json", num_classes=3)
    assert file == "dir/img1.jpg"
    assert np.allclose(boxes, [[0, 111 / 500, 134 / 400, 172 / 500, 262 / 400], [2, 0, 0, 1, 1]])


@pytest.mark.parametrize("change,message", [
    ({"annotations": [{"class_id": 0, "left": 450, "top": 10, "width": 100, "height": 10}]}, "lies outside"),
    ({"annotations": [{"class_id": 0, "left": 4, "top": 10, "width": 0, "height": 10}]}, "must be positive"),
    ({"annotations": [{"class_id": 5, "left": 4, "top": 10, "width": 3, "height": 10}]},
     "annotation 0: class id 5 must be an integer in [0, 2]"),
    ({"annotations": [{"class_id": 0, "left": 4}]}, "needs numeric class_id"),
    ({"image_size": [{"width": 5, "height": 4, "depth": 1}]}, "only 3-channel images"),
    ({"image_size": {}}, "'image_size' must be a list"),
])
def test_bad_annotations_name_file_and_object(change, message):
    with pytest.raises(ClientError) as e:
        parse_annotation({**DOC, **change}, "img1.json", num_classes=3)
    assert "img1.json" in str(e.value) and message in str(e.value)
    with pytest.raises(ClientError, match="img2.json: not JSON"):
        load_annotation("{nope", "img2.json")
    assert load_annotation(json.dumps(DOC), "x.json")[1].shape == (2, 5)


def test_mxnet_label_vector_layouts():
    plain = [2, 5, 0, 0.1, 0.2, 0.5, 0.6, 1, 0.3, 0.3, 0.9, 0.8]
    assert np.allclose(parse_label_vector(plain, "r"), np.reshape(plain[2:], (2, 5)))
    voc = [2, 6, 0, 0.1, 0.2, 0.5, 0.6, 1]  # extra per-object 'difficult' flag
    assert np.allclose(parse_label_vector(voc, "r"), [[0, 0.1, 0.2, 0.5, 0.6]])
    with_size = [4, 5, 640, 480, 3, 0.1, 0.1, 0.2, 0.2, 1, 0.5, 0.5, 0.4, 0.9]  # 2nd box degenerate
    assert np.allclose(parse_label_vector(with_size, "r"), [[3, 0.1, 0.1, 0.2, 0.2]])
    assert np.allclose(parse_label_vector(label_vector(np.array([[1, .1, .2, .3, .4]])), "r"), [[1, .1, .2, .3, .4]])
    with pytest.raises(ClientError, match="rec record at byte 8: detection label of length 8"):
        parse_label_vector([2, 5, 0, 0.1, 0.2, 0.5, 0.6, 1], "rec record at byte 8")
