"""What every detox recipe shares: its text read into examples, and the task the shared step loop runs.

Each recipe supplies an *objective*: an ``nn.Module`` whose
``forward(ids, mask, labels) -> (loss, stats)`` computes the loss of a batch
and whose ``trainable_state()`` / ``load_trainable_state()`` name the weights
that change (the LM for ``lm``/``dapt``, the two experts for ``dexperts``,
the ADLM head for ``adlm``). :class:`ObjectiveTask` gives it to the core
loop (``mltk.core.loop``): a seeded data order per epoch, rank-sliced batches
under DDP, warm-up + cosine learning rate as a pure function of the step.
Every random draw of step N depends only on (seed, step, rank), so a resumed
run ends bit-identical (CPU) to an uninterrupted one.
"""

from __future__ import annotations

import math

import torch

from mltk.core.errors import ConfigError
from mltk.core.loop import OneModelTask, StepLoop, StepOutput
from mltk.core.optimization import adamw_without_decay_on_vectors
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator, seed_everything
from mltk.data.batches import epoch_order, per_rank_batch, step_indices
from mltk.data.text.sources import TextExample, in_slice, read_sources
from mltk.data.text.tokens import TokenData, encode_sentences
from mltk.engines.detox.config import LoopSpec, OptimSpec, TextData
from mltk.nn.language_models.causal_lm import load_causal_lm

# ---------------------------------------------------------------- text


def read_text_data(spec: TextData, *, seed: int, labelled: bool, what: str) -> tuple[list[TextExample],
                                                                                      list[TextExample]]:
    """(train, validation) examples of ``spec``'s part; with ``labelled``, unlabelled examples are an error."""
    sources = spec.all_sources()
    if not sources:
        raise ConfigError(["data.name / data.sources: no text sources given"], source=what,
                          hint="e.g. data=davidson:toxicity/davidson_hate_offensive/labeled_data.csv")
    lo, hi = spec.part  # checked by TextData.value_problems
    examples = read_sources(sources, bounds=(lo, hi), seed=spec.part_seed, data_dir=spec.data_dir)
    if labelled:
        unlabelled = sum(e.label is None for e in examples)
        if unlabelled:
            raise ConfigError([f"data: {unlabelled} of {len(examples)} examples carry no toxic/non-toxic label"],
                              source=what, hint="use labelled sources (jigsaw, davidson, rtp, labelled:)")
    if spec.max_examples and len(examples) > spec.max_examples:
        order = torch.randperm(len(examples), generator=generator(seed, 0x7E87))[:spec.max_examples]
        examples = [examples[i] for i in sorted(order.tolist())]
    # The validation part is a second hash of each text, independent of the first.
    val = [e for e in examples if in_slice(e.text, (0.0, spec.val_fraction), spec.part_seed + 1)]
    train = [e for e in examples if not in_slice(e.text, (0.0, spec.val_fraction), spec.part_seed + 1)]
    if not train:
        raise ConfigError([f"data: no training examples in part {list(spec.part)} of {', '.join(sources)}"],
                          source=what, hint="widen data.part or add sources")
    return train, val


def next_token_loss(logits: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy of predicting ids[:, 1:], number of predicted tokens) over real tokens.

    logits [B, T, V] from positions 0..T-1; a target counts when it is a real token.
    """
    targets = ids[:, 1:]
    keep = mask[:, 1:]
    flat = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                             targets.reshape(-1), reduction="none")
    count = keep.sum()
    return (flat * keep.reshape(-1)).sum() / count.clamp_min(1), count


# ---------------------------------------------------------------- the step loop


def learning_rate(step: int, *, total_steps: int, optim: OptimSpec) -> float:
    if step < optim.warmup_steps:
        return optim.lr * (step + 1) / optim.warmup_steps
    if optim.schedule == "constant":
        return optim.lr
    progress = (step - optim.warmup_steps) / max(1, total_steps - optim.warmup_steps)
    return optim.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class ObjectiveTask(OneModelTask):
    """Trains ``objective`` on ``data`` for ``train.steps`` steps on the shared step loop (``train()``); a
    checkpoint stores only the weights the objective trains."""

    throughput_name = "tokens_per_s"
    optimizer_name = "objective"

    def __init__(self, ctx: RunContext, *, objective: torch.nn.Module, data: TokenData, loop: LoopSpec,
                 optim: OptimSpec, seed: int):
        self.ctx, self.model, self.spec, self.optim_spec, self.seed = ctx, objective, loop, optim, seed
        if loop.batch_size > len(data):
            raise ConfigError([f"train.batch_size: {loop.batch_size} is more than the {len(data)} training "
                               "sequences"], hint="lower train.batch_size or add data")
        per_rank_batch(loop.batch_size, ctx.dist.world_size)  # a batch the ranks cannot split: refused before step 0
        self.data = data.to(ctx.device)
        self.steps_per_epoch = len(data) // loop.batch_size
        self.optimizer = adamw_without_decay_on_vectors(objective.parameters(), lr=optim.lr,
                                                        weight_decay=optim.weight_decay)
        self._order, self._order_epoch = None, -1
        self.loop = StepLoop(ctx, settings=loop, seed=seed, total_steps=loop.steps, description=ctx.recipe,
                             grad_clip=optim.grad_clip)
        self.loop.restore(self)

    def learning_rate(self, step: int) -> float:
        return learning_rate(step, total_steps=self.spec.steps, optim=self.optim_spec)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        ctx = self.ctx
        epoch, in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order, self._order_epoch = epoch_order(len(self.data), seed=self.seed, epoch=epoch), epoch
        index = step_indices(self._order, in_epoch, batch_size=self.spec.batch_size, rank=ctx.dist.rank,
                             world_size=ctx.dist.world_size).to(ctx.device)
        batch = self.data.take(index)
        # Sentences are right-padded to seq_len: cut the columns no row of this batch uses (the loss is the same).
        longest = int(batch.mask.sum(1).max())
        batch = TokenData(batch.ids[:, :longest], batch.mask[:, :longest], batch.labels)
        loss, stats = module(batch.ids, batch.mask, batch.labels)
        return StepOutput(loss, {k: v.detach() if isinstance(v, torch.Tensor) else v for k, v in stats.items()},
                          count=int(batch.mask.sum()))

    def log_due(self, done: int) -> bool:
        return done % self.spec.log_every == 0

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        return f"step {done}/{self.spec.steps}", {"lr": lr, **means}

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.model.trainable_state()

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.model.load_trainable_state(model_state)


@torch.no_grad()
def mean_loss(loss_fn, data: TokenData, *, batch_size: int, device: torch.device) -> float:
    """Token-weighted mean of ``loss_fn(ids, mask, labels) -> (mean loss, count)`` over ``data``."""
    total, count = 0.0, 0
    for start in range(0, len(data), batch_size):
        batch = data.take(torch.arange(start, min(start + batch_size, len(data)))).to(device)
        loss, n = loss_fn(batch.ids, batch.mask, batch.labels)
        total += float(loss) * int(n)
        count += int(n)
    return total / max(count, 1)


# ---------------------------------------------------------------- what the LM-tuning recipes share


def load_labelled_lm_data(cfg, ctx: RunContext, what: str):
    """(loaded LM, train TokenData, val TokenData) for a recipe with ``lm`` and labelled ``data``."""
    if not cfg.lm:
        raise ConfigError(["lm: required: the LM to start from"], source=what,
                          hint="lm=NAME (a causal-lm artifact, e.g. from `mltk train lm`), a Hugging Face folder, "
                               "or hf:NAME")
    seed_everything(cfg.seed)
    loaded = load_causal_lm(cfg.lm, registry=ctx.registry, device=ctx.device)
    train, val = read_text_data(cfg.data, seed=cfg.seed, labelled=True, what=what)
    limit = loaded.model.config.max_position_embeddings if hasattr(loaded.model.config, "max_position_embeddings") \
        else cfg.train.seq_len
    seq_len = min(cfg.train.seq_len, limit)
    train_data = encode_sentences(loaded.tokenizer, train, seq_len=seq_len)
    val_data = encode_sentences(loaded.tokenizer, val, seq_len=seq_len)
    toxic = int((train_data.labels == 1).sum())
    ctx.reporter.info(f"data: {len(train)} training sentences ({toxic} toxic, {len(train) - toxic} non-toxic), "
                      f"{len(val)} validation; LM {loaded.reference} "
                      f"({sum(p.numel() for p in loaded.model.parameters())} parameters)")
    return loaded, train_data, val_data


def label_perplexity(loss_and_count, data: TokenData, label: int, *, batch_size: int, device) -> float | None:
    rows = data.where(data.labels == label)
    if len(rows) == 0:
        return None
    loss = mean_loss(lambda i, m, _: loss_and_count(i, m), rows, batch_size=batch_size, device=device)
    return math.exp(min(loss, 50.0))
