"""CreateEndpoint, DescribeEndpoint, UpdateEndpoint, DeleteEndpoint, ListEndpoints on Ray Serve,
and InvokeEndpoint routed to them.

Each production variant of an endpoint is one Serve application (the serving issue's
`raysight.serve.app:build`), deployed declaratively through the dashboard's Serve REST API
(`ServeSubmissionClient`, what `serve deploy` uses): the config PUT is always the union of every
endpoint's live and pending applications, so Serve's declarative state is the API's records.
An update deploys the new config's applications beside the old ones under a new generation and
switches traffic only when they answer /ping (blue/green); the old ones are removed then. There
is no background thread: an endpoint's state settles when it is described, listed or invoked,
which is what botocore's waiters do.
"""
from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from raysight import cluster
from raysight.api.models import existing, missing
from raysight.api.training import paginate
from raysight.api.wire import AwsError, validation
from raysight.cluster import gpus_per_instance
from raysight.job_request import arn

KIND = "endpoint"
ROUTE = "/raysight-endpoints"
DEPLOY_LIMIT_S = 900  # a variant not answering /ping by then fails the deployment
FORWARDED = ("content-type", "accept", "x-amzn-sagemaker-custom-attributes", "x-amzn-sagemaker-inference-id",
             "x-amzn-sagemaker-target-model")


def _ping(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, ""
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read()).get("message", "")
        except ValueError:
            return exc.code, ""
    except OSError as exc:
        return 0, str(exc)


class Endpoints:
    def __init__(self, state, models, dashboard: str, serve_port: int, replica_cpus: float, echo=print):
        self.state, self.models = state, models
        self.dashboard, self.serve_port, self.replica_cpus = dashboard, serve_port, replica_cpus
        self.lock = threading.RLock()
        self._client = None
        self._proxy: str | None = None
        if self.state.resources(KIND):  # a restarted server: Serve's apps are these records again
            try:
                self._apply()
                echo(f"Re-attached to {len(self.state.resources(KIND))} endpoint(s) on Ray Serve")
            except Exception as exc:  # noqa: BLE001 - the cluster may be down; describe says so later
                echo(f"Could not re-deploy the recorded endpoints yet: {exc}")

    # -- Ray Serve ---------------------------------------------------------------------------
    def client(self):
        if self._client is None:
            from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

            self._client = ServeSubmissionClient(self.dashboard)
        return self._client

    def _apply(self) -> None:
        """PUT the Serve config of every endpoint's applications, live and pending."""
        apps = []
        for record in self.state.resources(KIND):
            meta = record["raysight"]
            for deployment in (meta.get("live"), meta.get("pending")):
                apps += [self._serve_app(a) for a in (deployment or {}).get("apps", [])]
        self.client().deploy_applications({"http_options": {"host": "127.0.0.1", "port": self.serve_port},
                                           "applications": apps})

    def _serve_app(self, app: dict[str, Any]) -> dict[str, Any]:
        return {"name": app["app"], "route_prefix": app["route"], "import_path": "raysight.serve.app:build",
                "runtime_env": cluster.runtime_env(),  # S3 settings, confinement, plugins, the setup hook
                "args": {"model": app["model"], "name": app["endpoint"], "variant": app["variant"],
                         "replicas": app["replicas"], "cpus_per_replica": self.replica_cpus,
                         "gpus_per_replica": 1 if app["gpus"] else 0}}

    def proxy(self) -> str:
        """Serve's HTTP proxy, as Serve reports it (a running Serve keeps its first port)."""
        if self._proxy is None:
            options = self.client().get_serve_details().get("http_options") or {}
            host = urllib.parse.urlparse(self.dashboard).hostname or "127.0.0.1"
            self._proxy = f"http://{host}:{options.get('port') or self.serve_port}"
        return self._proxy

    def _applications(self, name: str, config: dict[str, Any], generation: int) -> list[dict[str, Any]]:
        apps = []
        for v in config["ProductionVariants"]:
            model = self.models.model(v["ModelName"])
            apps.append({"app": f"{name}.{v['VariantName']}.{generation}", "endpoint": name,
                         "route": f"{ROUTE}/{name}/{generation}/{v['VariantName']}", "variant": v["VariantName"],
                         "weight": float(v.get("InitialVariantWeight", 1.0)), "replicas": int(v["InitialInstanceCount"]),
                         "gpus": gpus_per_instance(v.get("InstanceType") or "") > 0,
                         "model": model["PrimaryContainer"]["ModelDataUrl"],
                         "image": model["PrimaryContainer"].get("Image", "")})
        return apps

    # -- records -----------------------------------------------------------------------------
    def _record(self, name: str) -> dict[str, Any]:
        record = self.state.resource(KIND, name)
        if record is None:
            raise missing("endpoint", name)
        return record

    def _deploy(self, record: dict[str, Any], config: dict[str, Any], status: str) -> None:
        meta = record["raysight"]
        meta["generation"] += 1
        meta["pending"] = {"config": config["EndpointConfigName"], "started": time.time(),
                           "apps": self._applications(record["EndpointName"], config, meta["generation"])}
        record.update(EndpointStatus=status, LastModifiedTime=time.time())
        record.pop("FailureReason", None)
        self.state.replace_resource(KIND, record["EndpointName"], record)
        try:
            self._apply()
        except Exception as exc:  # noqa: BLE001 - Serve refused the config: this endpoint's deployment fails
            self._end_pending(record, f"Ray Serve refused the deployment: {exc}")

    def _end_pending(self, record: dict[str, Any], reason: str | None) -> None:
        """The pending deployment is ready (reason None) or has failed; either way one is left."""
        meta = record["raysight"]
        pending, meta["pending"] = meta["pending"], None
        if reason is None:
            meta["live"] = pending
            record["EndpointConfigName"] = pending["config"]
            record["EndpointStatus"] = "InService"
        else:
            record["FailureReason"] = reason[:1024]
            # a failed update rolls back: the old variants still answer, as SageMaker's do
            record["EndpointStatus"] = "InService" if meta.get("live") else "Failed"
        record["LastModifiedTime"] = time.time()
        self.state.replace_resource(KIND, record["EndpointName"], record)
        try:
            self._apply()
        except Exception as exc:  # noqa: BLE001 - the next settle puts it again
            print(f"Serve config not applied after {record['EndpointName']} settled: {exc}")

    def _settle(self, name: str, wait: bool = True) -> dict[str, Any]:
        """The endpoint's record, a pending deployment or deletion carried on as far as Serve
        has got. `wait=False` (InvokeEndpoint): if another request is settling it, answer from
        the record as it is, since its live variants serve meanwhile."""
        if not self.lock.acquire(blocking=wait):
            return self._record(name)
        try:
            return self._settle_held(name)
        finally:
            self.lock.release()

    def _settle_held(self, name: str) -> dict[str, Any]:
        record = self._record(name)
        pending = record["raysight"].get("pending")
        if not pending and record["EndpointStatus"] != "Deleting":
            return record
        statuses = {n: a.get("status") for n, a in
                    (self.client().get_serve_details().get("applications") or {}).items()}
        if record["EndpointStatus"] == "Deleting":
            if not set(statuses) & set(record["raysight"].get("deleting") or []):
                self.state.remove_resource(KIND, name)
                raise missing("endpoint", name)
            return record
        problems, ready = [], True
        for app in pending["apps"]:
            status = statuses.get(app["app"])
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                problems.append(f"variant {app['variant']}: Ray Serve application {status}")
                continue
            if status != "RUNNING":
                ready = False
                continue
            code, message = _ping(self.proxy() + app["route"] + "/ping")
            if code == 503 and message and message != "model is loading":
                problems.append(f"variant {app['variant']}: the model at {app['model']} cannot be loaded: {message}")
            elif code != 200:
                ready = False
        if not problems and not ready and time.time() - pending["started"] > DEPLOY_LIMIT_S:
            problems.append(f"the variants did not answer /ping within {DEPLOY_LIMIT_S} s")
        if problems or ready:
            self._end_pending(record, "; ".join(problems) or None)
        return record

    # -- operations --------------------------------------------------------------------------
    def create(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        config = self.models.config(body["EndpointConfigName"])
        now = time.time()
        record = {"EndpointName": name, "EndpointArn": arn("endpoint", name),
                  "EndpointConfigName": body["EndpointConfigName"], "EndpointStatus": "Creating",
                  "CreationTime": now, "LastModifiedTime": now,
                  "raysight": {"generation": 0, "live": None, "pending": None}}
        with self.lock:
            self._applications(name, config, 0)  # every model still exists, before anything is recorded
            if not self.state.add_resource(KIND, name, record):
                raise existing("endpoint", name)
            self._deploy(record, config, "Creating")
        return {"EndpointArn": record["EndpointArn"]}

    def update(self, body: dict[str, Any]) -> dict[str, Any]:
        name = body["EndpointName"]
        with self.lock:
            record = self._settle(name)
            if record["EndpointStatus"] != "InService":
                raise validation(f'Cannot update in-progress endpoint "{record["EndpointArn"]}".'
                                 if record["EndpointStatus"] in ("Creating", "Updating") else
                                 f'Cannot update endpoint "{record["EndpointArn"]}" in status '
                                 f'{record["EndpointStatus"]}; delete it and create it again.')
            self._deploy(record, self.models.config(body["EndpointConfigName"]), "Updating")
        return {"EndpointArn": record["EndpointArn"]}

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        """`Deleting` until Serve has removed its applications; then it is gone (the waiter's
        `endpoint_deleted` passes on the ValidationException that follows)."""
        with self.lock:
            record = self._record(body["EndpointName"])
            meta = record["raysight"]
            if record["EndpointStatus"] != "Deleting":
                meta["deleting"] = [a["app"] for d in (meta.get("live"), meta.get("pending")) if d for a in d["apps"]]
                meta.update(live=None, pending=None)
                record.update(EndpointStatus="Deleting", LastModifiedTime=time.time())
                self.state.replace_resource(KIND, record["EndpointName"], record)
                self._apply()  # its applications are no longer in the config: Serve deletes them
        return {}

    def describe(self, body: dict[str, Any]) -> dict[str, Any]:
        return self.public(self._settle(body["EndpointName"]))

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        rows = []
        for record in self.state.resources(KIND):
            if record["raysight"].get("pending") or record["EndpointStatus"] == "Deleting":
                try:
                    record = self._settle(record["EndpointName"])
                except AwsError:
                    continue  # deleted meanwhile
            rows.append({k: record[k] for k in ("EndpointName", "EndpointArn", "CreationTime",
                                                "LastModifiedTime", "EndpointStatus")})
        return paginate(rows, body, "Endpoints", {"Name": "EndpointName", "CreationTime": "CreationTime"},
                        name_key="EndpointName", status_key="EndpointStatus")

    @staticmethod
    def public(record: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in record.items() if k != "raysight"}
        live = record["raysight"].get("live") or {}
        out["ProductionVariants"] = [{
            "VariantName": a["variant"], "CurrentWeight": a["weight"], "DesiredWeight": a["weight"],
            "CurrentInstanceCount": a["replicas"], "DesiredInstanceCount": a["replicas"],
            "DeployedImages": [{"SpecifiedImage": a["image"], "ResolvedImage": a["image"],
                                "ResolutionTime": live["started"]}]} for a in live.get("apps", [])]
        if record["raysight"].get("pending"):
            out["PendingDeploymentSummary"] = {"EndpointConfigName": record["raysight"]["pending"]["config"],
                                               "StartTime": record["raysight"]["pending"]["started"]}
        return out

    # -- InvokeEndpoint ----------------------------------------------------------------------
    def route(self, name: str, target_variant: str | None) -> dict[str, Any] | str:
        """The application a request goes to, or the ValidationError text."""
        try:
            record = self._settle(name, wait=False)
        except Exception:  # noqa: BLE001 - the runtime's own words for any unknown endpoint
            return f"Endpoint {name} of account 000000000000 not found."
        apps = (record["raysight"].get("live") or {}).get("apps") or []
        if not apps:
            return f"Endpoint {name} is {record['EndpointStatus']}: it has no variant in service yet."
        if target_variant:
            chosen = [a for a in apps if a["variant"] == target_variant]
            if not chosen:
                return (f"The variant {target_variant!r} is not a variant of endpoint {name} "
                        f"({', '.join(a['variant'] for a in apps)}).")
            return chosen[0]
        return random.choices(apps, weights=[a["weight"] for a in apps])[0]

    def forward(self, app: dict[str, Any], headers: dict[str, str], body: bytes, timeout: float = 75.0):
        """(status, body, headers) of the variant's /invocations."""
        sent = {k: v for k, v in headers.items() if k in FORWARDED}
        request = urllib.request.Request(self.proxy() + app["route"] + "/invocations", data=body,
                                         headers=sent, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, response.read(), dict(response.headers.items())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read(), dict(exc.headers.items())
