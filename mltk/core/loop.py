"""One resumable step loop for every training recipe.

The loop owns what a run needs whatever the method: re-seeding each step
from (seed, step, rank), the DDP wrapper and ``torch.compile``, mixed
precision, the backward pass with loss scaling and gradient clipping, running
means of the step's statistics, metric lines and the progress bar, the
checkpoint cadence, Ctrl-C / SIGTERM (checkpoint, then exit 130) and resume.
An engine supplies the method as a :class:`StepTask`, by composition::

    loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=n, description="train")
    loop.restore(task)      # when ctx.resume_from names a checkpoint
    loop.run(task)

One step of ``run``::

    task.before_step(step)                    # phases, stages; True = the trained parts changed
    seed_step(seed, step, rank)               # every random draw of the step derives from this
    opt = task.optimizer_at(step); opt.set_lr(task.learning_rate(step))
    with autocast: out = task.forward(step, module)   # module: the DDP/compiled wrapper
    opt.step(out.loss)                        # scaled backward, clipping, optimizer step
    stats += task.after_step(step)            # EMA teachers and the like

A checkpoint holds the task's model state, every optimizer (and scaler), the
step, the running statistics and the task's own state; with the data order a
function of (seed, epoch) a resumed run ends bit-identical (on CPU) to an
uninterrupted one.
"""

from __future__ import annotations

import abc
import dataclasses
import math
import time
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from mltk.core.device import amp_dtype, autocast
from mltk.core.errors import MltkError
from mltk.core.optimization import Optimization
from mltk.core.runs import checkpoint_due
from mltk.core.sections import LoopSettings
from mltk.core.seeding import seed_step


class NonFiniteLoss(MltkError):
    exit_code = 1


@dataclasses.dataclass
class StepOutput:
    """What one step computed: ``loss`` is backpropagated; ``stats`` (0-d tensors or floats) are averaged
    over the steps between metric lines; ``count`` is the samples (or tokens) this rank processed."""

    loss: torch.Tensor
    stats: dict[str, Any] = dataclasses.field(default_factory=dict)
    count: int = 0


class StepTask(abc.ABC):
    """The method's side of the loop: the four abstract methods, and the hooks that apply."""

    throughput_name = "samples_per_s"
    # Under DDP: some parameters may take no part in a step (layers a schedule has not switched on yet).
    has_unused_parameters = False

    # ------------------------------------------------------------ the step

    @abc.abstractmethod
    def forward(self, step: int, module: torch.nn.Module | None) -> StepOutput:
        """Step ``step``'s loss, under autocast; ``module`` is ``forward_module()`` as DDP and compile wrap it."""

    def forward_module(self) -> torch.nn.Module | None:
        """The module whose gradients DDP averages (None: the ranks keep their parameters equal themselves)."""
        return None

    @abc.abstractmethod
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer of the task by name (their states are checkpointed under these names)."""

    def optimizer_at(self, step: int) -> str:
        """The name of the optimizer that steps at ``step`` (the only one, by default)."""
        return next(iter(self.optimizers()))

    def learning_rate(self, step: int) -> float | None:
        """The learning rate of ``step``, a pure function of it (None: leave the optimizer's as it is)."""
        return None

    def before_step(self, step: int, bar) -> bool:
        """Work before ``step`` (enter a phase or stage); True when the module or optimizers were replaced."""
        return False

    def after_step(self, step: int) -> dict[str, float]:
        return {}

    # ------------------------------------------------------------ reporting

    def log_due(self, done: int) -> bool:
        """Whether a metric line follows the step that brought the count to ``done`` (always after the last)."""
        return False

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        """(title of the stderr line, fields of the metrics.jsonl record) from the running means."""
        return f"step {done}", {"lr": lr, **{f"train_{k}": v for k, v in means.items()}}

    def progress_fields(self, step: int) -> dict:
        return {}

    def checkpoint_due(self, done: int) -> bool:
        """A checkpoint the task needs beyond the cadence (the end of a stage, say)."""
        return False

    # ------------------------------------------------------------ state

    @abc.abstractmethod
    def model_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint stores as model.safetensors."""

    def trainer_state(self) -> dict:
        """Task state beyond the model and the optimizers (a stage index, counters); plain values."""
        return {}

    @abc.abstractmethod
    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        """Restore a checkpoint's model and task state, before its optimizers are loaded."""


class OneModelTask(StepTask):
    """A task that trains one module, ``self.model``, through ``self.loop``: the model is what DDP wraps and
    what a checkpoint stores; its optimizer is ``self.optimizer`` unless the task names several."""

    optimizer_name = "model"  # the optimizer's state is checkpointed under this name

    def train(self) -> None:
        self.model.train()
        self.loop.run(self)

    def forward_module(self) -> torch.nn.Module:
        return self.model

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {self.optimizer_name: self.optimizer}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.model.load_state_dict(model_state)


class StepLoop:
    def __init__(self, ctx, *, settings: LoopSettings, seed: int, total_steps: int, description: str,
                 grad_clip: float = 0.0):
        self.ctx = ctx
        self.settings = settings
        self.seed = seed
        self.total_steps = total_steps
        self.description = description
        self.grad_clip = grad_clip
        self.amp = amp_dtype(ctx.device, settings.amp)
        self.start_step = 0
        self.optimizations: dict[str, Optimization] = {}
        self._reset_running()

    # ------------------------------------------------------------ parts

    def _adopt(self, task: StepTask) -> None:
        """Wrap the task's optimizers and module (again, after the task replaced them)."""
        self.optimizations = {name: Optimization(opt, amp=self.amp, grad_clip=self.grad_clip)
                              for name, opt in task.optimizers().items()}
        module = task.forward_module()
        if module is not None and self.ctx.dist.enabled:
            module = DistributedDataParallel(
                module, device_ids=[self.ctx.device.index] if self.ctx.device.type == "cuda" else None,
                find_unused_parameters=task.has_unused_parameters)
        if module is not None and self.settings.compile:
            module = torch.compile(module)
        self.module = module

    def restore(self, task: StepTask) -> None:
        """Continue from ``ctx.resume_from`` (nothing to do without one)."""
        ckpt = self.ctx.resume_from
        if ckpt is None:
            return
        state = ckpt.load_trainer_state()
        task.load_state(ckpt.load_model_state(), state.get("task") or {})
        self._adopt(task)
        for name, optimization in self.optimizations.items():
            optimization.load_state_dict(state["optimizers"][name])
        self.start_step = int(state["step"])
        running = state["running"]
        self._reset_running(steps=running["steps"], count=running["count"], sums=running["sums"])
        if state.get("total_steps") != self.total_steps:
            self.ctx.reporter.warn(f"the checkpoint was written for {state.get('total_steps')} steps, "
                                   f"this config runs {self.total_steps}")

    # ------------------------------------------------------------ the loop

    def run(self, task: StepTask) -> None:
        ctx, settings = self.ctx, self.settings
        if not self.optimizations:
            self._adopt(task)
        lr = None
        with ctx.reporter.progress(self.total_steps, start=self.start_step, description=self.description) as bar:
            block_started = last_checkpoint = time.perf_counter()
            for step in range(self.start_step, self.total_steps):
                ctx.stop_if_asked(step, self.total_steps, lambda at: self.checkpoint(task, at))
                if task.before_step(step, bar):
                    self._adopt(task)
                seed_step(self.seed, step, ctx.dist.rank, ctx.device)
                optimization = self.optimizations[task.optimizer_at(step)]
                lr = task.learning_rate(step)
                if lr is not None:
                    optimization.set_lr(lr)
                with autocast(ctx.device, self.amp):
                    out = task.forward(step, self.module)
                optimization.step(out.loss)
                stats = {"loss": out.loss.detach(), **out.stats, **task.after_step(step)}
                self._accumulate(stats, out.count)
                done = step + 1
                if bar.wants_update():  # reading a loss syncs a GPU: only as often as the bar redraws
                    bar.update(done, **task.progress_fields(step), **({"lr": lr} if lr is not None else {}),
                               loss=float(self.running["sums"]["loss"]) / self.running["steps"])
                if task.log_due(done) or done == self.total_steps:
                    self._log(task, done, lr, time.perf_counter() - block_started, bar)
                    block_started = time.perf_counter()
                if task.checkpoint_due(done) or checkpoint_due(
                        done, self.total_steps, every_steps=settings.ckpt_every,
                        every_minutes=settings.ckpt_minutes, last_saved=last_checkpoint):
                    self.checkpoint(task, done)
                    last_checkpoint = time.perf_counter()
            bar.update(self.total_steps)

    # ------------------------------------------------------------ running statistics

    def _reset_running(self, steps: int = 0, count: int = 0, sums: dict | None = None) -> None:
        """Sums since the last metric line, kept on the device so that steps never wait for a sync."""
        device = self.ctx.device
        self.running = {"steps": steps, "count": count,
                        "sums": {k: torch.tensor(v, dtype=torch.float64, device=device)
                                 for k, v in (sums or {}).items()}}

    def _accumulate(self, stats: dict, count: int) -> None:
        sums = self.running["sums"]
        for key, value in stats.items():
            value = value.detach().double() if isinstance(value, torch.Tensor) else float(value)
            if key in sums:
                sums[key] += value
            else:
                sums[key] = torch.as_tensor(value, dtype=torch.float64, device=self.ctx.device).clone()
        self.running["steps"] += 1
        self.running["count"] += int(count)

    def _log(self, task: StepTask, done: int, lr: float | None, seconds: float, bar) -> None:
        names = sorted(self.running["sums"])
        device = self.ctx.device
        totals = torch.stack([self.running["sums"][k].reshape(()) for k in names]
                             + [torch.tensor(float(self.running["steps"]), dtype=torch.float64, device=device),
                                torch.tensor(float(self.running["count"]), dtype=torch.float64, device=device)])
        if self.ctx.dist.enabled:
            torch.distributed.all_reduce(totals)
        *sums, steps, count = totals.tolist()
        means = {k: s / steps for k, s in zip(names, sums, strict=True)}
        if not math.isfinite(means.get("loss", 0.0)):
            raise NonFiniteLoss(f"the training loss became {means['loss']} by step {done}; nothing was stored",
                                hint="lower the learning rate (optim.lr) or enable gradient clipping "
                                     "(optim.grad_clip)")
        title, fields = task.log_record(done, means, lr)
        record = {"step": done, **fields}
        if count:
            record[task.throughput_name] = count / max(seconds, 1e-9)
        self.ctx.run.append_metrics(record)
        shown = "  ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in record.items() if k not in ("step", "epoch", "stage") and v is not None)
        bar.line(f"{title}  {shown}")
        self._reset_running()

    # ------------------------------------------------------------ checkpoints

    def checkpoint(self, task: StepTask, step: int) -> None:
        if not self.ctx.dist.is_main:
            return
        state = {"step": step, "total_steps": self.total_steps,
                 "optimizers": {name: o.state_dict() for name, o in self.optimizations.items()},
                 "running": {"steps": self.running["steps"], "count": self.running["count"],
                             "sums": {k: float(v) for k, v in self.running["sums"].items()}},
                 "task": task.trainer_state()}
        self.ctx.run.save_checkpoint(step, task.model_state(), state, keep=self.settings.keep_checkpoints)
