"""Deploying endpoints the other ways a user does: `serve run` of each shipped Serve config, and
a model on S3 (moto), watched while it loads."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml
from botocore.exceptions import ClientError

from tests.conftest import BUCKET, ROOT, free_port
from tests.test_serve import OD, direct, encode, make_model, ping, post, runtime, same_answer

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("config,algorithm", [("image_classification.yaml", "image-classification"),
                                              ("object_detection.yaml", OD.name)])
def test_serve_run_of_each_shipped_config_answers(ray_cluster, tmp_path, config, algorithm):
    with open(os.path.join(ROOT, "serve_configs", config)) as f:
        spec = yaml.safe_load(f)
    model = make_model(tmp_path / "model.tar.gz", algorithm)
    port = free_port()
    spec["http_options"] = {"host": "127.0.0.1", "port": port}
    spec["applications"][0]["args"]["model"] = model  # everything else exactly as shipped
    path = tmp_path / config
    path.write_text(yaml.safe_dump(spec))
    name = spec["applications"][0]["args"]["name"]
    proc = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), "serve"), "run", str(path)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        deadline = time.time() + 240
        while ping(port) != 200:
            assert proc.poll() is None, proc.stdout.read()[-3000:]
            assert time.time() < deadline, "the config's endpoint never became ready"
            time.sleep(1)
        body = encode("JPEG", size=(64, 48))
        status, _, payload = post(port, body, "image/jpeg")
        assert status == 200 and same_answer(json.loads(payload), json.loads(direct(model, body)))
        answer = runtime(port).invoke_endpoint(EndpointName=name, ContentType="image/jpeg", Body=body)
        assert json.loads(answer["Body"].read()) == json.loads(payload)
    finally:
        from ray import serve

        os.killpg(proc.pid, signal.SIGINT)  # `serve run` deletes its apps on Ctrl-C
        proc.communicate(timeout=120)
        serve.shutdown()  # it ran on the shared Ray: leave no Serve behind


def test_a_model_on_s3_is_not_ready_until_loaded_then_answers(ray_cluster, s3, tmp_path):
    """A large model (SSD on VGG-16 at full width, 88 MB) from the moto endpoint: between the
    deployment starting and the model being loaded, /ping is 503 and boto3 gets
    ModelNotReadyException; then both answer."""
    from ray import serve

    local = make_model(tmp_path / "vgg.tar.gz", OD.name, base_network="vgg-16", raysight_width_multiplier="1")
    s3.upload_file(local, BUCKET, "models/vgg.tar.gz")
    uri = f"s3://{BUCKET}/models/vgg.tar.gz"
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        from raysight.serve import app

        handle = serve.run(app.build({"model": uri, "name": "vgg"}), name="vgg", route_prefix="/")
        client = runtime(port)
        with pytest.raises(ClientError) as e:
            client.invoke_endpoint(EndpointName="vgg", ContentType="image/jpeg", Body=encode("JPEG"))
        assert e.value.response["Error"]["Code"] == "ModelNotReadyException"
        assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 429
        assert ping(port) == 503
        assert handle.ready.remote().result(timeout_s=300)["error"] is None  # waits until loaded
        assert ping(port) == 200
        answer = client.invoke_endpoint(EndpointName="vgg", ContentType="image/jpeg", Body=encode("JPEG"))
        assert "prediction" in json.loads(answer["Body"].read())
    finally:
        serve.shutdown()
