"""MXNet `.lst` list files: `index \\t label... \\t relative/path` per line."""
from __future__ import annotations

from dataclasses import dataclass

from raysight.errors import ClientError


@dataclass(frozen=True)
class ListEntry:
    index: int
    labels: tuple[float, ...]
    path: str


def parse_lst(text: str, source: str = "<lst>") -> list[ListEntry]:
    """Parse a `.lst` file; `source` names the file in error messages.

    Lines with fewer than 3 fields are skipped (as MXNet's parsers do); every other
    problem is collected and raised together with its line number.
    """
    entries: list[ListEntry] = []
    problems: list[str] = []
    seen: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        if len(fields) < 3:
            continue
        where = f"{source} line {lineno}"
        try:
            index = int(float(fields[0]))
        except ValueError:
            problems.append(f"{where}: index '{fields[0]}' is not a number")
            continue
        try:
            labels = tuple(float(x) for x in fields[1:-1])
        except ValueError:
            problems.append(f"{where}: labels {fields[1:-1]} must be numbers")
            continue
        if index in seen:
            problems.append(f"{where}: index {index} repeats line {seen[index]}")
            continue
        seen[index] = lineno
        entries.append(ListEntry(index, labels, fields[-1]))
        if len(problems) >= 20:
            break
    if problems:
        raise ClientError(problems)
    if not entries:
        raise ClientError(f"{source}: no entries (expected 'index<TAB>label<TAB>path' lines)")
    return entries


def format_lst(entries) -> str:
    """Write entries the way MXNet's im2rec.py does (labels as %f)."""
    lines = []
    for e in entries:
        labels = "\t".join(f"{x:f}" for x in e.labels)
        lines.append(f"{e.index}\t{labels}\t{e.path}")
    return "\n".join(lines) + "\n"
