"""Run folders, checkpoints and resume.

A run lives in ``<runs root>/<recipe>/<YYYYmmdd-HHMMSS>-<name>/``::

    run.json           recipe, config hash, status (running/finished/interrupted/failed)
    config.yaml        the resolved config
    metrics.jsonl      one JSON object per logged step
    results.json       final metrics and the artifact reference
    ckpt/step-N/       model.safetensors + trainer_state.safetensors (no pickle)

A checkpoint folder appears only complete: it is written under a temporary
name, fsynced and renamed, so a run killed at any instant resumes from its
newest ``step-N``. Its ``checksums.json`` holds the sha256 of every file in
it; a resume verifies them and falls back to the newest checkpoint that
verifies (a flipped bit on disk must not silently change a run's result). Only the main process writes; the other ranks get a
``RunDir`` whose writes do nothing.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mltk.core.console import warn
from mltk.core.errors import ArtifactError, MltkError, UsageError
from mltk.core.registry import sha256_file
from mltk.core.tensor_files import (
    fsync_dir,
    load_safetensors,
    load_state_tree,
    save_safetensors,
    save_state_tree,
    write_file,
)

RUN_FILE = "run.json"
CLOCK_FILE = "clock.json"  # in each checkpoint: the run's wall time so far, so resumes add up
CHECKSUM_FILE = "checksums.json"  # in each checkpoint: sha256 of every other file
_STEP_RE = re.compile(r"^step-(\d+)$")


class Checkpoint:
    """A complete ``ckpt/step-N`` folder."""

    def __init__(self, path: Path):
        match = _STEP_RE.match(path.name)
        if not match or not (path / "trainer_state.safetensors").is_file():
            raise UsageError(f"{path}: not a checkpoint folder (expected ckpt/step-N with "
                             "trainer_state.safetensors)")
        self.path = path
        self.step = int(match.group(1))

    @property
    def run_dir(self) -> Path:
        return self.path.parent.parent

    def load_model_state(self) -> dict[str, torch.Tensor]:
        tensors, _ = load_safetensors(self.path / "model.safetensors")
        return tensors

    def load_trainer_state(self) -> Any:
        return load_state_tree(self.path / "trainer_state.safetensors")

    @property
    def seconds_spent(self) -> float:
        """Wall time the run had spent when this checkpoint was written, over all its resumes (0 if unknown)."""
        clock = self.path / CLOCK_FILE
        try:
            return float(json.loads(clock.read_text())["seconds"]) if clock.is_file() else 0.0
        except (ValueError, KeyError, TypeError):
            return 0.0

    def problems(self) -> list[str]:
        """What does not match the checksums written with the checkpoint (empty when it verifies)."""
        try:
            expected = json.loads((self.path / CHECKSUM_FILE).read_text())
        except FileNotFoundError:
            return []  # written before checkpoints carried checksums
        except ValueError:
            return [f"{CHECKSUM_FILE} is not valid JSON"]
        if not isinstance(expected, dict):
            return [f"{CHECKSUM_FILE} is not a mapping"]
        found = []
        for name, digest in expected.items():
            path = self.path / str(name)
            if not path.is_file():
                found.append(f"{name} is missing")
            elif sha256_file(path) != digest:
                found.append(f"{name} does not match its checksum")
        return found

    def __repr__(self) -> str:
        return f"Checkpoint({self.path})"


class RunDir:
    """One run's folder. With ``writable=False`` (non-main ranks) writes do nothing."""

    def __init__(self, path: Path, *, writable: bool = True, seconds_before: float = 0.0):
        self.path = Path(path)
        self.writable = writable
        # Wall time spent by earlier invocations (the resumed checkpoint's), plus this one's clock.
        self.seconds_before = seconds_before
        self.clock_started = time.perf_counter()

    def seconds_so_far(self) -> float:
        """Wall time of this run over every invocation up to its last checkpoint, plus this one's."""
        return self.seconds_before + time.perf_counter() - self.clock_started

    # ------------------------------------------------------------ creation

    @classmethod
    def create(cls, root: Path, recipe: str, name: str, *, config_yaml: str, config_hash: str) -> RunDir:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        base = Path(root) / recipe / f"{stamp}-{name}"
        path, n = base, 1
        while True:
            try:
                path.mkdir(parents=True)
                break
            except FileExistsError:
                n += 1
                path = base.with_name(f"{base.name}-{n}")
        run = cls(path)
        write_file(path / "config.yaml", config_yaml.encode())
        run._write_json(RUN_FILE, {"recipe": recipe, "name": name, "config_hash": config_hash,
                                   "status": "running", "started": dt.datetime.now().isoformat(timespec="seconds")})
        return run

    # ------------------------------------------------------------ records

    def info(self) -> dict:
        try:
            return json.loads((self.path / RUN_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}

    def set_status(self, status: str, **extra: Any) -> None:
        if self.writable:
            self._write_json(RUN_FILE, {**self.info(), "status": status, **extra})

    def mark_failed(self, error: BaseException) -> None:
        """Record that the run failed, even on the full disk that may have made it fail; never raises.

        The usual write needs room for a temporary file; when there is none, run.json
        is overwritten in place (its old blocks are reused), so a run is never left
        saying "running" after it stopped.
        """
        if not self.writable:
            return
        record = {**self.info(), "status": "failed", "error": str(error)[:500] or type(error).__name__}
        try:
            self._write_json(RUN_FILE, record)
        except OSError:
            try:
                with open(self.path / RUN_FILE, "r+") as handle:
                    text = json.dumps(record)
                    handle.write(text)
                    handle.truncate(len(text))
            except OSError as exc:
                warn(f"{self.path / RUN_FILE}: could not mark the run failed ({exc.strerror or exc})")

    def append_metrics(self, record: Mapping[str, Any]) -> None:
        if self.writable:
            with open(self.path / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(record) + "\n")

    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric lines past ``after_step`` (written after the checkpoint a resume starts from)."""
        path = self.path / "metrics.jsonl"
        if not self.writable or not path.exists():
            return
        kept = [line for line in path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= after_step]
        write_file(path, "".join(line + "\n" for line in kept).encode())

    def write_results(self, results: Mapping[str, Any]) -> None:
        if self.writable:
            self._write_json("results.json", results)

    def _write_json(self, filename: str, data: Mapping[str, Any]) -> None:
        tmp = self.path / f".{filename}.tmp"
        write_file(tmp, (json.dumps(data, indent=2) + "\n").encode())
        os.replace(tmp, self.path / filename)

    # ------------------------------------------------------------ checkpoints

    @property
    def ckpt_dir(self) -> Path:
        return self.path / "ckpt"

    def checkpoints(self) -> list[Checkpoint]:
        """Complete checkpoints, oldest first."""
        if not self.ckpt_dir.is_dir():
            return []
        found = []
        for child in self.ckpt_dir.iterdir():
            if _STEP_RE.match(child.name) and (child / "trainer_state.safetensors").is_file():
                found.append(Checkpoint(child))
        return sorted(found, key=lambda c: c.step)

    def latest_checkpoint(self) -> Checkpoint | None:
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self, step: int, model_state: Mapping[str, torch.Tensor], trainer_state: Any,
                        *, keep: int = 2) -> Checkpoint | None:
        """Write ``ckpt/step-<step>`` atomically and keep only the newest ``keep`` checkpoints."""
        if not self.writable:
            return None
        self.ckpt_dir.mkdir(exist_ok=True)
        final = self.ckpt_dir / f"step-{step}"
        staging = self.ckpt_dir / f".step-{step}.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            save_safetensors(staging / "model.safetensors", model_state)
            save_state_tree(staging / "trainer_state.safetensors", trainer_state)
            write_file(staging / CLOCK_FILE, json.dumps({"seconds": round(self.seconds_so_far(), 3)}).encode())
            checksums = {p.name: sha256_file(p) for p in sorted(staging.iterdir())}
            write_file(staging / CHECKSUM_FILE, json.dumps(checksums, indent=1).encode())
            fsync_dir(staging)
            if final.exists():
                shutil.rmtree(final)
            os.rename(staging, final)
            fsync_dir(self.ckpt_dir)
        except OSError as exc:
            # The half-written checkpoint goes, which also gives a full disk its space back.
            shutil.rmtree(staging, ignore_errors=True)
            raise MltkError(f"could not save the checkpoint of step {step}: {exc.strerror or exc} "
                            f"({self.ckpt_dir}); nothing was stored",
                            hint="free disk space or set MLTK_RUNS to another folder, then resume with "
                                 "--resume auto") from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            shutil.rmtree(old.path, ignore_errors=True)
        return Checkpoint(final)

    def remove_stale_staging(self) -> None:
        if self.writable and self.ckpt_dir.is_dir():
            for child in self.ckpt_dir.glob(".step-*.tmp"):
                shutil.rmtree(child, ignore_errors=True)


# ---------------------------------------------------------------- when to checkpoint


def checkpoint_due(done: int, total: int, *, every_steps: int, every_minutes: float, last_saved: float) -> bool:
    """Whether a training loop should checkpoint after ``done`` of ``total`` steps.

    Every ``every_steps`` steps when that is set, else once ``every_minutes`` of
    work is unsaved (``last_saved`` is the ``time.perf_counter()`` of the last
    checkpoint); always at the end, so a finished run can be resumed or inspected.
    """
    if done >= total:
        return True
    if every_steps:
        return done % every_steps == 0
    return time.perf_counter() - last_saved >= 60 * every_minutes


# ---------------------------------------------------------------- finding what to resume


def find_resume_checkpoint(mode: str, *, root: Path, recipe: str, config_hash: str) -> Checkpoint | None:
    """The checkpoint ``--resume`` names.

    ``auto``: the newest unfinished run of ``recipe`` with the same config hash
    (none found: start fresh). ``last``: the newest run of ``recipe`` that has a
    checkpoint (none: an error listing what exists). Anything else is a path to
    a run folder or to one ``ckpt/step-N`` folder.
    """
    runs = _runs_newest_first(Path(root) / recipe)
    if mode == "auto":
        for run in runs:
            info = run.info()
            if info.get("config_hash") == config_hash and info.get("status") != "finished":
                ckpt = _resumable(run, mode)
                if ckpt is not None:
                    return ckpt
        return None
    if mode == "last":
        for run in runs:
            ckpt = _resumable(run, mode)
            if ckpt is not None:
                return ckpt
        seen = ", ".join(r.path.name for r in runs[:5]) or "none"
        raise UsageError(f"--resume last: no run of {recipe!r} under {Path(root) / recipe} has a checkpoint "
                         f"(runs: {seen})", hint="start a fresh run without --resume, or pass a run folder")
    path = Path(mode).expanduser()
    if not path.exists():
        raise UsageError(f"--resume {mode}: no such run or checkpoint folder",
                         hint="give auto, last, a run folder or a ckpt/step-N folder")
    if _STEP_RE.match(path.name):
        ckpt = Checkpoint(path)
        problems = ckpt.problems()
        if problems:
            raise ArtifactError(f"--resume {mode}: the checkpoint is damaged ({'; '.join(problems)})",
                                hint="resume from its run folder to take the newest checkpoint that verifies")
        return ckpt
    ckpt = _resumable(RunDir(path), mode)
    if ckpt is None:
        raise UsageError(f"--resume {mode}: the run has no complete checkpoint in {path / 'ckpt'}",
                         hint="start a fresh run without --resume")
    return ckpt


def newest_good_checkpoint(run: RunDir) -> Checkpoint | None:
    """The newest checkpoint of ``run`` that verifies; each damaged one passed over is named in a warning."""
    for ckpt in reversed(run.checkpoints()):
        problems = ckpt.problems()
        if not problems:
            return ckpt
        warn(f"{ckpt.path}: damaged ({'; '.join(problems)}); trying the checkpoint before it")
    return None


def _resumable(run: RunDir, mode: str) -> Checkpoint | None:
    """The newest good checkpoint of ``run``; None when it has none; an error when every one is damaged."""
    ckpt = newest_good_checkpoint(run)
    if ckpt is None and run.checkpoints():
        raise ArtifactError(f"--resume {mode}: no checkpoint in {run.ckpt_dir} verifies against its checksums",
                            hint="start a fresh run without --resume")
    return ckpt


def _runs_newest_first(recipe_root: Path) -> list[RunDir]:
    if not recipe_root.is_dir():
        return []
    runs = [RunDir(p) for p in recipe_root.iterdir() if (p / RUN_FILE).is_file()]
    return sorted(runs, key=lambda r: (r.info().get("started", ""), r.path.name), reverse=True)
