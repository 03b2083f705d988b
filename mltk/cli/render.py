"""Putting results on stdout: a table for people, one JSON document for pipelines.

``--format human`` prints rich tables; ``json`` prints exactly one JSON
document and nothing else on stdout; ``quiet`` prints only the one value a
shell script wants (an artifact reference, a metric), or nothing.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from mltk.core.console import FORMATS, Reporter
from mltk.core.errors import UsageError

FormatOption = typer.Option("human", "--format", "-f", help="human (tables), json (one document) or quiet")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UsageError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


# Off a terminal (a pipe, a file, a CI log) there is no width to fit: rich would assume 80
# columns and cut cells short ("ci-dig…"), so tables get all the width they need there.
UNBOUNDED_WIDTH = 100_000


def stdout_console() -> Console:
    """The console human output goes to. ``markup=False``: what is printed is data (names, paths,
    descriptions such as ``[conv3x3-norm-ReLU-pool2x2]``), never rich markup to interpret."""
    fits_a_screen = sys.stdout.isatty() or bool(os.environ.get("COLUMNS"))
    return Console(file=sys.stdout, highlight=False, soft_wrap=True, markup=False,
                   width=None if fits_a_screen else UNBOUNDED_WIDTH)


def reporter_for(fmt: str) -> Reporter:
    return Reporter(check_format(fmt))


def emit(fmt: str, data: Any, human: Callable[[Console], None], quiet: str | Iterable[str] | None = None) -> None:
    """Write ``data`` in the chosen format."""
    if fmt == "json":
        sys.stdout.write(strict_json(data) + "\n")
    elif fmt == "quiet":
        if quiet is None:
            return
        lines = [quiet] if isinstance(quiet, str) else list(quiet)
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
    else:
        human(stdout_console())
    sys.stdout.flush()


def table(title: str | None, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    out = Table(title=title, title_justify="left", show_edge=False, header_style="bold")
    for column in columns:
        out.add_column(column)
    for row in rows:
        out.add_row(*(format_value(v) for v in row))
    return out


def key_values(title: str | None, pairs: Iterable[tuple[str, Any]]) -> Table:
    out = Table(title=title, title_justify="left", show_header=False, show_edge=False, box=None)
    out.add_column(style="bold")
    out.add_column()
    for key, value in pairs:
        out.add_row(key, format_value(value))
    return out


def run_rows(results: dict) -> list[tuple[str, str]]:
    """The rows every training command ends its table with: wall time (and the total over resumes), artifact, run."""
    wall = f"{results['wall_time_s']:.1f} s"
    total = results.get("wall_time_total_s")
    if results.get("resumed_from") and total is not None:
        wall += f" ({total:.1f} s with the invocations before the resume)"
    return [("wall time", wall), ("artifact", results["artifact"]), ("run", results["run_dir"])]


def format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def human_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def strict_json(data: Any) -> str:
    """``data`` as standard JSON: a NaN or infinite number becomes null, and ``undefined`` lists where and why.

    Python writes NaN as ``NaN``, which jq, JavaScript and Go refuse; a pipeline must be able to parse
    every document mltk prints.
    """
    undefined: list[dict] = []

    def clean(node: Any, where: str) -> Any:
        if isinstance(node, float) and not math.isfinite(node):
            undefined.append({"path": where or "/", "reason": f"not a finite number ({node})"})
            return None
        if isinstance(node, dict):
            return {key: clean(value, f"{where}/{key}") for key, value in node.items()}
        if isinstance(node, (list, tuple)):
            return [clean(value, f"{where}/{i}") for i, value in enumerate(node)]
        return node

    cleaned = clean(data, "")
    if undefined and isinstance(cleaned, dict):
        cleaned["undefined"] = undefined
    return json.dumps(cleaned, indent=2, default=str, allow_nan=False)

