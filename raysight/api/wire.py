"""AWS JSON 1.1 as botocore speaks it: operations named by `X-Amz-Target`, bodies checked
against botocore's own service model, errors as `{"__type", "message"}` with a status code.

The checks are the server side of what botocore's `ParamValidator` does on the client, plus
the constraints it leaves to the service (max lengths, patterns, enums), with SageMaker's
message form ("1 validation error detected: Value 'x' at 'trainingJobName' failed to satisfy
constraint: ..."), so a client with `parameter_validation=False`, or no botocore at all,
gets the answer SageMaker would give.
"""
from __future__ import annotations

import functools
import json
import re
from typing import Any


class AwsError(Exception):
    """An error response: botocore raises `ClientError` with `Error.Code == code`."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code, self.message, self.status = code, message, status

    def body(self) -> dict[str, str]:
        return {"__type": self.code, "message": self.message}


def validation(message: str) -> AwsError:
    return AwsError("ValidationException", message)


def not_found(kind: str, name: str) -> AwsError:
    """What SageMaker answers for an unknown name; the waiters treat it as the end."""
    return validation(f"Requested resource not found: {kind} {name!r} does not exist")


@functools.lru_cache(maxsize=None)
def service_model(service: str):
    import botocore.session

    return botocore.session.get_session().get_service_model(service)


def operation(service: str, target_prefix: str, target: str | None):
    """The operation model an `X-Amz-Target` header names."""
    model = service_model(service)
    prefix, _, name = (target or "").partition(".")
    if prefix != target_prefix or not name:
        raise AwsError("UnknownOperationException", f"X-Amz-Target must be '{target_prefix}.<Operation>', "
                                                    f"not {target!r}")
    if name not in model.operation_names:
        raise AwsError("UnknownOperationException", f"{name} is not an operation of {model.service_name}")
    return model.operation_model(name)


def parse_body(raw: bytes, op) -> dict[str, Any]:
    """The request body, checked against the operation's input shape."""
    try:
        body = json.loads(raw or b"{}")
    except (UnicodeDecodeError, ValueError) as exc:
        raise AwsError("SerializationException", f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise AwsError("SerializationException", "the request body must be a JSON object")
    shape = op.input_shape
    if shape is None:
        return body
    types = list(_type_problems(shape, body, ""))
    if types:
        raise AwsError("SerializationException", types[0])
    problems = list(_constraint_problems(shape, body, ""))
    if problems:
        count = len(problems)
        raise validation(f"{count} validation error{'s' if count > 1 else ''} detected: " + "; ".join(problems[:10]))
    return body


JSON_TYPES = {"structure": dict, "map": dict, "list": list, "string": str, "boolean": bool, "blob": str}


def _type_ok(shape, value) -> bool:
    kind = shape.type_name
    if kind in ("integer", "long"):
        return isinstance(value, int) and not isinstance(value, bool)
    if kind in ("float", "double"):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "timestamp":
        return isinstance(value, (int, float, str)) and not isinstance(value, bool)
    return isinstance(value, JSON_TYPES.get(kind, object))


def _type_problems(shape, value, path):
    if value is None:
        return
    if not _type_ok(shape, value):
        yield f"{_where(path)}: expected {shape.type_name} ({shape.name}), got {type(value).__name__}"
        return
    for child, item, where in _children(shape, value, path):
        yield from _type_problems(child, item, where)


def _children(shape, value, path):
    if shape.type_name == "structure":
        for key, item in value.items():
            if key in shape.members:  # unknown members are ignored, as AWS services do
                yield shape.members[key], item, f"{path}.{key}" if path else key
    elif shape.type_name == "list":
        for i, item in enumerate(value):
            yield shape.member, item, f"{path}.{i + 1}.member"
    elif shape.type_name == "map":
        for key, item in value.items():
            yield shape.value, item, f"{path}.{key}"


def _where(path: str) -> str:
    return ".".join(p[:1].lower() + p[1:] for p in path.split(".")) if path else "body"


def _constraint_problems(shape, value, path):
    where = _where(path)
    meta = shape.metadata
    if shape.type_name == "structure":
        for name in shape.required_members:
            if value.get(name) is None:
                yield f"Value null at '{_where(f'{path}.{name}' if path else name)}' failed to satisfy " \
                      "constraint: Member must not be null"
    size = _size(shape, value)
    if size is not None and "min" in meta and size < meta["min"]:
        yield f"Value {_show(value)} at '{where}' failed to satisfy constraint: " + (
            f"Member must have value greater than or equal to {meta['min']}" if _numeric(shape)
            else f"Member must have length greater than or equal to {meta['min']}")
    if size is not None and "max" in meta and size > meta["max"]:
        yield f"Value {_show(value)} at '{where}' failed to satisfy constraint: " + (
            f"Member must have value less than or equal to {meta['max']}" if _numeric(shape)
            else f"Member must have length less than or equal to {meta['max']}")
    if shape.type_name == "string":
        if shape.enum and value not in shape.enum:
            values = ", ".join(shape.enum)
            yield f"Value {_show(value)} at '{where}' failed to satisfy constraint: Member must satisfy enum " \
                  f"value set: [{values if len(values) < 400 else values[:400] + ', ...'}]"
        pattern = None if _is_location(meta.get("pattern")) else _pattern(meta.get("pattern"))
        if pattern is not None and not pattern.fullmatch(value):
            yield f"Value {_show(value)} at '{where}' failed to satisfy constraint: Member must satisfy regular " \
                  f"expression pattern: {meta['pattern']}"
    if shape.type_name == "map":
        for key in value:
            yield from _constraint_problems(shape.key, key, f"{path}.key")
    for child, item, child_path in _children(shape, value, path):
        if item is not None:
            yield from _constraint_problems(child, item, child_path)


def _numeric(shape) -> bool:
    return shape.type_name in ("integer", "long", "float", "double")


def _size(shape, value):
    if _numeric(shape):
        return value
    if shape.type_name in ("string", "list", "map", "blob"):
        return len(value)
    return None


def _show(value) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return f"'{text[:80]}{'...' if len(text) > 80 else ''}'"


def _is_location(pattern: str | None) -> bool:
    """S3 URI patterns are not imposed: a self-hosted cluster reads whatever `raysight train`
    reads (s3://, file://, local paths), and `driver.prepare` checks those."""
    return bool(pattern) and ("s3://" in pattern or "https|s3" in pattern)


@functools.lru_cache(maxsize=None)
def _pattern(source: str | None):
    """AWS patterns are Java regexes; the few Python cannot compile are left unchecked."""
    if not source:
        return None
    try:
        return re.compile(source, re.DOTALL)
    except re.error:
        return None
