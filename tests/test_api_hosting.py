"""`raysight api`, part two: models, endpoint configs, endpoints on Ray Serve, InvokeEndpoint
and transform jobs, driven by boto3's `sagemaker` and `sagemaker-runtime` clients."""
import io
import json
import os
import signal
import threading

import numpy as np
import pytest
from botocore.exceptions import ClientError, WaiterError
from PIL import Image

from tests.conftest import free_port
from tests.test_api import check_shape, client, code_of, credentials_file, good_request, read_log, start_api, wait
from tests.test_serve import make_model

IMAGE = "811284229777.dkr.ecr.us-east-1.amazonaws.com/image-classification:1"
WAIT = {"Delay": 2, "MaxAttempts": 200}


@pytest.fixture(scope="module")
def server(ray_cluster, tmp_path_factory):
    """A server on the session's Ray whose endpoints get half a CPU per replica; `start`
    starts it again on the same state and port. The Serve it starts is shut down afterwards,
    so later tests start their own."""
    folder = tmp_path_factory.mktemp("api-hosting")
    port, serve_port = free_port(), free_port()

    def start():
        handle["proc"], handle["url"] = start_api(folder / "state", credentials_file(folder), port, extra=[
            "--serve-port", str(serve_port), "--replica-cpus", "0.5"])

    handle = {"start": start}
    start()
    yield handle
    handle["proc"].terminate()
    handle["proc"].wait(30)
    from ray import serve

    serve.shutdown()


@pytest.fixture(scope="module")
def api(server):
    return server["url"]


def model_request(name, data_url, image=IMAGE):
    return {"ModelName": name, "ExecutionRoleArn": "arn:aws:iam::000000000000:role/raysight",
            "PrimaryContainer": {"Image": image, "ModelDataUrl": data_url, "Environment": {"K": "v"}},
            "Tags": [{"Key": "project", "Value": "raysight"}]}  # accepted and not kept, as documented


def config_request(name, *variants):
    return {"EndpointConfigName": name, "ProductionVariants": [
        {"VariantName": v, "ModelName": m, "InitialInstanceCount": 1, "InstanceType": "ml.m5.large",
         "InitialVariantWeight": w} for v, m, w in variants]}


def test_models_and_configs_are_recorded_listed_and_deleted(api, tmp_path):
    sm = client(api)
    path = make_model(tmp_path / "model.tar.gz")
    arn = sm.create_model(**model_request("m-one", path))["ModelArn"]
    assert arn.endswith(":model/m-one")
    described = sm.describe_model(ModelName="m-one")
    check_shape(described, "DescribeModel")
    assert described["PrimaryContainer"]["Environment"] == {"K": "v"}
    # the SDK matches on these words to reuse a model that already exists
    with pytest.raises(ClientError) as info:
        sm.create_model(**model_request("m-one", path))
    assert "Cannot create already existing model" in info.value.response["Error"]["Message"]
    sm.create_model(**model_request("m-two", path))
    page = sm.list_models(NameContains="m-", SortBy="Name", SortOrder="Ascending", MaxResults=1)
    assert [m["ModelName"] for m in page["Models"]] == ["m-one"] and page["NextToken"]
    sm.create_endpoint_config(**config_request("c-one", ("A", "m-one", 1.0), ("B", "m-two", 3.0)))
    config = sm.describe_endpoint_config(EndpointConfigName="c-one")
    check_shape(config, "DescribeEndpointConfig")
    assert [v["InitialVariantWeight"] for v in config["ProductionVariants"]] == [1.0, 3.0]
    assert [c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]] == ["c-one"]
    sm.delete_endpoint_config(EndpointConfigName="c-one")
    sm.delete_model(ModelName="m-two")
    assert code_of(lambda: sm.describe_model(ModelName="m-two")) == "ValidationException"
    assert code_of(lambda: sm.describe_endpoint_config(EndpointConfigName="c-one")) == "ValidationException"
    assert [m["ModelName"] for m in sm.list_models()["Models"]] == ["m-one"]


def test_bad_hosting_requests_get_sagemakers_codes_and_create_nothing(api, tmp_path):
    sm = client(api)
    path = make_model(tmp_path / "model.tar.gz")
    cases = [  # (call, code, words of the message)
        (lambda: sm.create_model(**model_request("bad-image", path, "123.dkr.ecr.x.amazonaws.com/xgboost:1")),
         "ValidationException", "names no built-in algorithm"),
        (lambda: sm.create_endpoint_config(**config_request("c-bad", ("A", "no-such-model", 1.0))),
         "ValidationException", 'Could not find model "arn:aws:sagemaker:'),
        (lambda: sm.create_endpoint(EndpointName="e-bad", EndpointConfigName="no-such-config"),
         "ValidationException", 'Could not find endpoint configuration "arn:aws:sagemaker:'),
        (lambda: sm.describe_endpoint(EndpointName="no-such-endpoint"), "ValidationException",
         'Could not find endpoint "arn:aws:sagemaker:'),
        (lambda: sm.create_model(**model_request("bad_name!", path)), "ValidationException", "modelName"),
        (lambda: sm.create_model(**model_request("bad-relative", "models/model.tar.gz")), "ValidationException",
         "at 'PrimaryContainer.ModelDataUrl' is a relative path"),
    ]
    for call, code, words in cases:
        with pytest.raises(ClientError) as info:
            call()
        error = info.value.response["Error"]
        assert error["Code"] == code and words in error["Message"], error
    assert sm.list_models(NameContains="bad")["Models"] == []
    assert sm.list_endpoint_configs(NameContains="c-bad")["EndpointConfigs"] == []
    assert sm.list_endpoints(NameContains="e-bad")["Endpoints"] == []
    runtime = client(api, "sagemaker-runtime")
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName="no-such-endpoint", Body=b"x", ContentType="image/png")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    assert "Endpoint no-such-endpoint of account" in info.value.response["Error"]["Message"]


# --- endpoints on a trained model -----------------------------------------------------------
@pytest.fixture(scope="module")
def trained(api, digits_small, tmp_path_factory):
    """A model trained through the API (as the SageMaker notebooks do before deploying)."""
    sm = client(api)
    request = good_request(digits_small, str(tmp_path_factory.mktemp("hosting-train")), "host-digits")
    for channel in request["InputDataConfig"]:
        if channel["ChannelName"] == "train":
            channel["ShuffleConfig"] = {"Seed": 11}
    sm.create_training_job(**request)
    described = wait(sm, "host-digits")
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    accuracy = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}["validation:accuracy"]
    return described["ModelArtifacts"]["S3ModelArtifacts"], accuracy


def held_out_digits(count=60):
    """Digits neither split of the tests' data holds (digits.export keeps 240 per split)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    images = []
    for i in order[240:240 + count]:
        buf = io.BytesIO()
        Image.fromarray((digits.images[i] * (255.0 / 16.0)).clip(0, 255).astype(np.uint8), mode="L").save(buf, "PNG")
        images.append((buf.getvalue(), int(digits.target[i])))
    return images


def wait_in_service(sm, name):
    try:
        sm.get_waiter("endpoint_in_service").wait(EndpointName=name, WaiterConfig=WAIT)
    except WaiterError as exc:
        raise AssertionError(f"{exc}: {sm.describe_endpoint(EndpointName=name).get('FailureReason')}") from None
    return sm.describe_endpoint(EndpointName=name)


def accuracy_of(runtime, name, images, model=None, **extra):
    """Accuracy of the endpoint's answers and the variants that gave them; with `model`, each
    answer is also checked to be the stored model's own (ModelRunner, in this process)."""
    from raysight.serve.model import ModelRunner

    local = ModelRunner(model) if model else None
    right, variants = 0, []
    for body, label in images:
        answer = runtime.invoke_endpoint(EndpointName=name, Body=body, ContentType="image/png",
                                         Accept="application/json", **extra)
        probabilities = json.loads(answer["Body"].read())
        assert len(probabilities) == 10 and abs(sum(probabilities) - 1) < 1e-3
        if local:
            expected, _ = local.render(local.predict([local.prepare(body, "image/png")])[0], "application/json")
            assert np.allclose(probabilities, json.loads(expected), atol=1e-5)
        right += int(np.argmax(probabilities)) == label
        variants.append(answer["InvokedProductionVariant"])
    return right / len(images), variants


@pytest.mark.slow
def test_endpoint_lifecycle_answers_held_out_digits_and_updates_without_a_failed_request(api, trained, tmp_path):
    sm, runtime = client(api), client(api, "sagemaker-runtime")
    uri = trained[0]
    sm.create_model(**model_request("digits-v1", uri))
    sm.create_endpoint_config(**config_request("digits-c1", ("AllTraffic", "digits-v1", 1.0)))
    sm.create_endpoint(EndpointName="digits", EndpointConfigName="digits-c1")
    assert code_of(lambda: sm.create_endpoint(EndpointName="digits", EndpointConfigName="digits-c1")) \
        == "ValidationException"  # a duplicate endpoint name
    described = wait_in_service(sm, "digits")
    check_shape(described, "DescribeEndpoint")
    assert described["ProductionVariants"][0]["CurrentInstanceCount"] == 1
    images = held_out_digits()
    # the stored model's answers, which on these 8x8 digits score below the job's validation
    # accuracy: inference resizes to image_shape without the training crop, as SageMaker's does
    accuracy, variants = accuracy_of(runtime, "digits", images, model=uri)
    assert accuracy > 0.25 and set(variants) == {"AllTraffic"}, accuracy  # 10 classes: chance is 0.1

    # blue/green: a two-variant config; requests keep being answered while it deploys
    sm.create_model(**model_request("digits-v2", uri))
    sm.create_endpoint_config(**config_request("digits-c2", ("Blue", "digits-v1", 1.0), ("Green", "digits-v2", 1.0)))
    failures, answered, done = [], [], threading.Event()

    def keep_asking():
        while not done.is_set():
            try:
                answered.append(runtime.invoke_endpoint(EndpointName="digits", Body=images[0][0],
                                                        ContentType="image/png")["InvokedProductionVariant"])
            except Exception as exc:  # noqa: BLE001 - counted, the test's claim is that there are none
                failures.append(repr(exc))

    worker = threading.Thread(target=keep_asking)
    worker.start()
    sm.update_endpoint(EndpointName="digits", EndpointConfigName="digits-c2")
    assert sm.describe_endpoint(EndpointName="digits")["EndpointStatus"] == "Updating"
    described = wait_in_service(sm, "digits")
    for _ in range(10):  # a few answers from the new variants before stopping
        runtime.invoke_endpoint(EndpointName="digits", Body=images[0][0], ContentType="image/png")
    done.set()
    worker.join(60)
    assert failures == [] and len(answered) > 10, (failures[:3], len(answered))
    assert answered[0] == "AllTraffic" and {"Blue", "Green"} & set(answered[-5:])
    assert described["EndpointConfigName"] == "digits-c2"
    assert sorted(v["VariantName"] for v in described["ProductionVariants"]) == ["Blue", "Green"]
    _, variants = accuracy_of(runtime, "digits", images[:20], TargetVariant="Green")
    assert set(variants) == {"Green"}

    sm.delete_endpoint(EndpointName="digits")
    assert sm.describe_endpoint(EndpointName="digits")["EndpointStatus"] == "Deleting"
    sm.get_waiter("endpoint_deleted").wait(EndpointName="digits", WaiterConfig=WAIT)
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName="digits", Body=images[0][0], ContentType="image/png")
    assert info.value.response["Error"]["Code"] == "ValidationError"
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient
    from ray.job_submission import JobSubmissionClient

    apps = ServeSubmissionClient(JobSubmissionClient().get_address()).get_serve_details().get("applications") or {}
    assert not [a for a in apps if a.startswith("digits.")], apps  # the Serve apps are gone


@pytest.mark.slow
def test_an_unreadable_model_fails_the_endpoint_with_its_reason(api, tmp_path):
    sm = client(api)
    broken = tmp_path / "broken.tar.gz"
    broken.write_bytes(b"this is not a tarball")
    sm.create_model(**model_request("broken", str(broken)))
    sm.create_endpoint_config(**config_request("broken-c", ("AllTraffic", "broken", 1.0)))
    sm.create_endpoint(EndpointName="broken", EndpointConfigName="broken-c")
    with pytest.raises(WaiterError):
        sm.get_waiter("endpoint_in_service").wait(EndpointName="broken", WaiterConfig=WAIT)
    described = sm.describe_endpoint(EndpointName="broken")
    assert described["EndpointStatus"] == "Failed"
    assert "cannot be loaded" in described["FailureReason"] and "broken.tar.gz" in described["FailureReason"]
    sm.delete_endpoint(EndpointName="broken")


@pytest.mark.slow
def test_a_transform_job_through_the_api_writes_its_out_files(api, trained, tmp_path):
    sm = client(api)
    sm.create_model(**model_request("digits-batch", trained[0]))
    images = held_out_digits(60)
    folder = tmp_path / "in"
    folder.mkdir()
    for i, (body, _) in enumerate(images):
        (folder / f"{i:02d}.png").write_bytes(body)
    request = {"TransformJobName": "digits-batch", "ModelName": "digits-batch",
               "TransformInput": {"DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": str(folder)}},
                                  "ContentType": "application/x-image"},
               "TransformOutput": {"S3OutputPath": str(tmp_path / "out"), "Accept": "application/json"},
               "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1}}
    assert code_of(lambda: sm.create_transform_job(**{**request, "ModelName": "no-such"})) == "ValidationException"
    sm.create_transform_job(**request)
    assert code_of(lambda: sm.create_transform_job(**request)) == "ResourceInUse"
    sm.get_waiter("transform_job_completed_or_stopped").wait(TransformJobName="digits-batch", WaiterConfig=WAIT)
    described = sm.describe_transform_job(TransformJobName="digits-batch")
    check_shape(described, "DescribeTransformJob")
    assert described["TransformJobStatus"] == "Completed", described.get("FailureReason")
    outs = sorted(os.listdir(tmp_path / "out"))
    assert [o for o in outs if o.endswith(".out")] == [f"{i:02d}.png.out" for i in range(len(images))]
    from raysight.serve.model import ModelRunner

    local, right = ModelRunner(trained[0]), 0
    for i, (body, label) in enumerate(images):  # each answer is the stored model's own
        answer = json.loads((tmp_path / "out" / f"{i:02d}.png.out").read_text())
        expected, _ = local.render(local.predict([local.prepare(body, "image/png")])[0], "application/json")
        assert np.allclose(answer, json.loads(expected), atol=1e-5)
        right += int(np.argmax(answer)) == label
    assert right / len(images) > 0.25
    listed = sm.list_transform_jobs(StatusEquals="Completed")["TransformJobSummaries"]
    assert [j["TransformJobName"] for j in listed] == ["digits-batch"]
    log = read_log(api, "digits-batch", "/aws/sagemaker/TransformJobs")  # as transformer.wait() reads it
    assert f"60 of 60 object(s) transformed into {tmp_path / 'out'}" in log, log[-20:]
    assert any(line.startswith("Transform job digits-batch: 60 object(s) from ") for line in log), log[-20:]


@pytest.mark.slow
def test_a_server_killed_and_restarted_reattaches_to_its_endpoint(server, trained):
    sm, runtime = client(server["url"]), client(server["url"], "sagemaker-runtime")
    sm.create_model(**model_request("kept", trained[0]))
    sm.create_endpoint_config(**config_request("kept", ("AllTraffic", "kept", 1.0)))
    sm.create_endpoint(EndpointName="kept", EndpointConfigName="kept")
    wait_in_service(sm, "kept")
    body = held_out_digits(1)[0][0]
    before = runtime.invoke_endpoint(EndpointName="kept", Body=body, ContentType="image/png")["Body"].read()
    os.killpg(server["proc"].pid, signal.SIGKILL)  # the server's whole process group
    server["proc"].wait(30)
    server["start"]()
    assert sm.describe_endpoint(EndpointName="kept")["EndpointStatus"] == "InService"
    after = runtime.invoke_endpoint(EndpointName="kept", Body=body, ContentType="image/png")["Body"].read()
    assert json.loads(after) == json.loads(before)
    sm.delete_endpoint(EndpointName="kept")
    sm.get_waiter("endpoint_deleted").wait(EndpointName="kept", WaiterConfig=WAIT)


def test_instance_types_and_counts_become_serve_replicas_and_gpus(tmp_path):
    """The config each variant's Serve app gets: InitialInstanceCount replicas, one GPU per
    replica on an ml.p*/ml.g* type, and settings the serving app itself accepts."""
    from raysight.api.endpoints import Endpoints
    from raysight.api.models import Models
    from raysight.api.state import State
    from raysight.serve.options import ServeOptions

    state = State(str(tmp_path / "state"))
    models = Models(state)
    models.create_model(model_request("m", make_model(tmp_path / "model.tar.gz")))
    config = config_request("c", ("Gpu", "m", 3.0), ("Cpu", "m", 1.0))
    config["ProductionVariants"][0].update(InstanceType="ml.g5.xlarge", InitialInstanceCount=2)
    models.create_endpoint_config(config)
    endpoints = Endpoints(state, models, "http://127.0.0.1:9", 8000, 0.5)
    apps = [endpoints._serve_app(a) for a in endpoints._applications("e", models.config("c"), 1)]
    gpu, cpu = (ServeOptions.from_args(a["args"]) for a in apps)
    assert (gpu.replicas, gpu.gpus_per_replica, gpu.cpus_per_replica, gpu.variant) == (2, 1, 0.5, "Gpu")
    assert (cpu.replicas, cpu.gpus_per_replica, cpu.name) == (1, 0, "e")
    assert gpu.deployment()["ray_actor_options"] == {"num_cpus": 0.5, "num_gpus": 1}
    assert [a["route_prefix"] for a in apps] == ["/raysight-endpoints/e/1/Gpu", "/raysight-endpoints/e/1/Cpu"]
