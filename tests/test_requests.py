import copy

import pytest

from raysight.errors import ClientError
from raysight.formats.lst import ListEntry, format_lst, parse_lst
from raysight.job_request import algorithm_name
from tests.conftest import parse_job
from raysight.sample_data.digits import training_request

BASE = training_request("/data", "/out", name="job-1", counts={"train": 10})


def test_sagemaker_image_uri_names_the_algorithm():
    assert algorithm_name({"TrainingImage": "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"}) \
        == "image-classification"
    assert algorithm_name({"TrainingImage": "433757028032.dkr.ecr.us-west-2.amazonaws.com/image-classification:latest"}) \
        == "image-classification"
    assert algorithm_name({"AlgorithmName": "image-classification"}) == "image-classification"
    job = parse_job(BASE)
    assert job.algorithm == "image-classification"
    assert set(job.channels) == {"train", "validation", "train_lst", "validation_lst"}
    assert job.channels["train"].mime == "application/x-image"


def test_every_request_problem_is_reported_at_once():
    bad = copy.deepcopy(BASE)
    bad["TrainingJobName"] = "bad_name!"
    bad["AlgorithmSpecification"] = {"TrainingImage": "123.dkr.ecr.us-east-1.amazonaws.com/xgboost:1",
                                     "TrainingInputMode": "Stream"}
    bad["ResourceConfig"]["InstanceCount"] = 0
    del bad["OutputDataConfig"]
    bad["InputDataConfig"][0]["InputMode"] = "Fast"
    with pytest.raises(ClientError) as e:
        parse_job(bad)
    text = str(e.value)
    for part in ("TrainingJobName 'bad_name!'", "algorithm 'xgboost'", "TrainingInputMode 'Stream'",
                 "InstanceCount must be an integer >= 1", "S3OutputPath is required",
                 "channel 'train': InputMode 'Fast' must be one of File, Pipe, FastFile"):
        assert part in text, part


def test_duplicate_channel_is_rejected():
    bad = copy.deepcopy(BASE)
    bad["InputDataConfig"].append(copy.deepcopy(bad["InputDataConfig"][0]))
    with pytest.raises(ClientError, match="channel 'train' appears twice"):
        parse_job(bad)


def test_lst_round_trip_and_errors():
    entries = [ListEntry(5, (1.0,), "dog/1.jpg"), ListEntry(7, (0.0, 1.0, 1.0), "cat/2.png")]
    assert parse_lst(format_lst(entries)) == entries
    assert parse_lst("1\t3\ta.jpg\n\n") == [ListEntry(1, (3.0,), "a.jpg")]  # blank lines are skipped
    with pytest.raises(ClientError, match=r"x.lst line 3: needs an index, at least one label and a path"):
        parse_lst("1\t3\ta.jpg\n\nshort\tline\n", "x.lst")  # a short row is never skipped silently
    with pytest.raises(ClientError, match=r"x.lst line 2: index 1 repeats line 1"):
        parse_lst("1\t0\ta.jpg\n1\t1\tb.jpg\n", "x.lst")
    with pytest.raises(ClientError, match=r"x.lst line 1: labels \['dog'\] must be numbers"):
        parse_lst("1\tdog\ta.jpg\n", "x.lst")
    with pytest.raises(ClientError, match="no entries"):
        parse_lst("\n", "x.lst")
