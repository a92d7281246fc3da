import pytest

from raysight import algorithms
from raysight.errors import ClientError
from raysight.hyperparams import parse_hyperparameters

IC = algorithms.get("image-classification")
REQUIRED = {"num_classes": "10", "num_training_samples": "100"}

# The defaults SageMaker documents (shared/spec/hyperparameters.md), written out
# independently of the schema so a drifting default fails here.
SPEC_DEFAULTS = {
    "augmentation_type": None, "beta_1": 0.9, "beta_2": 0.999, "checkpoint_frequency": None,
    "early_stopping": False, "early_stopping_min_epochs": 10, "early_stopping_patience": 5,
    "early_stopping_tolerance": 0.0, "epochs": 30, "eps": 1e-8, "gamma": 0.9, "image_shape": (3, 224, 224),
    "kv_store": None, "learning_rate": 0.1, "lr_scheduler_factor": 0.1, "lr_scheduler_step": (),
    "mini_batch_size": 32, "momentum": 0.9, "multi_label": 0, "num_layers": 152, "optimizer": "sgd",
    "precision_dtype": "float32", "resize": None, "top_k": None, "use_pretrained_model": 0,
    "use_weighted_loss": 0, "weight_decay": 0.0001,
}


def parse(**values):
    return parse_hyperparameters(IC.hyperparameters, {**REQUIRED, **values})


def test_every_documented_name_has_its_default():
    hp = parse()
    assert set(hp) == set(SPEC_DEFAULTS) | set(REQUIRED)
    for name, default in SPEC_DEFAULTS.items():
        assert hp[name] == default, name


def test_every_documented_name_is_accepted_with_a_valid_value():
    values = {"augmentation_type": "crop_color_transform", "beta_1": "0.8", "beta_2": "0.99",
              "checkpoint_frequency": "2", "early_stopping": "true", "early_stopping_min_epochs": "3",
              "early_stopping_patience": "2", "early_stopping_tolerance": "0.01", "epochs": "4", "eps": "1e-7",
              "gamma": "0.8", "image_shape": "3,32,32", "kv_store": "dist_sync", "learning_rate": "0.01",
              "lr_scheduler_factor": "0.5", "lr_scheduler_step": "1, 3", "mini_batch_size": "8",
              "momentum": "0.5", "multi_label": "0", "num_layers": "20", "optimizer": "nag",
              "precision_dtype": "float16", "resize": "40", "top_k": "3", "use_pretrained_model": "0",
              "use_weighted_loss": "1", "weight_decay": "0.001", "_tuning_objective_metric": "validation:accuracy"}
    hp = parse(**values)
    assert hp["image_shape"] == (3, 32, 32)
    assert hp["lr_scheduler_step"] == (1, 3)
    assert hp["early_stopping"] is True
    assert hp["optimizer"] == "nag"


@pytest.mark.parametrize("depth", ["18", "34", "50", "101", "152", "200", "20", "32", "44", "56", "110"])
def test_every_documented_depth(depth):
    assert parse(num_layers=depth)["num_layers"] == int(depth)


def test_unknown_name_uses_sagemakers_message():
    with pytest.raises(ClientError) as e:
        parse(learning_rat="0.1")
    assert str(e.value) == "ClientError: Additional hyperparameters are not allowed ('learning_rat' was unexpected)"


@pytest.mark.parametrize("name,value,expected", [
    ("epochs", "ten", "hyperparameter 'epochs' must be an integer, got 'ten'"),
    ("epochs", "2.5", "hyperparameter 'epochs' must be an integer, got '2.5'"),
    ("learning_rate", "fast", "hyperparameter 'learning_rate' must be a number, got 'fast'"),
    ("early_stopping", "yes", "hyperparameter 'early_stopping' must be True or False, got 'yes'"),
    ("learning_rate", "1.5", "hyperparameter 'learning_rate' must be within [0, 1], got '1.5'"),
    ("epochs", "0", "hyperparameter 'epochs' must be >= 1, got '0'"),
    ("num_layers", "19", "hyperparameter 'num_layers' must be one of 18, 34, 50, 101, 152, 200, 20, 32, 44, 56, "
                         "110, got '19'"),
    ("optimizer", "lamb", "hyperparameter 'optimizer' must be one of sgd, adam, rmsprop, nag, got 'lamb'"),
    ("image_shape", "224,224", "hyperparameter 'image_shape' must be 'channels,height,width'"),
    ("image_shape", "1,28,28", "hyperparameter 'image_shape' must have 3 channels"),
    ("lr_scheduler_step", "20,10", "hyperparameter 'lr_scheduler_step' must list increasing epoch numbers"),
    ("top_k", "1", "hyperparameter 'top_k' must be >= 2, got '1'"),
])
def test_bad_values_are_named(name, value, expected):
    with pytest.raises(ClientError) as e:
        parse(**{name: value})
    assert expected in str(e.value)
    assert str(e.value).startswith("ClientError: ")


def test_all_problems_reported_together_and_required_names_checked():
    with pytest.raises(ClientError) as e:
        parse_hyperparameters(IC.hyperparameters, {"epochs": "0", "foo": "1"})
    text = str(e.value)
    for part in ("'foo' was unexpected", "'epochs' must be >= 1", "Missing required hyperparameter 'num_classes'",
                 "Missing required hyperparameter 'num_training_samples'"):
        assert part in text


def test_booleans_accept_any_case():
    assert parse(early_stopping="TRUE")["early_stopping"] is True
    assert parse(early_stopping="False")["early_stopping"] is False


class _Job:
    def __init__(self, channels):
        self.channels = channels


def _image_channels():
    from raysight.job_request import Channel

    return {n: Channel(n, f"/data/{n}", "application/x-image") for n in
            ("train", "validation", "train_lst", "validation_lst")}


@pytest.mark.parametrize("values,expected", [
    ({"use_pretrained_model": "1", "num_layers": "20", "resize": "300"}, "use_pretrained_model=1 needs num_layers"),
    ({"checkpoint_frequency": "5", "epochs": "3", "resize": "300"}, "checkpoint_frequency (5) must not exceed epochs"),
    ({"resize": "224"}, "resize (224) must exceed both height and width"),
    ({"top_k": "11", "resize": "300"}, "top_k (11) must not exceed num_classes (10)"),
    ({}, "hyperparameter 'resize' is required for image content types"),
])
def test_cross_field_rules(values, expected):
    hp = parse(**values)
    problems = IC.check(hp, _Job(_image_channels()))
    assert any(expected in p for p in problems), problems


def test_missing_list_channel_is_named():
    channels = _image_channels()
    del channels["validation_lst"]
    problems = IC.check(parse(resize="300"), _Job(channels))
    assert problems == ["content type 'application/x-image' needs channels train, validation, train_lst, "
                        "validation_lst; missing validation_lst"]
