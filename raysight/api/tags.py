"""AddTags, ListTags, DeleteTags, and the `Tags` of every Create*: stored per ARN, as SageMaker
keeps them. The SDK's `Estimator.attach` (and so `HyperparameterTuner.best_estimator`) reads a
job's tags with ListTags."""
from __future__ import annotations

from typing import Any

from raysight.api.wire import validation

KIND = "tags"  # a resource row per ARN: {"Tags": [{"Key", "Value"}, ...]}


class Tags:
    def __init__(self, state):
        self.state = state

    def _get(self, arn: str) -> list[dict[str, str]]:
        return (self.state.resource(KIND, arn.lower()) or {}).get("Tags", [])

    def _put(self, arn: str, tags: list[dict[str, str]]) -> None:
        if not self.state.add_resource(KIND, arn.lower(), {"Tags": tags}):
            self.state.replace_resource(KIND, arn.lower(), {"Tags": tags})

    def add(self, body: dict[str, Any]) -> dict[str, Any]:
        """New keys are added, existing keys get the new value (SageMaker's AddTags)."""
        merged = {t["Key"]: t.get("Value", "") for t in self._get(body["ResourceArn"])}
        merged.update({t["Key"]: t.get("Value", "") for t in body["Tags"]})
        tags = [{"Key": k, "Value": v} for k, v in merged.items()]
        self._put(body["ResourceArn"], tags)
        return {"Tags": tags}

    def list(self, body: dict[str, Any]) -> dict[str, Any]:
        """In the order they were added; MaxResults and NextToken page through them."""
        tags = self._get(body["ResourceArn"])
        try:
            start = int(body.get("NextToken") or 0)
        except ValueError:
            raise validation(f"Invalid pagination token {body.get('NextToken')!r}") from None
        size = int(body.get("MaxResults") or 50)
        page = {"Tags": tags[start:start + size]}
        if start + size < len(tags):
            page["NextToken"] = str(start + size)
        return page

    def delete(self, body: dict[str, Any]) -> dict[str, Any]:
        gone = set(body["TagKeys"])
        self._put(body["ResourceArn"], [t for t in self._get(body["ResourceArn"]) if t["Key"] not in gone])
        return {}

    def created(self, body: dict[str, Any], answer: dict[str, Any]) -> None:
        """After a Create* that carried `Tags`: keep them under the ARN it answered."""
        arns = [v for k, v in answer.items() if k.endswith("Arn") and isinstance(v, str)]
        if body.get("Tags") and arns:
            self.add({"ResourceArn": arns[0], "Tags": body["Tags"]})
