"""``mltk train mavrl``: adversarial meta-learning with bilevel attacks and multi-view consistency
(MAVRL, arXiv 2210.10485), and its baselines on the same encoder, data and budget (``method=maml | aq |
adml | rocl``; see meta.py for each method's loss).

One outer step::

    tasks = meta_batch N-way K-shot tasks of the meta-training classes (this rank's share)
    loss  = mean over tasks of method_loss(task)    # inner loops, attacks, outer loss: meta.py
    loss.backward(); adam.step()                    # DDP averages the gradients over the ranks

Determinism: task t of step s, its views and its attacks' random starts draw
only from a generator seeded by (seed, step, t), so a resumed run, and a run
on two ranks, meet the same tasks; the BatchNorm layers keep no running
statistics, so the weights and Adam's state are the whole training state.
At the end the encoder is scored on few-shot tasks of the unseen classes of
the meta-training domain (clean and PGD), as ``--protocol fewshot`` does.
"""

from __future__ import annotations

import torch
from torch import nn

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ConfigError
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import seed_everything
from mltk.engines.robust.artifact import fewshot_artifact, network_spec
from mltk.engines.robust.attacks.classifier import AttackSettings
from mltk.engines.robust.config import MavrlConfig
from mltk.engines.robust.domains import ClassPool, load_domain
from mltk.engines.robust.episodes import (
    check_task_shape,
    sample_task,
    split_classes,
    task_generator,
)
from mltk.engines.robust.fewshot_eval import FewShotSettings, evaluate_fewshot
from mltk.engines.robust.fewshot_net import FewShotNet
from mltk.engines.robust.meta import TaskLosses


class MetaLearner(nn.Module):
    """forward(step) -> (mean loss of this rank's tasks of ``step``, statistics): the module DDP wraps."""

    def __init__(self, net: FewShotNet, cfg: MavrlConfig, pool: ClassPool, *, rank: int, tasks_per_rank: int):
        super().__init__()
        self.net = net
        self.cfg, self.pool = cfg, pool
        self.losses = TaskLosses(net, cfg)
        self.first_task, self.tasks_per_rank = rank * tasks_per_rank, tasks_per_rank

    def forward(self, step: int) -> tuple[torch.Tensor, dict]:
        t = self.cfg.task
        total, stats = 0.0, {}
        for index in range(self.first_task, self.first_task + self.tasks_per_rank):
            generator = task_generator(self.cfg.seed, step, index)
            task = sample_task(self.pool, n_way=t.n_way, k_shot=t.k_shot, queries=t.queries, generator=generator)
            loss, task_stats = self.losses(task, generator)
            total = total + loss
            for key, value in task_stats.items():
                stats[key] = stats.get(key, 0.0) + value / self.tasks_per_rank
        return total / self.tasks_per_rank, stats


@register_recipe("mavrl", config=MavrlConfig, default_preset="omniglot",
                 description="adversarial meta-learning with bilevel attacks and multi-view consistency "
                             "(MAVRL, 2210.10485); method=maml|aq|adml|rocl for the baselines")
class MavrlRecipe(StepTask):
    has_unused_parameters = True  # MAML, AQ and ADML never use the projection head; RoCL never uses the N-way head
    throughput_name = "tasks_per_s"

    def __init__(self, cfg: MavrlConfig, ctx: RunContext):
        self.cfg, self.ctx = cfg, ctx

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if cfg.task.meta_batch % ctx.dist.world_size:
            raise ConfigError([f"task.meta_batch: {cfg.task.meta_batch} tasks do not split evenly over "
                               f"{ctx.dist.world_size} ranks"], hint="choose a meta-batch divisible by the ranks")
        seed_everything(cfg.seed)
        d = cfg.data
        pool = load_domain(d.domain, image_size=d.image_size, channels=d.channels, data_dir=d.data_dir,
                           max_per_class=d.max_per_class)
        self.train_pool, self.unseen_pool = split_classes(pool, train_share=d.train_classes, seed=d.class_seed)
        t = cfg.task
        check_task_shape(self.train_pool, n_way=t.n_way, k_shot=t.k_shot, queries=t.queries,
                         where="meta-training classes")
        if cfg.eval.tasks:
            check_task_shape(self.unseen_pool, n_way=t.n_way, k_shot=t.k_shot, queries=cfg.eval.queries,
                             where="unseen classes")
        ctx.reporter.info(f"data: {d.domain}: {len(self.train_pool.names)} meta-training classes, "
                          f"{len(self.unseen_pool.names)} unseen; {t.n_way}-way {t.k_shot}-shot, "
                          f"{t.meta_batch} tasks a step; method {cfg.method}")
        self.net_args = dict(encoder=cfg.model.encoder, in_channels=d.channels, image_size=d.image_size,
                             width=cfg.model.width, n_way=t.n_way, projection_dim=cfg.model.projection_dim)
        self.net = FewShotNet(**self.net_args).to(ctx.device)
        self.train_pool.images = self.train_pool.images.to(ctx.device)
        self.learner = MetaLearner(self.net, cfg, self.train_pool, rank=ctx.dist.rank,
                                   tasks_per_rank=t.meta_batch // ctx.dist.world_size)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=cfg.train.steps,
                             description=f"train {cfg.method}", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)

    # ------------------------------------------------------------ the loop's StepTask

    def train(self) -> None:
        self.net.train()
        self.loop.run(self)

    def forward_module(self) -> nn.Module:
        return self.learner

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"meta": self.optimizer}

    def forward(self, step: int, module: nn.Module) -> StepOutput:
        loss, stats = module(step)
        return StepOutput(loss, stats, count=self.learner.tasks_per_rank)

    def log_due(self, done: int) -> bool:
        return done % self.cfg.train.log_every == 0

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.net.state_dict()

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.net.load_state_dict(model_state)

    # ------------------------------------------------------------ results

    def evaluate(self) -> dict:
        cfg = self.cfg
        if not cfg.eval.tasks:
            return {}
        settings = FewShotSettings(n_way=cfg.task.n_way, k_shot=cfg.task.k_shot, queries=cfg.eval.queries,
                                   tasks=cfg.eval.tasks, seed=cfg.eval.seed, adaptation="finetune",
                                   test_steps=cfg.inner.test_steps, inner_lr=cfg.inner.lr)
        a = cfg.attack
        attack = AttackSettings(name="pgd", eps=a.eps, step_size=a.step_size, steps=cfg.eval.attack_steps)
        self.net.eval()
        scores = evaluate_fewshot(self.net, self.unseen_pool, settings, attack, self.ctx.device)
        return {f"unseen_{k}": v for k, v in scores.items()}

    def save(self, metrics: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = fewshot_artifact(
            self.net, spec=network_spec(self.net_args), method=cfg.method, config=to_dict(cfg),
            config_sha256=config_hash(cfg), metrics=metrics, domain=cfg.data.domain,
            train_classes=self.train_pool.names, unseen_classes=self.unseen_pool.names,
            inner={"lr": cfg.inner.lr, "test_steps": cfg.inner.test_steps},
            extra={"run_dir": str(self.ctx.run.path)})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)
