"""The SageMaker image-classification notebook, unchanged in form, against `raysight api`.

It is the SageMaker Python SDK v2 flow of the built-in algorithm's notebooks: the image from
`image_uris.retrieve`, an `Estimator`, `set_hyperparameters`, `fit` on four channels with the
log streamed, `deploy` → `predict`, a `HyperparameterTuner`, and a `transformer`. Only the
environment differs from AWS:

    raysight api &                                   # README "Use your SageMaker code unchanged"
    export AWS_ENDPOINT_URL_SAGEMAKER=http://127.0.0.1:8090 AWS_ENDPOINT_URL_SAGEMAKER_RUNTIME=http://127.0.0.1:8090
    export AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=http://127.0.0.1:8090
    export AWS_ENDPOINT_URL_S3=http://your-s3-store:9000   # MinIO, Ceph, moto: where the data lives
    raysight digits digits/ --limit 240
    .venv-sdk/bin/python jobs/sagemaker_sdk_example.py --data digits/ --bucket my-bucket

The SDK needs its own virtual environment (`make install` makes `.venv-sdk`): `sagemaker<3`
pins a protobuf older than Ray's. Three things a notebook gets from AWS are given here instead:
`default_bucket=` (the SDK would ask STS for the account), a role ARN (it would ask IAM), and
the SDK's telemetry turned off (it calls a bucket on AWS by name). Endpoint logs
(`/aws/sagemaker/Endpoints`) are not served; training, tuning and transform logs are.
"""
import argparse
import io
import json
import os
import time

import boto3
import sagemaker
from sagemaker import image_uris
from sagemaker.estimator import Estimator
from sagemaker.inputs import ShuffleConfig, TrainingInput
from sagemaker.serializers import IdentitySerializer
from sagemaker.tuner import ContinuousParameter, HyperparameterTuner, IntegerParameter

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True, help="a `raysight digits` folder: train/, validation/, *_lst/")
parser.add_argument("--bucket", required=True, help="an S3 bucket on AWS_ENDPOINT_URL_S3 (created if missing)")
parser.add_argument("--region", default=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
parser.add_argument("--epochs", default="3")
parser.add_argument("--tuning-jobs", type=int, default=2)
args = parser.parse_args()
run = time.strftime("%H%M%S")

# --- 1. Session, image, data on S3 --------------------------------------------------------------
boto_session = boto3.Session(region_name=args.region)
# the SDK's telemetry calls an AWS bucket by name, which a machine off AWS may not reach
offline = {"SchemaVersion": "1.0", "SageMaker": {"PythonSDK": {"Modules": {"TelemetryOptOut": True}}}}
sess = sagemaker.Session(boto_session=boto_session, default_bucket=args.bucket, sagemaker_config=offline)
role = "arn:aws:iam::000000000000:role/raysight"  # a role ARN: no IAM call
training_image = image_uris.retrieve("image-classification", args.region)
print("image:", training_image)
prefix = f"ic-digits-{run}"
s3 = {channel: sess.upload_data(os.path.join(args.data, channel), args.bucket, f"{prefix}/{channel}")
      for channel in ("train", "validation", "train_lst", "validation_lst")}
num_training_samples = sum(1 for _ in open(os.path.join(args.data, "train_lst", "train.lst")))


def channel(uri, seed=None):
    # the content type AWS's "Image classification, lst format, high level" notebook declares
    return TrainingInput(uri, distribution="FullyReplicated", content_type="application/jpeg",
                         s3_data_type="S3Prefix", shuffle_config=ShuffleConfig(seed) if seed is not None else None)


# ShuffleConfig's seed makes the run repeatable: it seeds the data order, the augmentation and the
# initial weights
inputs = {name: channel(uri, seed=1 if name == "train" else None) for name, uri in s3.items()}

# --- 2. Train, with the log streamed as on SageMaker ---------------------------------------------
ic = Estimator(training_image, role, instance_count=1, instance_type="ml.m5.xlarge", volume_size=10, max_run=3600,
               input_mode="File", output_path=f"s3://{args.bucket}/{prefix}/output", sagemaker_session=sess,
               tags=[{"Key": "project", "Value": "raysight-example"}])
ic.set_hyperparameters(num_layers=20, image_shape="3,8,8", resize=9, num_classes=10,
                       num_training_samples=num_training_samples, mini_batch_size=16, epochs=args.epochs,
                       learning_rate=0.05, lr_scheduler_step="", top_k=2)
ic.fit(inputs, job_name=f"ic-digits-{run}", logs=True)
print("model:", ic.model_data)

# --- 3. Deploy and predict -----------------------------------------------------------------------
predictor = ic.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=f"ic-digits-{run}",
                      serializer=IdentitySerializer(content_type="application/x-image"))
validation = os.path.join(args.data, "validation")
samples = [(os.path.join(validation, label, name), int(label))
           for label in sorted(os.listdir(validation)) for name in sorted(os.listdir(os.path.join(validation, label)))]
right = 0
for path, label in samples:
    with open(path, "rb") as f:
        probabilities = json.loads(predictor.predict(f.read()))
    right += max(range(len(probabilities)), key=probabilities.__getitem__) == label
print(f"endpoint accuracy on {len(samples)} validation images: {right / len(samples):.2f}")
predictor.delete_model()
predictor.delete_endpoint()

# --- 4. Tune ---------------------------------------------------------------------------------------
tuner = HyperparameterTuner(ic, objective_metric_name="validation:accuracy", objective_type="Maximize",
                            hyperparameter_ranges={"learning_rate": ContinuousParameter(0.01, 0.1),
                                                   "mini_batch_size": IntegerParameter(8, 32)},
                            max_jobs=args.tuning_jobs, max_parallel_jobs=1)
tuner.fit(inputs, job_name=f"ic-tune-{run}", include_cls_metadata=False)
tuner.wait()
best = tuner.best_training_job()
print("best training job:", best, sess.describe_training_job(best)["FinalMetricDataList"])
sess.logs_for_job(best, wait=False)  # each training job of a tuning job has its own log stream
best_estimator = tuner.best_estimator()  # DescribeTrainingJob of a tuning job's child, and ListTags
print("best estimator:", best_estimator.latest_training_job.name, best_estimator.model_data,
      "role:", best_estimator.role)
print("attached tags:", Estimator.attach(f"ic-digits-{run}", sagemaker_session=sess).tags)
tuned = tuner.deploy(initial_instance_count=1, instance_type="ml.m5.large", endpoint_name=f"ic-tuned-{run}",
                     serializer=IdentitySerializer(content_type="image/png"))
with open(samples[0][0], "rb") as f:
    print("tuned endpoint answers:", len(json.loads(tuned.predict(f.read()))), "probabilities")
tuned.delete_model()
tuned.delete_endpoint()

# --- 5. Batch transform -----------------------------------------------------------------------------
transformer = ic.transformer(instance_count=1, instance_type="ml.m5.large",
                             output_path=f"s3://{args.bucket}/{prefix}/transform", accept="application/json")
transformer.transform(f"s3://{args.bucket}/{prefix}/validation/0", content_type="application/x-image",
                      job_name=f"ic-transform-{run}", wait=False)
transformer.wait()  # streams the transform job's log, as on SageMaker
outputs = boto_session.client("s3").list_objects_v2(Bucket=args.bucket, Prefix=f"{prefix}/transform/")
outs = [o["Key"] for o in outputs.get("Contents", []) if o["Key"].endswith(".out")]
print(f"transform: {len(outs)} .out files under s3://{args.bucket}/{prefix}/transform/")
body = boto_session.client("s3").get_object(Bucket=args.bucket, Key=outs[0])["Body"].read()
print("first answer:", json.load(io.BytesIO(body))[:3], "...")
