"""``mltk train softnet``: the base session and every incremental session as one run of the shared loop.

The run's steps are laid end to end::

    steps [0, B)                      base session: CE on the base classes (weights, scores, BatchNorm)
    steps [B + (t-1)S, B + tS)        session t = 1..T: prototype loss on its shots (S = incremental.steps;
                                      0 for hardnet and ncm, whose sessions only add prototypes)

Crossing into session t (``before_step``) closes session t-1 (fix the masks
after the base; prototypes of its classes; its scores) and opens session t
(a fresh optimizer over what it may train). Every draw of a step derives from
(seed, step), and closing or opening a session is a pure function of the
model, so a run stopped anywhere, a session boundary included, resumes
bit-identical (CPU). The card's metrics are the accuracies after each session.
"""

from __future__ import annotations

import math

import torch

from mltk.core.errors import UsageError
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import seed_everything
from mltk.data.batches import steps_per_epoch
from mltk.engines.fscil.artifact import BASE_PREFIX, fscil_artifact
from mltk.engines.fscil.config import FscilConfig
from mltk.engines.fscil.masked_layers import masked_layers
from mltk.engines.fscil.network import block_names
from mltk.engines.fscil.sessions_runner import (
    SessionRunner,
    build_network,
    load_fscil_data,
    session_steps,
    summarize,
)

PRIMARY_METRIC = "mean_accuracy"


def base_learning_rate(step: int, *, base_steps: int, lr: float, decay_at: tuple[float, ...], factor: float) -> float:
    return lr * factor ** sum(step >= math.floor(point * base_steps) for point in decay_at)


def make_runner(cfg: FscilConfig, data, device: torch.device, rank: int = 0, world_size: int = 1) -> SessionRunner:
    model = build_network(cfg, data).to(device)
    try:
        return SessionRunner(cfg, data, model, device, rank=rank, world_size=world_size)
    except KeyError as missing:
        raise UsageError(f"incremental.layers: no module {missing.args[0]!r} in this network",
                         hint=f"name residual blocks ({', '.join(block_names(model))}) or 'last'") from None


class FscilTraining(StepTask):
    def __init__(self, cfg: FscilConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        self.data = load_fscil_data(cfg)
        counts = self.data.plan.counts()
        ctx.reporter.info(f"data: {cfg.data.name}: base session {counts[0][0]} classes / {counts[0][1]} images, "
                          f"{len(counts) - 1} incremental sessions ({', '.join(f'{c}-way {n} images' for c, n in counts[1:3])}"
                          f"{', ...' if len(counts) > 3 else ''}); {len(self.data.test)} test images")
        self.runner = make_runner(cfg, self.data, ctx.device, ctx.dist.rank, ctx.dist.world_size)
        self.model = self.runner.model
        self.steps_per_epoch = steps_per_epoch(len(self.runner.base_indices), cfg.train.batch_size)
        self.base_steps = cfg.train.epochs * self.steps_per_epoch
        if cfg.train.max_steps:
            self.base_steps = min(self.base_steps, cfg.train.max_steps)
        self.session_steps = session_steps(cfg)
        self.num_sessions = len(self.data.plan.sessions) - 1
        self.total_steps = self.base_steps + self.num_sessions * self.session_steps
        o = cfg.optim
        self.base_optimizer = torch.optim.SGD(self.model.parameters(), lr=o.lr, momentum=o.momentum,
                                              weight_decay=o.weight_decay)
        self.session_optimizer = self._new_session_optimizer(self.runner.trained_parameters())
        self.results: list[dict] = []
        self.base_weights: dict[str, torch.Tensor] = {}
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="sessions", grad_clip=o.grad_clip)
        self.loop.restore(self)

    def _new_session_optimizer(self, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
        inc = self.cfg.incremental
        # Weight decay is in the loss, on the trained (minor) weights only: SGD's own would move the major ones.
        return torch.optim.SGD(params or self.runner.trained_parameters(), lr=inc.lr, momentum=inc.momentum)

    # ------------------------------------------------------------ sessions

    def _session_start(self, session: int) -> int:
        return self.base_steps + (session - 1) * self.session_steps

    def _close(self, session: int) -> None:
        if session == 0:
            self.base_weights = {name: p.detach().clone() for name, p in
                                 zip(self.runner.trained_layers, self.runner.trained_parameters(), strict=True)}
        result = self.runner.close_session(session)
        self.results.append(result)
        novel = "" if result["novel_accuracy"] is None else f", novel {result['novel_accuracy']:.2f}"
        self.ctx.reporter.info(f"session {session}: accuracy {result['accuracy']:.2f} over {result['classes']} "
                               f"classes (base {result['base_accuracy']:.2f}{novel})")

    def _open(self, session: int) -> None:
        self.session_optimizer = self._new_session_optimizer(self.runner.open_session(session))

    def before_step(self, step: int, bar) -> bool:
        upcoming = self.runner.session + 1
        if upcoming <= self.num_sessions and step == self._session_start(upcoming):
            self._close(self.runner.session)
            self._open(upcoming)
            return True
        return False

    # ------------------------------------------------------------ the loop's StepTask

    def train(self) -> None:
        if self.runner.session == 0:
            self.model.train()
        self.loop.run(self)
        # Sessions without steps (hardnet, ncm, or a run stopped after its last step) are closed here.
        if len(self.results) == self.runner.session:
            self._close(self.runner.session)
        while self.runner.session < self.num_sessions:
            self._open(self.runner.session + 1)
            self._close(self.runner.session)

    def forward_module(self) -> torch.nn.Module:
        return self.model

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"base": self.base_optimizer, "session": self.session_optimizer}

    def optimizer_at(self, step: int) -> str:
        return "base" if step < self.base_steps else "session"

    def learning_rate(self, step: int) -> float:
        if step >= self.base_steps:
            return self.cfg.incremental.lr
        o = self.cfg.optim
        return base_learning_rate(step, base_steps=self.base_steps, lr=o.lr, decay_at=o.decay_at,
                                  factor=o.decay_factor)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        if step < self.base_steps:
            loss, stats, count = self.runner.base_loss(step, self.steps_per_epoch, module)
        else:
            loss, stats, count = self.runner.session_loss(step, module)
        return StepOutput(loss, stats, count=count)

    def log_due(self, done: int) -> bool:
        if done <= self.base_steps:
            return done % self.cfg.train.log_every == 0 or done == self.base_steps
        return self.session_steps > 0 and (done - self.base_steps) % self.session_steps == 0

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        session = 0 if done <= self.base_steps else (done - self.base_steps - 1) // self.session_steps + 1
        fields = {"session": session, "lr": lr, **{f"train_{k}": v for k, v in means.items()}}
        return f"session {session} step {done}", fields

    def progress_fields(self, step: int) -> dict:
        return {"session": self.runner.session}

    def model_state(self) -> dict[str, torch.Tensor]:
        state = dict(self.model.state_dict())
        state.update({BASE_PREFIX + name: weight for name, weight in self.base_weights.items()})
        return state

    def trainer_state(self) -> dict:
        return {"session": self.runner.session, "results": self.results}

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.base_weights = {k[len(BASE_PREFIX):]: v for k, v in model_state.items() if k.startswith(BASE_PREFIX)}
        self.model.load_state_dict({k: v for k, v in model_state.items() if not k.startswith(BASE_PREFIX)})
        for layer in masked_layers(self.model).values():  # the scores stop learning once the mask is fixed
            if bool(layer.mask_fixed):
                layer.scores.requires_grad_(False)
        self.results = list(trainer_state.get("results", []))
        session = int(trainer_state.get("session", 0))
        if session > 0:
            self._open(session)

    # ------------------------------------------------------------ results

    def evaluate(self) -> dict:
        return summarize(self.results)

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = fscil_artifact(self.model, base_weights=self.base_weights, config=cfg, metrics=metrics,
                                     results=self.results, plan=self.data.plan, class_names=self.data.train.class_names,
                                     primary_metric=PRIMARY_METRIC, parent=f"dataset:{cfg.data.name}",
                                     extra={"run_dir": str(self.ctx.run.path)})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
