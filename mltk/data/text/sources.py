"""Text corpora and prompt files in their official layouts, read into plain examples.

A text source is ``FORMAT:PATH`` or a bare ``PATH`` whose format is recognised
from its extension and header::

    jigsaw:train.csv       Kaggle Jigsaw schema: comment_text + toxic (0/1, -1 = unscored),
                           or the unintended-bias schema: comment_text + target (toxic if >= 0.5)
    davidson:labeled.csv   Davidson et al. tweets: tweet + class (0 hate, 1 offensive -> toxic; 2 neither)
    rtp:prompts.jsonl      RealToxicityPrompts: prompt.text (+ continuation.text), toxic if the
                           Perspective toxicity of the prompt is >= 0.5
    labelled:data.csv      any CSV or JSONL with ``text`` and ``label`` (0/1, or toxic/non-toxic)
    text:corpus.txt        plain UTF-8 text, one example per non-blank line

Every reader returns :class:`TextExample` (text, label 1 = toxic / 0 = not /
None = unlabelled). :func:`in_slice` cuts a corpus into disjoint, seeded parts
by hashing each text, so the same sentence always lands in the same part, in
every file and every run (duplicated tweets cannot leak across parts).

:func:`read_prompts` reads a generation prompt file (RealToxicityPrompts JSONL,
JSONL with ``prompt`` or ``text``, or one prompt per line) and refuses a file
with malformed lines, naming every bad line, instead of skipping them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Iterable
from pathlib import Path

from mltk.core.errors import DataMissingError
from mltk.core.paths import data_root

FORMATS = ("jigsaw", "davidson", "rtp", "labelled", "text")
TOXIC_LABELS = {"1": 1, "toxic": 1, "true": 1, "0": 0, "non-toxic": 0, "nontoxic": 0, "false": 0}
MAX_LISTED_PROBLEMS = 8


class TextDataError(DataMissingError):
    """A text file that is missing, in an unknown layout, or has malformed rows (exit code 3)."""


@dataclasses.dataclass(frozen=True)
class TextExample:
    text: str
    label: int | None  # 1 toxic, 0 non-toxic, None unlabelled


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    line: int  # 1-based line of the prompt file
    toxicity: float | None = None  # the prompt's own score where the file gives one (RTP)
    meta: dict = dataclasses.field(default_factory=dict)  # fields carried to the output records


# ---------------------------------------------------------------- corpora


def read_source(source: str, *, data_dir: str | Path | None = None) -> list[TextExample]:
    """The examples of one ``FORMAT:PATH`` (or bare ``PATH``) source."""
    fmt, path = split_source(source, data_dir=data_dir)
    readers = {"jigsaw": read_jigsaw_csv, "davidson": read_davidson_csv, "rtp": read_rtp_jsonl,
               "labelled": read_labelled, "text": read_plain_text}
    return readers[fmt](path)


def split_source(source: str, *, data_dir: str | Path | None = None) -> tuple[str, Path]:
    """(format, path) of a source string; the format is guessed from the file when not given."""
    head, sep, rest = source.partition(":")
    if sep and head in FORMATS:
        return head, locate(rest, data_dir=data_dir, source=source)
    path = locate(source, data_dir=data_dir, source=source)
    return guess_format(path), path


def locate(name: str | Path, *, data_dir: str | Path | None = None, source: str | None = None) -> Path:
    """An existing file or folder: ``name`` itself, else relative to ``data_dir`` (default ``$MLTK_DATA``)."""
    path = Path(name).expanduser()
    if path.exists() or path.is_absolute():
        if not path.exists():
            raise TextDataError(f"{source or name}: no such file", hint="check the path")
        return path
    root = Path(data_dir).expanduser() if data_dir else data_root()
    if (root / path).exists():
        return root / path
    raise TextDataError(f"{source or name}: no such file here or under {root}",
                        hint="give an absolute path, or set data.data_dir (or $MLTK_DATA) to the folder holding it")


def guess_format(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return "text"
    if suffix == ".csv":
        header = _csv_header(path)
        if "comment_text" in header:
            return "jigsaw"
        if "tweet" in header and "class" in header:
            return "davidson"
        if "text" in header and "label" in header:
            return "labelled"
        raise TextDataError(f"{path}: CSV columns {', '.join(header) or 'none'} match no known layout",
                            hint="expected comment_text+toxic (Jigsaw), tweet+class (Davidson) or text+label; "
                                 "or name the format: labelled:PATH")
    if suffix in (".jsonl", ".json"):
        first = _first_json_line(path)
        if isinstance(first.get("prompt"), dict):
            return "rtp"
        if "text" in first and "label" in first:
            return "labelled"
        raise TextDataError(f"{path}: JSONL records with keys {', '.join(first)} match no known layout",
                            hint="expected RealToxicityPrompts records or {text, label}")
    raise TextDataError(f"{path}: cannot tell the format from the extension {suffix or '(none)'}",
                        hint=f"prefix the path with one of {', '.join(f + ':' for f in FORMATS)}")


def read_jigsaw_csv(path: Path) -> list[TextExample]:
    rows = _csv_rows(path)
    header = rows[0].keys() if rows else []
    if "comment_text" not in header:
        raise TextDataError(f"{path}: no comment_text column (columns: {', '.join(header)})",
                            hint="this is not a Jigsaw CSV")
    out = []
    for number, row in enumerate(rows, start=2):
        text = (row.get("comment_text") or "").strip()
        if "target" in row:
            label = int(_float(row["target"], path, number, "target") >= 0.5)
        elif "toxic" in row:
            value = _float(row["toxic"], path, number, "toxic")
            label = None if value < 0 else int(value >= 0.5)  # Kaggle's test labels mark unscored rows -1
        else:
            label = None
        if text:
            out.append(TextExample(text, label))
    return out


def read_davidson_csv(path: Path) -> list[TextExample]:
    rows = _csv_rows(path)
    if rows and not {"tweet", "class"} <= set(rows[0]):
        raise TextDataError(f"{path}: expected the columns tweet and class (columns: {', '.join(rows[0])})")
    out = []
    for number, row in enumerate(rows, start=2):
        cls = row["class"].strip()
        if cls not in ("0", "1", "2"):
            raise TextDataError(f"{path} line {number}: class {cls!r} is not 0, 1 or 2")
        text = row["tweet"].strip()
        if text:
            out.append(TextExample(text, 0 if cls == "2" else 1))
    return out


def read_rtp_jsonl(path: Path) -> list[TextExample]:
    """Prompt texts labelled by their Perspective toxicity (>= 0.5 is toxic)."""
    out = []
    for number, record in _json_lines(path):
        prompt = record.get("prompt")
        if not isinstance(prompt, dict) or not isinstance(prompt.get("text"), str):
            raise TextDataError(f"{path} line {number}: no prompt.text", hint="expected RealToxicityPrompts records")
        toxicity = prompt.get("toxicity")
        label = None if toxicity is None else int(float(toxicity) >= 0.5)
        out.append(TextExample(prompt["text"].strip(), label))
    return out


def read_rtp_scored(path: Path, *, field: str = "continuation") -> list[tuple[str, float]]:
    """(text, Perspective toxicity) of each record's ``prompt`` or ``continuation`` that has a score."""
    out = []
    for number, record in _json_lines(Path(path)):
        part = record.get(field)
        if not isinstance(part, dict) or not isinstance(part.get("text"), str):
            raise TextDataError(f"{path} line {number}: no {field}.text", hint="expected RealToxicityPrompts records")
        if part.get("toxicity") is not None and part["text"].strip():
            out.append((part["text"], float(part["toxicity"])))
    return out


def read_labelled(path: Path) -> list[TextExample]:
    """CSV or JSONL with ``text`` and ``label`` (1/0, toxic/non-toxic, true/false)."""
    if path.suffix.lower() == ".csv":
        records = list(enumerate(_csv_rows(path), start=2))
    else:
        records = list(_json_lines(path))
    out = []
    problems = []
    for number, record in records:
        text, raw = record.get("text"), record.get("label")
        key = str(raw).strip().lower()
        if not isinstance(text, str) or key not in TOXIC_LABELS:
            problems.append(f"line {number}: needs text and a label in 0/1/toxic/non-toxic (got {raw!r})")
            continue
        if text.strip():
            out.append(TextExample(text.strip(), TOXIC_LABELS[key]))
    _raise_problems(path, problems)
    return out


def read_plain_text(path: Path) -> list[TextExample]:
    text = _read_text(path)
    return [TextExample(line.strip(), None) for line in text.splitlines() if line.strip()]


def in_slice(text: str, bounds: tuple[float, float] | list[float], seed: int) -> bool:
    """Whether ``text`` falls in the part ``[lo, hi)`` of the unit interval under ``seed``.

    Parts with disjoint bounds never share a sentence, whatever the files.
    """
    lo, hi = bounds
    digest = hashlib.blake2b(f"{seed}\0{text}".encode(), digest_size=8).digest()
    position = int.from_bytes(digest, "little") / 2 ** 64
    return lo <= position < hi


def read_sources(sources: Iterable[str], *, bounds: tuple[float, float] | list[float] = (0.0, 1.0),
                 seed: int = 0, data_dir: str | Path | None = None) -> list[TextExample]:
    """The examples of every source that fall in the slice ``bounds``."""
    out = []
    for source in sources:
        out.extend(e for e in read_source(source, data_dir=data_dir) if in_slice(e.text, bounds, seed))
    return out


# ---------------------------------------------------------------- prompts


def read_prompts(path: str | Path, *, data_dir: str | Path | None = None) -> list[Prompt]:
    """The prompts of a file; every malformed or empty line is named in one error (none is skipped)."""
    path = locate(path, data_dir=data_dir)
    if not path.is_file():
        raise TextDataError(f"{path}: is not a file", hint="give a prompts file (.jsonl or one prompt per line)")
    prompts, problems = [], []
    lines = _read_text(path).splitlines()
    while lines and not lines[-1].strip():  # trailing blank lines end the file, they are not prompts
        lines.pop()
    if path.suffix.lower() in (".jsonl", ".json"):
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                problems.append(f"line {number}: blank")
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number}: not JSON ({exc.msg})")
                continue
            text, toxicity, meta = _prompt_fields(record)
            if text is None:
                problems.append(f"line {number}: no prompt text (expected prompt.text, prompt or text)")
            elif not text.strip():
                problems.append(f"line {number}: empty prompt")
            else:
                prompts.append(Prompt(text, number, toxicity, meta))
    else:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                prompts.append(Prompt(line.rstrip("\r"), number))
            else:
                problems.append(f"line {number}: empty prompt")
    _raise_problems(path, problems, what="malformed prompt line")
    if not prompts:
        raise TextDataError(f"{path}: no prompts", hint="one prompt per line, or RealToxicityPrompts JSONL")
    return prompts


def _prompt_fields(record) -> tuple[str | None, float | None, dict]:
    if not isinstance(record, dict):
        return None, None, {}
    prompt = record.get("prompt")
    if isinstance(prompt, dict) and isinstance(prompt.get("text"), str):
        toxicity = prompt.get("toxicity")
        meta = {k: record[k] for k in ("filename", "challenging") if k in record}
        return prompt["text"], float(toxicity) if toxicity is not None else None, meta
    for key in ("prompt", "text"):
        if isinstance(record.get(key), str):
            meta = {k: v for k, v in record.items() if k != key and isinstance(v, (str, int, float, bool))}
            return record[key], None, meta
    return None, None, {}


# ---------------------------------------------------------------- file helpers


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TextDataError(f"{path}: not UTF-8 text (byte {exc.start})", hint="convert the file to UTF-8") from None


def _csv_header(path: Path) -> list[str]:
    with open(path, newline="", encoding="utf-8") as handle:
        return next(csv.reader(handle), [])


def _csv_rows(path: Path) -> list[dict]:
    csv.field_size_limit(1 << 24)
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            return list(csv.DictReader(handle))
    except (csv.Error, UnicodeDecodeError) as exc:
        raise TextDataError(f"{path}: unreadable CSV ({exc})") from None


def _json_lines(path: Path):
    problems, records = [], []
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"line {number}: not JSON ({exc.msg})")
            continue
        if not isinstance(record, dict):
            problems.append(f"line {number}: not a JSON object")
            continue
        records.append((number, record))
    _raise_problems(path, problems)
    return records


def _first_json_line(path: Path) -> dict:
    for _, record in _json_lines(path)[:1]:
        return record
    raise TextDataError(f"{path}: no records")


def _float(value: str, path: Path, number: int, column: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise TextDataError(f"{path} line {number}: {column} {value!r} is not a number") from None


def _raise_problems(path: Path, problems: list[str], what: str = "malformed line") -> None:
    if not problems:
        return
    listed = "; ".join(problems[:MAX_LISTED_PROBLEMS])
    more = f"; and {len(problems) - MAX_LISTED_PROBLEMS} more" if len(problems) > MAX_LISTED_PROBLEMS else ""
    plural = "s" if len(problems) != 1 else ""
    raise TextDataError(f"{path}: {len(problems)} {what}{plural}: {listed}{more}",
                        hint="fix or remove those lines; none were skipped")


__all__ = ["Prompt", "TextDataError", "TextExample", "in_slice", "locate", "read_prompts", "read_source",
           "read_rtp_scored", "read_sources", "split_source"]
