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

    Fields are tab-separated and stripped of spaces, as im2rec reads them; a UTF-8 BOM and
    CRLF line ends are accepted and blank lines skipped. A line with fewer than 3 fields
    is a problem, never skipped silently (MXNet's parsers drop it, and the image with it);
    every problem is collected and raised together with its line number.
    """
    entries: list[ListEntry] = []
    problems: list[str] = []
    seen: dict[int, int] = {}
    for lineno, line in enumerate(text.removeprefix("\ufeff").splitlines(), start=1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.rstrip("\r\n").split("\t")]
        where = f"{source} line {lineno}"
        if len(fields) < 3:
            problems.append(f"{where}: needs an index, at least one label and a path separated by tabs, "
                            f"got {len(fields)} field(s)")
            continue
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
