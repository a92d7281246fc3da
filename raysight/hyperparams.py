"""Declarative hyperparameter rows and their parsing from SageMaker's string map.

Each algorithm lists its rows once (algorithms/base.py: shared rows, extended);
the same rows drive validation, `raysight hyperparameters` and the README's tables
(tests/test_docs.py checks they agree), and tuning (`tunable`: which ranges tune.py
accepts).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

from raysight.errors import ClientError

_MISSING = object()


@dataclass(frozen=True)
class Param:
    name: str
    type: str  # "int", "float", "str", "bool", or "custom"
    default: Any = None
    required: bool = False
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    parser: Callable[[str], Any] | None = field(default=None, compare=False)
    tunable: str | None = None  # SageMaker's range kind for it: "Continuous" | "Integer" | "Categorical"
    doc: str = ""  # one line, shown by `raysight hyperparameters`

    def range_text(self) -> str:
        if self.type == "bool":
            return "True or False"
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        lo = "(" if self.min_exclusive else "["
        hi = ")" if self.max_exclusive else "]"
        if self.min is not None and self.max is not None:
            return f"within {lo}{_fmt(self.min)}, {_fmt(self.max)}{hi}"
        if self.min is not None:
            return (">" if self.min_exclusive else ">=") + " " + _fmt(self.min)
        if self.max is not None:
            return ("<" if self.max_exclusive else "<=") + " " + _fmt(self.max)
        return "any value"

    def parse(self, raw: Any) -> Any:
        """Parse one string value; raise ValueError with a message naming the rule."""
        text = str(raw).strip()
        if self.parser is not None:
            value = self.parser(text)
        elif self.type == "int":
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"must be an integer, got '{raw}'") from None
            if not number.is_integer():
                raise ValueError(f"must be an integer, got '{raw}'")
            value = int(number)
        elif self.type == "float":
            try:
                value = float(text)
            except ValueError:
                raise ValueError(f"must be a number, got '{raw}'") from None
            if math.isnan(value) or math.isinf(value):
                raise ValueError(f"must be a finite number, got '{raw}'")
        elif self.type == "bool":
            lowered = text.lower()
            if lowered not in ("true", "false"):
                raise ValueError(f"must be True or False, got '{raw}'")
            value = lowered == "true"
        else:
            value = text
        self.check(value, shown=raw)
        return value

    def check(self, value: Any, shown: Any = None) -> None:
        """Raise ValueError unless `value` is allowed; `shown` is what the user wrote."""
        shown = value if shown is None else shown
        if self.choices is not None:
            if value not in self.choices:
                raise ValueError(f"must be {self.range_text()}, got '{shown}'")
            return
        if self.type not in ("int", "float") or (self.min is None and self.max is None):
            return
        too_low = self.min is not None and (value <= self.min if self.min_exclusive else value < self.min)
        too_high = self.max is not None and (value >= self.max if self.max_exclusive else value > self.max)
        if too_low or too_high:
            raise ValueError(f"must be {self.range_text()}, got '{shown}'")


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


# Injected by SageMaker's tuner; accepted and ignored by both built-ins.
TUNING_OBJECTIVE = "_tuning_objective_metric"


def parse_hyperparameters(schema: list[Param], raw: dict[str, Any] | None) -> dict[str, Any]:
    """Parse SageMaker's string→string map against `schema`.

    Returns every schema name (defaults filled in). Raises ClientError listing
    every problem at once, so a user fixes a request in one round trip.
    """
    raw = dict(raw or {})
    by_name = {p.name: p for p in schema}
    problems: list[str] = []
    unexpected = sorted(k for k in raw if k not in by_name and k != TUNING_OBJECTIVE)
    for name in unexpected:
        problems.append(f"Additional hyperparameters are not allowed ('{name}' was unexpected)")
    values: dict[str, Any] = {}
    for p in schema:
        if p.name in raw and raw[p.name] is not None:
            try:
                values[p.name] = p.parse(raw[p.name])
            except ValueError as exc:
                problems.append(f"hyperparameter '{p.name}' {exc}")
        elif p.required:
            problems.append(f"Missing required hyperparameter '{p.name}'")
        else:
            values[p.name] = p.default
    if problems:
        raise ClientError(problems)
    return values


def schema_table(schema: list[Param]) -> str:
    """Markdown table of a schema: used by `raysight hyperparameters` and the docs."""
    lines = ["| Name | Required | Type | Valid values | Default | Tunable | Description |",
             "|---|---|---|---|---|---|---|"]
    for p in schema:
        if p.default is None or p.default == ():
            default = "–"
        elif isinstance(p.default, tuple):  # shown as the user writes it, e.g. 3,224,224
            default = ",".join(map(str, p.default))
        else:
            default = str(p.default)
        lines.append(f"| {p.name} | {'yes' if p.required else 'no'} | {p.type} | {p.range_text()} | {default} "
                     f"| {p.tunable or '–'} | {p.doc} |")
    return "\n".join(lines)


def unit(name: str, default, doc: str, tunable: str | None = None, **kw) -> Param:
    """A float row in [0, 1] (bounds may be made exclusive through **kw)."""
    return Param(name, "float", default, min=0.0, max=1.0, tunable=tunable, doc=doc, **kw)


def parse_epoch_list(text: str) -> tuple[int, ...]:
    if not text:
        return ()
    try:
        steps = tuple(int(x) for x in text.replace(" ", "").split(",") if x)
    except ValueError:
        raise ValueError(f"must be a comma-separated list of epochs such as '10, 20', got '{text}'") from None
    if any(s < 1 for s in steps) or list(steps) != sorted(set(steps)):
        raise ValueError(f"must list increasing epoch numbers >= 1, got '{text}'")
    return steps
