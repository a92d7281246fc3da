"""`raysight api`: a real server process, real boto3 clients signing with SigV4, real Ray Jobs."""
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError, WaiterError

from tests.conftest import ROOT, free_port, tiny_request
from tests.test_tune import tuning_request
from tests.test_tune_rules import check_output

KEY, SECRET = "AKIDRAYSIGHTTEST", "raysight-test-secret"
FAST_WAIT = {"Delay": 2, "MaxAttempts": 300}


def pytest_base(path) -> str:
    """The session's pytest folder that holds `path` (every test's data and outputs live there)."""
    path = os.path.abspath(str(path))
    while os.path.basename(os.path.dirname(path)).startswith("pytest-of-") is False and path != "/":
        path = os.path.dirname(path)
    assert path != "/", "the API's state must lie under pytest's temporary folder"
    return path


def start_api(state, credentials, port, env=None, extra=(), local_roots=None):
    """`raysight api` allowed to touch this pytest session's folders (its data, every test's
    output), unless `local_roots` says otherwise."""
    roots = [pytest_base(state)] if local_roots is None else local_roots
    proc = subprocess.Popen([sys.executable, "-m", "raysight", "api", "--port", str(port), "--state", str(state),
                             "--credentials", str(credentials), *[a for r in roots for a in ("--local-root", str(r))],
                             *extra], cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(proc.stdout.read())
        try:
            urllib.request.urlopen(urllib.request.Request(url + "/", data=b"{}", method="POST"), timeout=2)
        except urllib.error.HTTPError:
            return proc, url  # it answers (403: unsigned)
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise AssertionError("raysight api did not answer in 120 s")


def credentials_file(folder):
    path = folder / "credentials"
    path.write_text(f"[default]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n"
                    "[other]\naws_access_key_id = AKIDSECOND\naws_secret_access_key = second\n")
    return path


@pytest.fixture(scope="module")
def api(ray_cluster, tmp_path_factory):
    """One server on the session's Ray (RAY_ADDRESS)."""
    folder = tmp_path_factory.mktemp("api")
    proc, url = start_api(folder / "state", credentials_file(folder), free_port())
    yield url
    proc.terminate()
    proc.wait(30)


def client(url, service="sagemaker", key=KEY, secret=SECRET, **config):
    return boto3.client(service, endpoint_url=url, region_name="us-east-1", aws_access_key_id=key,
                        aws_secret_access_key=secret, config=Config(retries={"total_max_attempts": 1}, **config))


def signed_post(url, target, body: bytes, key=KEY, secret=SECRET):
    """A raw request, signed as botocore signs it, for bodies boto3 would never send."""
    request = AWSRequest(method="POST", url=url + "/", data=body, headers={
        "X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"})
    SigV4Auth(Credentials(key, secret), "sagemaker", "us-east-1").add_auth(request)
    try:
        with urllib.request.urlopen(urllib.request.Request(url + "/", data=body, headers=dict(request.headers),
                                                           method="POST"), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def check_shape(response: dict, operation: str) -> None:
    """The response as botocore parsed it, checked against the operation's output shape."""
    wire = {k: v for k, v in response.items() if k != "ResponseMetadata"}
    check_output(json.loads(json.dumps(wire, default=lambda t: t.timestamp())), operation)


def wait(sm, name: str) -> dict:
    """boto3's waiter; a failure shows the job's FailureReason, not just the waiter's words."""
    try:
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName=name, WaiterConfig=FAST_WAIT)
    except WaiterError as exc:
        raise AssertionError(f"{exc}: {sm.describe_training_job(TrainingJobName=name).get('FailureReason')}") from None
    return sm.describe_training_job(TrainingJobName=name)


def code_of(call) -> str:
    with pytest.raises(ClientError) as info:
        call()
    return info.value.response["Error"]["Code"]


def good_request(digits_small, out, name, **hp):
    root, counts = digits_small
    return tiny_request(root, out, name, counts, **hp)


# --- authentication ------------------------------------------------------------------------
def test_unsigned_wrong_key_wrong_secret_and_stale_requests_get_403_and_create_nothing(api, digits_small,
                                                                                        tmp_path, monkeypatch):
    request = good_request(digits_small, str(tmp_path), "auth-refused")
    status, body = 0, {}
    try:
        urllib.request.urlopen(urllib.request.Request(api + "/", data=json.dumps(request).encode(), headers={
            "X-Amz-Target": "SageMaker.CreateTrainingJob", "Content-Type": "application/x-amz-json-1.1"}))
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read())
    assert (status, body.get("__type")) == (403, "MissingAuthenticationTokenException"), body

    for key, secret, code in ((KEY, "not-the-secret", "InvalidSignatureException"),
                              ("AKIDUNKNOWN", SECRET, "UnrecognizedClientException")):
        with pytest.raises(ClientError) as info:
            client(api, key=key, secret=secret).create_training_job(**request)
        assert info.value.response["Error"]["Code"] == code
        assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403

    import datetime

    import botocore.auth
    stale = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None) - datetime.timedelta(minutes=20)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda: stale)
    with pytest.raises(ClientError) as info:
        client(api).create_training_job(**request)
    assert info.value.response["Error"]["Code"] == "InvalidSignatureException"
    assert "Signature expired" in info.value.response["Error"]["Message"]
    monkeypatch.undo()
    # the second profile of the file is a valid caller too; nothing above created a job
    assert code_of(lambda: client(api, key="AKIDSECOND", secret="second").describe_training_job(
        TrainingJobName="auth-refused")) == "ValidationException"


# --- malformed requests ---------------------------------------------------------------------
def test_malformed_requests_are_refused_with_sagemakers_codes_and_create_nothing(api, digits_small, tmp_path):
    good = good_request(digits_small, str(tmp_path), "malformed")
    raw = client(api, parameter_validation=False)

    def variant(path, value):
        request = json.loads(json.dumps(good))
        *parents, last = path.split(".")
        node = request
        for p in parents:
            node = node[p]
        if value is KeyError:
            node.pop(last)
        else:
            node[last] = value
        return request

    cases = [
        ("TrainingJobName", KeyError, "ValidationException", "trainingJobName"),
        ("RoleArn", KeyError, "ValidationException", "roleArn"),
        ("OutputDataConfig", KeyError, "ValidationException", "outputDataConfig"),
        ("OutputDataConfig.S3OutputPath", KeyError, "ValidationException", "outputDataConfig.s3OutputPath"),
        ("TrainingJobName", "bad_name!", "ValidationException", "regular expression pattern"),
        ("TrainingJobName", "-starts-with-a-hyphen", "ValidationException", "regular expression pattern"),
        ("TrainingJobName", "x" * 64, "ValidationException", "length less than or equal to 63"),
        ("RoleArn", "not-a-role", "ValidationException", "roleArn"),
        ("ResourceConfig.InstanceType", "ml.banana.large", "ValidationException", "enum value set"),
        ("AlgorithmSpecification.TrainingInputMode", "Carrier", "ValidationException", "enum value set"),
        ("OutputDataConfig.CompressionType", "ZIP", "ValidationException", "enum value set"),
        ("HyperParameters.epochs", "9" * 3000, "ValidationException", "length less than or equal to 2500"),
        ("StoppingCondition.MaxRuntimeInSeconds", 0, "ValidationException", "greater than or equal to 1"),
        ("InputDataConfig", [], "ValidationException", "length greater than or equal to 1"),
        ("OutputDataConfig.S3OutputPath", "relative/out", "ValidationException", "relative path"),
        ("ResourceConfig.InstanceCount", "two", "SerializationException", "expected integer"),
        ("HyperParameters", ["epochs", "3"], "SerializationException", "expected map"),
    ]
    for path, value, code, text in cases:
        if code == "SerializationException":  # botocore cannot even serialize these: send the JSON signed
            status, answer = signed_post(api, "SageMaker.CreateTrainingJob", json.dumps(variant(path, value)).encode())
            error = {"Code": answer["__type"], "Message": answer["message"]}
        else:
            with pytest.raises(ClientError) as info:
                raw.create_training_job(**variant(path, value))
            error, status = info.value.response["Error"], info.value.response["ResponseMetadata"]["HTTPStatusCode"]
        assert (error["Code"], status) == (code, 400), (path, error)
        assert text in error["Message"], (path, error["Message"])
    for body, code in ((b"{not json", "SerializationException"), (b"[1, 2]", "SerializationException")):
        status, answer = signed_post(api, "SageMaker.CreateTrainingJob", body)
        assert (status, answer["__type"]) == (400, code)
    status, answer = signed_post(api, "SageMaker.CreateSpaceship", b"{}")
    assert status == 400 and answer["__type"] == "UnknownOperationException" and "CreateSpaceship" in answer["message"]
    assert code_of(lambda: client(api).describe_domain(DomainId="d-1")) == "UnknownOperationException"
    assert code_of(lambda: raw.describe_training_job(TrainingJobName="malformed")) == "ValidationException"
    names = [s["TrainingJobName"] for s in client(api).list_training_jobs(MaxResults=100)["TrainingJobSummaries"]]
    assert "malformed" not in names


def test_bad_hyperparameters_make_a_failed_job_as_sagemaker_does_and_the_waiter_fails(api, digits_small, tmp_path):
    sm = client(api)
    request = good_request(digits_small, str(tmp_path), "bad-hyperparameters", optimizer="sgdd")
    arn = sm.create_training_job(**request)["TrainingJobArn"]
    assert arn.endswith(":training-job/bad-hyperparameters")
    with pytest.raises(WaiterError) as info:
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="bad-hyperparameters",
                                                                WaiterConfig=FAST_WAIT)
    assert "Failed" in str(info.value)
    described = sm.describe_training_job(TrainingJobName="bad-hyperparameters")
    assert described["TrainingJobStatus"] == "Failed"
    assert described["FailureReason"].startswith("ClientError:") and "optimizer" in described["FailureReason"]
    check_shape(described, "DescribeTrainingJob")
    assert not (tmp_path / "bad-hyperparameters" / "output" / "model.tar.gz").exists()
    assert code_of(lambda: sm.create_training_job(**request)) == "ResourceInUse"
    # an unknown name: the waiter's failure path (ValidationException), as against SageMaker
    with pytest.raises(WaiterError) as info:
        sm.get_waiter("training_job_completed_or_stopped").wait(TrainingJobName="never-created",
                                                                WaiterConfig=FAST_WAIT)
    assert "ValidationException" in str(info.value) or "not found" in str(info.value)
    assert code_of(lambda: sm.stop_training_job(TrainingJobName="never-created")) == "ValidationException"


def test_tags_on_create_and_add_list_delete_tags_and_sagemakers_members_in_describe(api, digits_small, tmp_path):
    """What the SDK's `Estimator.attach` reads: ListTags of the job's ARN, and Describe members that
    SageMaker always returns (OutputDataConfig.KmsKeyId, ResourceConfig.VolumeSizeInGB, RoleArn)."""
    sm = client(api)
    request = good_request(digits_small, str(tmp_path), "tagged", optimizer="sgdd")  # refused: no Ray Job
    request["Tags"] = [{"Key": "team", "Value": "vision"}, {"Key": "cost", "Value": "1"}]
    request["OutputDataConfig"].pop("KmsKeyId", None)
    arn = sm.create_training_job(**request)["TrainingJobArn"]
    assert sm.list_tags(ResourceArn=arn)["Tags"] == request["Tags"]
    sm.add_tags(ResourceArn=arn, Tags=[{"Key": "cost", "Value": "2"}, {"Key": "stage", "Value": "dev"}])
    sm.delete_tags(ResourceArn=arn, TagKeys=["team"])
    tags = sm.list_tags(ResourceArn=arn)
    check_shape(tags, "ListTags")
    assert tags["Tags"] == [{"Key": "cost", "Value": "2"}, {"Key": "stage", "Value": "dev"}]
    more = [{"Key": f"k{i:02d}", "Value": str(i)} for i in range(60)]
    sm.add_tags(ResourceArn=arn, Tags=more[:50])
    sm.add_tags(ResourceArn=arn, Tags=more[50:])
    first = sm.list_tags(ResourceArn=arn, MaxResults=50)
    assert len(first["Tags"]) == 50 and first["NextToken"]
    assert first["Tags"] + sm.list_tags(ResourceArn=arn, NextToken=first["NextToken"])["Tags"] == tags["Tags"] + more
    described = sm.describe_training_job(TrainingJobName="tagged")
    assert described["OutputDataConfig"]["KmsKeyId"] == "" and described["RoleArn"] == request["RoleArn"]
    assert described["ResourceConfig"]["VolumeSizeInGB"] == request["ResourceConfig"]["VolumeSizeInGB"]
    assert described["EnableNetworkIsolation"] is False
    check_shape(described, "DescribeTrainingJob")


def test_list_filters_sorts_and_pages(api, digits_small, tmp_path):
    sm = client(api)
    for name in ("list-job-b", "list-job-a", "list-job-c"):
        if name == "list-job-c":  # botocore sends whole seconds: leave a clear second between
            time.sleep(1.5)
            middle = time.time() - 0.2
        sm.create_training_job(**good_request(digits_small, str(tmp_path), name, optimizer="nope"))
    listed = sm.list_training_jobs(NameContains="list-job", SortBy="Name", SortOrder="Descending", MaxResults=2)
    assert [s["TrainingJobName"] for s in listed["TrainingJobSummaries"]] == ["list-job-c", "list-job-b"]
    rest = sm.list_training_jobs(NameContains="list-job", SortBy="Name", SortOrder="Descending", MaxResults=2,
                                 NextToken=listed["NextToken"])
    assert [s["TrainingJobName"] for s in rest["TrainingJobSummaries"]] == ["list-job-a"] and "NextToken" not in rest
    pages = sm.get_paginator("list_training_jobs").paginate(NameContains="list-job", StatusEquals="Failed",
                                                            PaginationConfig={"PageSize": 1})
    assert sorted(s["TrainingJobName"] for p in pages for s in p["TrainingJobSummaries"]) == [
        "list-job-a", "list-job-b", "list-job-c"]
    assert sm.list_training_jobs(NameContains="list-job", StatusEquals="Completed")["TrainingJobSummaries"] == []
    after = sm.list_training_jobs(NameContains="list-job", CreationTimeAfter=middle)["TrainingJobSummaries"]
    before = sm.list_training_jobs(NameContains="list-job", CreationTimeBefore=middle)["TrainingJobSummaries"]
    assert [s["TrainingJobName"] for s in after] == ["list-job-c"]
    assert [s["TrainingJobName"] for s in before] == ["list-job-b", "list-job-a"]  # oldest first by default
    check_shape(listed, "ListTrainingJobs")


# --- real training jobs ---------------------------------------------------------------------
@pytest.mark.slow
def test_create_wait_describe_a_real_training_job(api, digits_small, tmp_path):
    sm = client(api)
    request = good_request(digits_small, str(tmp_path), "api-digits")
    for channel in request["InputDataConfig"]:  # seeded: initial weights, order and augmentation
        if channel["ChannelName"] == "train":
            channel["ShuffleConfig"] = {"Seed": 11}
    sm.create_training_job(**request)
    assert code_of(lambda: sm.create_training_job(**request)) == "ResourceInUse"
    described = wait(sm, "api-digits")
    assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
    check_shape(described, "DescribeTrainingJob")
    metrics = {m["MetricName"]: m["Value"] for m in described["FinalMetricDataList"]}
    assert metrics["validation:accuracy"] > 0.3  # 10 classes: chance is 0.1
    assert os.path.getsize(described["ModelArtifacts"]["S3ModelArtifacts"]) > 0
    steps = [t["Status"] for t in described["SecondaryStatusTransitions"]]
    assert steps == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert described["CreationTime"] <= described["TrainingStartTime"] <= described["TrainingEndTime"]
    assert described["TrainingTimeInSeconds"] >= 1 and described["BillableTimeInSeconds"] >= 1
    # the job.json the CLI writes is the record, with the API's creation time
    written = json.loads((tmp_path / "api-digits" / "output" / "job.json").read_text())
    assert written["FinalMetricDataList"][0]["Value"] == described["FinalMetricDataList"][0]["Value"]
    # the log, through CloudWatch Logs' API: SageMaker's metric lines, unchanged
    lines = read_log(api, "api-digits")
    accuracy = [float(m.group(1)) for m in map(re.compile(r"^Epoch\[\d+\] Validation-accuracy=([0-9.]+)$").match,
                                                lines) if m]
    assert len(accuracy) == 3 and accuracy[-1] == pytest.approx(metrics["validation:accuracy"], abs=1e-6)
    assert any(line.startswith("Model written to ") for line in lines)


def read_log(url, name, group="/aws/sagemaker/TrainingJobs") -> list[str]:
    """The job's log as the SageMaker SDK reads it: find the stream, then page forward."""
    logs = client(url, "logs")
    streams = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=name + "/",
                                        orderBy="LogStreamName", limit=1)["logStreams"]
    assert [s["logStreamName"].split("/")[0] for s in streams] == [name]
    lines, token = [], None
    while True:
        page = logs.get_log_events(logGroupName=group, logStreamName=streams[0][
            "logStreamName"], startFromHead=True, limit=50, **({"nextToken": token} if token else {}))
        if not page["events"]:
            return lines
        times = [e["timestamp"] for e in page["events"]]
        assert times == sorted(times)
        lines += [e["message"] for e in page["events"]]
        token = page["nextForwardToken"]


@pytest.mark.slow
def test_stop_a_running_job_keeps_its_model(api, digits_small, tmp_path):
    sm = client(api)
    sm.create_training_job(**good_request(digits_small, str(tmp_path), "api-stop", epochs="200"))
    deadline = time.time() + 300
    while not (tmp_path / "api-stop" / "output" / "metrics.json").exists() and not list(
            (tmp_path / "api-stop").rglob("checkpoint_*")):
        described = sm.describe_training_job(TrainingJobName="api-stop")
        assert described["TrainingJobStatus"] == "InProgress", described.get("FailureReason")
        if described["SecondaryStatus"] == "Training" and time.time() > described["TrainingStartTime"].timestamp() + 8:
            break
        assert time.time() < deadline
        time.sleep(1)
    sm.stop_training_job(TrainingJobName="api-stop")
    assert sm.describe_training_job(TrainingJobName="api-stop")["TrainingJobStatus"] in ("Stopping", "Stopped")
    described = wait(sm, "api-stop")
    assert (described["TrainingJobStatus"], described["SecondaryStatus"]) == ("Stopped", "Stopped")
    assert os.path.getsize(described["ModelArtifacts"]["S3ModelArtifacts"]) > 0
    assert code_of(lambda: sm.stop_training_job(TrainingJobName="api-stop")) == "ValidationException"


@pytest.mark.slow
def test_a_job_past_max_running_jobs_gets_resource_limit_exceeded(ray_cluster, digits_small, tmp_path):
    proc, url = start_api(tmp_path / "state", credentials_file(tmp_path), free_port(),
                          extra=["--max-running-jobs", "1"])
    try:
        sm = client(url)
        sm.create_training_job(**good_request(digits_small, str(tmp_path), "quota-one", epochs="200"))
        with pytest.raises(ClientError) as info:
            sm.create_training_job(**good_request(digits_small, str(tmp_path), "quota-two"))
        error = info.value.response["Error"]
        assert error["Code"] == "ResourceLimitExceeded" and "'Number of concurrent training jobs' is 1" in error[
            "Message"], error
        assert code_of(lambda: sm.describe_training_job(TrainingJobName="quota-two")) == "ValidationException"
        sm.stop_training_job(TrainingJobName="quota-one")
        assert wait(sm, "quota-one")["TrainingJobStatus"] == "Stopped"
        sm.create_training_job(**good_request(digits_small, str(tmp_path), "quota-two"))  # room again
        sm.stop_training_job(TrainingJobName="quota-two")
    finally:
        proc.terminate()
        proc.wait(30)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_the_server_restarts_mid_job_and_the_job_finishes_and_is_described(ray_cluster, digits_small, tmp_path, how):
    """SIGTERM: on the session's Ray (RAY_ADDRESS). SIGKILL to the whole process group: on the
    local Ray the API starts itself, which must outlive it, be reused, and end with `api stop`."""
    state = tmp_path / "state"
    try:
        restart_mid_job(state, digits_small, tmp_path, how)
    finally:
        if how == "SIGKILL" and (state / "cluster.json").exists():
            dashboard = json.loads((state / "cluster.json").read_text())["dashboard"]
            stopped = subprocess.run([sys.executable, "-m", "raysight", "api", "stop", "--state", str(state)],
                                     cwd=ROOT, capture_output=True, text=True, timeout=120)
            assert stopped.returncode == 0 and "Stopped the local Ray cluster" in stopped.stdout, stopped.stderr
            with pytest.raises(OSError) as refused:
                urllib.request.urlopen(dashboard + "/api/version", timeout=3)
            assert not isinstance(refused.value, urllib.error.HTTPError)  # no answer at all, not a 401


def restart_mid_job(state, digits_small, tmp_path, how):
    port = free_port()
    env = {"RAY_ADDRESS": ""} if how == "SIGKILL" else {}
    proc, url = start_api(state, credentials_file(tmp_path), port, env)
    name = f"api-restart-{how.lower()}"
    try:
        client(url).create_training_job(**good_request(digits_small, str(tmp_path), name, epochs="4"))
    finally:  # the restart under test, and no server left behind if the create failed
        os.killpg(proc.pid, getattr(signal, how))
    proc.wait(60)
    proc, url = start_api(state, credentials_file(tmp_path), port, env)
    try:
        sm = client(url)
        described = wait(sm, name)
        assert described["TrainingJobStatus"] == "Completed", described.get("FailureReason")
        assert [m["MetricName"] for m in described["FinalMetricDataList"]]
    finally:
        proc.terminate()
        proc.wait(30)
    output = proc.stdout.read()
    proc, url = start_api(state, credentials_file(tmp_path), port, env)  # once more: the record is kept
    try:
        again = client(url).describe_training_job(TrainingJobName=name)
        assert {k: v for k, v in again.items() if k != "ResponseMetadata"} == {
            k: v for k, v in described.items() if k != "ResponseMetadata"}
    finally:
        proc.terminate()
        proc.wait(30)
    if how == "SIGKILL":
        assert "Using the local Ray cluster recorded in" in output  # reused, not started anew


def test_tuning_requests_are_checked_before_anything_runs(api, digits_small, tmp_path):
    sm = client(api)
    root, counts = digits_small
    request = tuning_request(root, str(tmp_path), counts)
    request["HyperParameterTuningJobName"] = "bad-ranges"
    request["HyperParameterTuningJobConfig"]["ParameterRanges"]["ContinuousParameterRanges"][0]["MinValue"] = "0.5"
    with pytest.raises(ClientError) as info:
        sm.create_hyper_parameter_tuning_job(**request)
    assert info.value.response["Error"]["Code"] == "ValidationException"
    assert "learning_rate" in info.value.response["Error"]["Message"]
    assert code_of(lambda: sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="bad-ranges")) == \
        "ResourceNotFound"
    assert code_of(lambda: client(api, "logs").get_log_events(logGroupName="/aws/sagemaker/Nope",
                                                              logStreamName="x")) == "ResourceNotFoundException"


def create_tuning(url, digits_small, out, name, **static):
    """CreateHyperParameterTuningJob of the tiny two-job Random search under `name`."""
    sm = client(url)
    request = tuning_request(digits_small[0], str(out), digits_small[1])
    request["HyperParameterTuningJobName"] = name
    request["TrainingJobDefinition"]["StaticHyperParameters"].update(static)
    sm.create_hyper_parameter_tuning_job(**request)
    return sm, request


@pytest.mark.slow
def test_a_tuning_job_through_the_api(api, digits_small, tmp_path):
    sm, request = create_tuning(api, digits_small, tmp_path, "api-tuning")
    assert code_of(lambda: sm.create_hyper_parameter_tuning_job(**request)) == "ResourceInUse"
    deadline = time.time() + 900
    while (described := sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-tuning"))[
            "HyperParameterTuningJobStatus"] in ("InProgress", "Stopping"):  # as the SDK's wait_for_tuning_job
        assert time.time() < deadline
        time.sleep(2)
    assert described["HyperParameterTuningJobStatus"] == "Completed", described.get("FailureReason")
    check_shape(described, "DescribeHyperParameterTuningJob")
    assert described["TrainingJobStatusCounters"]["Completed"] == 2
    best = described["BestTrainingJob"]
    children = sm.list_training_jobs_for_hyper_parameter_tuning_job(
        HyperParameterTuningJobName="api-tuning", SortBy="FinalObjectiveMetricValue", SortOrder="Descending")
    check_shape(children, "ListTrainingJobsForHyperParameterTuningJob")
    assert len(children["TrainingJobSummaries"]) == 2
    assert children["TrainingJobSummaries"][0]["TrainingJobName"] == best["TrainingJobName"]
    page = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-tuning", MaxResults=1)
    assert len(page["TrainingJobSummaries"]) == 1 and page["NextToken"]
    # the children are training jobs like any other
    child = sm.describe_training_job(TrainingJobName=best["TrainingJobName"])
    assert child["TrainingJobStatus"] == "Completed" and child["TuningJobArn"] == described["HyperParameterTuningJobArn"]
    listed = [s["TrainingJobName"] for s in sm.list_training_jobs(NameContains="api-tuning-")["TrainingJobSummaries"]]
    assert sorted(listed) == sorted(s["TrainingJobName"] for s in children["TrainingJobSummaries"])
    # each child has a log stream of its own: its lines from the tuning job's shared log, untagged
    for s in children["TrainingJobSummaries"]:
        name = s["TrainingJobName"]
        lines = read_log(api, name)
        assert any(line.startswith(f"Training job {name}: ") for line in lines), lines[:20]
        assert any(re.match(r"Epoch\[1\] Validation-accuracy=[0-9.]+$", line) for line in lines), lines
        others = [o["TrainingJobName"] for o in children["TrainingJobSummaries"] if o["TrainingJobName"] != name]
        assert not [line for line in lines if line.startswith("[") or any(o in line for o in others)], lines
    shared = read_log(api, "api-tuning", group="/aws/sagemaker/HyperParameterTuningJobs")
    assert any(line.startswith(f"[{best['TrainingJobName']}] Epoch[1] Validation-accuracy=") for line in shared)
    tunings = sm.list_hyper_parameter_tuning_jobs(NameContains="api-tuning")
    check_shape(tunings, "ListHyperParameterTuningJobs")
    assert [t["HyperParameterTuningJobStatus"] for t in tunings["HyperParameterTuningJobSummaries"]] == ["Completed"]
    assert code_of(lambda: sm.stop_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-tuning")) == \
        "ValidationException"


def driver_pid(submission_prefix: str) -> int:
    """The pid of the one Ray Job driver on the session's Ray (RAY_ADDRESS) whose submission id
    starts with `submission_prefix` (the API names them raysight-<kind>-<name>-<8 hex>)."""
    from ray.job_submission import JobSubmissionClient

    drivers = [j.driver_info.pid for j in JobSubmissionClient().list_jobs()
               if (j.submission_id or "").startswith(submission_prefix) and j.driver_info and str(j.status) in (
                   "RUNNING", "JobStatus.RUNNING")]
    assert len(drivers) == 1, drivers
    return int(drivers[0])


@pytest.mark.slow
def test_a_killed_tuning_job_ends_its_running_child_too(api, digits_small, tmp_path):
    """SIGKILL to the tuning process takes its trial with it; the child must not stay InProgress."""
    sm, _ = create_tuning(api, digits_small, tmp_path, "api-killed", epochs="200")
    deadline = time.time() + 300
    while not list(tmp_path.glob("api-killed-*/checkpoints/*/checkpoint_*")):  # a child has trained an epoch
        assert time.time() < deadline
        time.sleep(1)
    [job_json] = tmp_path.glob("api-killed-*/output/job.json")
    name = job_json.parent.parent.name
    assert json.loads(job_json.read_text())["TrainingJobStatus"] == "InProgress"
    os.kill(driver_pid("raysight-tuning-api-killed-"), signal.SIGKILL)  # this job's driver, and nothing else
    deadline = time.time() + 120
    while sm.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-killed")[
            "HyperParameterTuningJobStatus"] in ("InProgress", "Stopping"):
        assert time.time() < deadline
        time.sleep(2)
    child = sm.describe_training_job(TrainingJobName=name)
    check_shape(child, "DescribeTrainingJob")
    assert child["TrainingJobStatus"] == "Failed" and "api-killed ended (Failed)" in child["FailureReason"]
    assert child["SecondaryStatusTransitions"][-1]["Status"] == "Failed"
    listed = sm.list_training_jobs_for_hyper_parameter_tuning_job(HyperParameterTuningJobName="api-killed")
    check_shape(listed, "ListTrainingJobsForHyperParameterTuningJob")
    assert "InProgress" not in [s["TrainingJobStatus"] for s in listed["TrainingJobSummaries"]]
    assert [s["TrainingJobStatus"] for s in sm.list_training_jobs(NameContains="api-killed-")[
        "TrainingJobSummaries"]] == ["Failed"]


@pytest.mark.slow
def test_the_boto3_example_script_runs_unchanged_against_the_api(api, digits_small, tmp_path):
    """jobs/boto3_training.py, with only the endpoint in the environment."""
    request = good_request(digits_small, str(tmp_path), "unused")
    path = tmp_path / "request.json"
    path.write_text(json.dumps(request))
    credentials = credentials_file(tmp_path)
    env = {**os.environ, "AWS_ENDPOINT_URL_SAGEMAKER": api, "AWS_ENDPOINT_URL_CLOUDWATCH_LOGS": api,
           "AWS_SHARED_CREDENTIALS_FILE": str(credentials)}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):  # boto3 finds the file, as on a laptop
        env.pop(key, None)
    proc = subprocess.run([sys.executable, "jobs/boto3_training.py", "--request", str(path), "--name", "boto3-example",
                           "--poll", "2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Completed" in proc.stdout and "validation:accuracy = " in proc.stdout
    assert proc.stdout.count("Validation-accuracy=") == 3
