"""SageMaker code, unchanged, against `raysight api`: only the endpoint differs, and botocore
reads it from the environment.

    raysight api --local-root "$PWD" &               # once (local data: allow this folder); README "Security"
    export AWS_ENDPOINT_URL_SAGEMAKER=http://127.0.0.1:8090 AWS_ENDPOINT_URL_CLOUDWATCH_LOGS=http://127.0.0.1:8090
    python jobs/boto3_training.py                    # after `make demo` exported the digits

It creates the training job in jobs/image-classification-digits.json under a fresh name, waits
with boto3's own waiter, prints the final metrics and the model's location, then the job's log
from CloudWatch Logs' API. Credentials are whatever boto3 finds (~/.aws/credentials, AWS_*).
"""
import argparse
import json
import os
import time

import boto3

parser = argparse.ArgumentParser()
parser.add_argument("--request", default=os.path.join(os.path.dirname(__file__), "image-classification-digits.json"))
parser.add_argument("--name", default=f"digits-{int(time.time())}")
parser.add_argument("--poll", type=int, default=10, help="seconds between DescribeTrainingJob calls")
args = parser.parse_args()

request = json.load(open(args.request))
request["TrainingJobName"] = args.name
# the API's jobs run in a working directory of their own: local paths must be absolute
request["OutputDataConfig"]["S3OutputPath"] = os.path.abspath(request["OutputDataConfig"]["S3OutputPath"]) \
    if "://" not in request["OutputDataConfig"]["S3OutputPath"] else request["OutputDataConfig"]["S3OutputPath"]
for channel in request["InputDataConfig"]:
    source = channel["DataSource"]["S3DataSource"]
    source["S3Uri"] = source["S3Uri"] if "://" in source["S3Uri"] else os.path.abspath(source["S3Uri"])

sagemaker = boto3.client("sagemaker", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
print(sagemaker.create_training_job(**request)["TrainingJobArn"])
sagemaker.get_waiter("training_job_completed_or_stopped").wait(
    TrainingJobName=args.name, WaiterConfig={"Delay": args.poll, "MaxAttempts": 8640})
job = sagemaker.describe_training_job(TrainingJobName=args.name)
for step in job["SecondaryStatusTransitions"]:
    print(f"{step['StartTime']:%H:%M:%S} {step['Status']:12s} {step.get('StatusMessage', '')}")
print(job["TrainingJobStatus"], job.get("FailureReason", ""))
for metric in job["FinalMetricDataList"]:
    print(f"{metric['MetricName']} = {metric['Value']:.4f}")
print("model:", job["ModelArtifacts"]["S3ModelArtifacts"])

logs = boto3.client("logs", region_name=os.environ.get("AWS_DEFAULT_REGION", "us-east-1"))
group = "/aws/sagemaker/TrainingJobs"
stream = logs.describe_log_streams(logGroupName=group, logStreamNamePrefix=args.name + "/")["logStreams"][0]
token = None
while True:
    page = logs.get_log_events(logGroupName=group, logStreamName=stream["logStreamName"], startFromHead=True,
                               **({"nextToken": token} if token else {}))
    if not page["events"]:
        break
    for event in page["events"]:
        if event["message"].startswith("Epoch["):
            print(event["message"])
    token = page["nextForwardToken"]
raise SystemExit(0 if job["TrainingJobStatus"] == "Completed" else 1)
