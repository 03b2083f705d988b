"""Running one training recipe from start (or a checkpoint) to a stored artifact.

Every recipe gets the same frame: a run folder with its resolved config (made
once ``setup`` has read the data and built the model, so bad input leaves no
run behind), the distributed process group, a device, signal handling that turns Ctrl-C or
SIGTERM into "finish this step, write a checkpoint, exit 130", and the
registry to save into. The recipe class supplies the method itself::

    recipe = RecipeClass(cfg, ctx)
    recipe.setup()               # data, model, optimizer; restores ctx.resume_from
    recipe.train()               # checks ctx.should_stop() between steps
    metrics = recipe.evaluate()  # dict of final metrics
    record = recipe.save(metrics)  # ArtifactRecord, called on the main rank only
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from mltk.core import config as config_mod
from mltk.core import distributed
from mltk.core.catalog import RecipeEntry
from mltk.core.console import Reporter
from mltk.core.device import resolve_device
from mltk.core.errors import Interrupted
from mltk.core.registry import Registry
from mltk.core.runs import Checkpoint, RunDir, find_resume_checkpoint

# Keys that do not change what a run computes: a run resumed with another
# device or artifact name is still the same run.
RUN_IDENTITY_IGNORES = ("device", "name")


@dataclasses.dataclass
class RunContext:
    recipe: str
    # None during setup(): the run folder is made once the data and the model are in hand,
    # so a command that stops on bad input leaves no "failed" run behind.
    run: RunDir | None
    dist: distributed.DistInfo
    device: torch.device
    registry: Registry
    reporter: Reporter
    resume_from: Checkpoint | None
    _stop: threading.Event = dataclasses.field(default_factory=threading.Event)

    def request_stop(self) -> None:
        self._stop.set()

    def should_stop(self) -> bool:
        """True on every rank once any rank was asked to stop (so the ranks stop at the same step)."""
        return distributed.any_rank(self._stop.is_set(), self.dist, self.device)

    def stop_if_asked(self, step: int, total: int, checkpoint: Callable[[int], None]) -> None:
        """Between steps: once a stop was asked for, write the checkpoint of ``step`` and raise Interrupted."""
        if self.should_stop():
            checkpoint(step)
            raise Interrupted(f"stopped at step {step} of {total}; checkpoint written to "
                              f"{self.run.ckpt_dir / f'step-{step}'}",
                              hint="continue with --resume last (or --resume auto)")


def run_recipe(entry: RecipeEntry, cfg: Any, *, resume: str | None, runs_root: Path,
               registry: Registry, reporter: Reporter) -> dict:
    """Train ``entry`` with ``cfg``; the results dict (also written to results.json)."""
    started = time.perf_counter()
    device = resolve_device(getattr(cfg, "device", "auto"),
                            local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    dist_info = distributed.init(device.type)
    reporter.is_main = dist_info.is_main
    finished = False
    try:
        identity = config_mod.config_hash(cfg, ignore=RUN_IDENTITY_IGNORES)
        ckpt = _choose_checkpoint(resume, entry.name, runs_root, identity, dist_info)
        if dist_info.enabled:
            reporter.info(f"distributed: {dist_info.world_size} ranks, backend {dist_info.backend}")
        ctx = RunContext(recipe=entry.name, run=None, dist=dist_info, device=device,
                         registry=registry, reporter=reporter, resume_from=ckpt)
        recipe = entry.recipe_class(cfg, ctx)
        with _stop_on_signals(ctx):
            recipe.setup()  # data, model, a checkpoint's state: bad input stops here, before any run folder
            run = _open_run_dir(entry, cfg, ckpt, runs_root, identity, dist_info, reporter)
            run.clock_started, run.seconds_before = started, ckpt.seconds_spent if ckpt else 0.0
            ctx.run = run
            with _recorded_end(run):
                recipe.train()
        with _recorded_end(run):
            metrics = recipe.evaluate()
            record = recipe.save(metrics) if dist_info.is_main else None
        results = {
            "recipe": entry.name,
            "run_dir": str(run.path),
            "artifact": record.ref if record else None,
            "metrics": metrics,
            "wall_time_s": round(time.perf_counter() - started, 3),
            # With resumes: every invocation's time up to the checkpoint resumed from, plus this one.
            "wall_time_total_s": round(run.seconds_so_far(), 3),
            "world_size": dist_info.world_size,
            "device": str(device),
            "resumed_from": str(ckpt.path) if ckpt else None,
        }
        run.write_results(results)
        run.set_status("finished")
        finished = True
        return results
    finally:
        distributed.shutdown(wait_for_peers=finished)


@contextlib.contextmanager
def _recorded_end(run: RunDir):
    """run.json says how the run stopped: interrupted (it can resume) or failed, whatever the cause,
    a full disk included; a run is never left saying "running"."""
    try:
        yield
    except (Interrupted, KeyboardInterrupt):
        run.set_status("interrupted")
        raise
    except BaseException as exc:
        run.mark_failed(exc)
        raise


def _choose_checkpoint(resume: str | None, recipe: str, runs_root: Path, identity: str,
                       dist_info: distributed.DistInfo) -> Checkpoint | None:
    path = None
    if dist_info.is_main and resume:
        found = find_resume_checkpoint(resume, root=runs_root, recipe=recipe, config_hash=identity)
        path = str(found.path) if found else None
    path = distributed.broadcast_object(path, dist_info)
    return Checkpoint(Path(path)) if path else None


def _open_run_dir(entry: RecipeEntry, cfg: Any, ckpt: Checkpoint | None, runs_root: Path, identity: str,
                  dist_info: distributed.DistInfo, reporter: Reporter) -> RunDir:
    config_yaml = config_mod.to_yaml(cfg, header=f"# mltk train {entry.name}: resolved config\n")
    path = None
    if dist_info.is_main:
        if ckpt is not None:
            run = RunDir(ckpt.run_dir)
            if run.info().get("config_hash") not in (None, identity):
                reporter.warn(f"resuming {run.path} with a config that differs from the one it started with")
            run.remove_stale_staging()
            run.truncate_metrics(ckpt.step)
            (run.path / "config.yaml").write_text(config_yaml)
            run.set_status("running", config_hash=identity)
            reporter.info(f"resuming {run.path.name} from step {ckpt.step}")
        else:
            name = cfg.artifact_name() if hasattr(cfg, "artifact_name") else entry.name
            run = RunDir.create(runs_root, entry.name, name, config_yaml=config_yaml, config_hash=identity)
        path = str(run.path)
    path = distributed.broadcast_object(path, dist_info)
    return RunDir(Path(path), writable=dist_info.is_main)


class _stop_on_signals:
    """SIGINT/SIGTERM ask the recipe to stop after the current step; a second SIGINT stops at once."""

    def __init__(self, ctx: RunContext):
        self.ctx = ctx
        self.previous: dict[int, Any] = {}

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.ctx._stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.ctx.reporter.warn("stopping after this step and writing a checkpoint (Ctrl-C again to abort)")
        self.ctx.request_stop()

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False
