"""What every detox recipe shares: text turned into token tensors, and the task the shared step loop runs.

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

import dataclasses
import math

import torch

from mltk.core.errors import ConfigError
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.optimization import adamw_without_decay_on_vectors
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator
from mltk.data.batches import epoch_order, per_rank_batch, step_indices
from mltk.data.text import TextExample, in_slice, read_sources
from mltk.engines.detox.config import LoopSpec, OptimSpec, TextData

NO_LABEL = -1


@dataclasses.dataclass
class TokenData:
    """Sequences of token ids: ``ids`` int64 [N, T], ``mask`` bool [N, T] (real tokens), ``labels`` int64 [N]."""

    ids: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return self.ids.shape[0]

    def take(self, index: torch.Tensor) -> TokenData:
        return TokenData(self.ids[index], self.mask[index], self.labels[index])

    def to(self, device: torch.device) -> TokenData:
        return TokenData(self.ids.to(device), self.mask.to(device), self.labels.to(device))

    def where(self, keep: torch.Tensor) -> TokenData:
        return self.take(torch.nonzero(keep).flatten())


# ---------------------------------------------------------------- text -> tokens


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


def encode_sentences(tokenizer, examples: list[TextExample], *, seq_len: int) -> TokenData:
    """One row per sentence: end-of-text as a start token, the sentence cut to ``seq_len``, padding masked."""
    start = _start_token(tokenizer)
    encoded = tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]
    ids = torch.full((len(examples), seq_len), start, dtype=torch.int64)
    mask = torch.zeros((len(examples), seq_len), dtype=torch.bool)
    for row, tokens in enumerate(encoded):
        tokens = [start] + list(tokens)[:seq_len - 1]
        ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.int64)
        mask[row, :len(tokens)] = True
    labels = torch.tensor([NO_LABEL if e.label is None else e.label for e in examples], dtype=torch.int64)
    return TokenData(ids, mask, labels)


def pack_corpus(tokenizer, examples: list[TextExample], *, seq_len: int) -> TokenData:
    """Every text followed by end-of-text, concatenated and cut into rows of ``seq_len`` (the rest dropped)."""
    end = _start_token(tokenizer)
    stream: list[int] = []
    for tokens in tokenizer([e.text for e in examples], add_special_tokens=False)["input_ids"]:
        stream.extend(tokens)
        stream.append(end)
    rows = len(stream) // seq_len
    if rows == 0:
        raise ConfigError([f"data: {len(stream)} tokens, fewer than one sequence of train.seq_len={seq_len}"],
                          hint="add text or lower train.seq_len")
    ids = torch.tensor(stream[:rows * seq_len], dtype=torch.int64).view(rows, seq_len)
    return TokenData(ids, torch.ones_like(ids, dtype=torch.bool), torch.full((rows,), NO_LABEL))


def balance_labels(data: TokenData, *, seed: int) -> TokenData:
    """Every labelled row, plus seeded repeats of the rarer label's rows until both labels are equally common.

    The toxic corpora are mostly toxic (Davidson: 83%); without this the
    non-toxic side of a detoxifier would see a sixth of the sentences.
    """
    rows = [torch.nonzero(data.labels == label).flatten() for label in (0, 1)]
    if any(len(r) == 0 for r in rows):
        counts = ", ".join(f"{len(r)} {name}" for r, name in zip(rows, ("non-toxic", "toxic"), strict=True))
        raise ConfigError([f"data: needs both toxic and non-toxic sentences, got {counts}"],
                          hint="add labelled sources with both kinds of text")
    target = max(len(r) for r in rows)
    picked = []
    for label, r in enumerate(rows):
        extra = target - len(r)
        repeats = r[torch.randint(len(r), (extra,), generator=generator(seed, 0xBA1, label))] if extra else r[:0]
        picked.append(torch.cat([r, repeats]))
    return data.take(torch.cat(picked))


def _start_token(tokenizer) -> int:
    token = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.bos_token_id
    if token is None:
        raise ConfigError(["the tokenizer has neither an end-of-text nor a beginning-of-text token"],
                          hint="use a tokenizer with an eos token (GPT-2's is <|endoftext|>)")
    return int(token)


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


class ObjectiveTask(StepTask):
    """Trains ``objective`` on ``data`` for ``train.steps`` steps on the shared step loop."""

    throughput_name = "tokens_per_s"

    def __init__(self, ctx: RunContext, *, objective: torch.nn.Module, data: TokenData, loop: LoopSpec,
                 optim: OptimSpec, seed: int):
        self.ctx, self.objective, self.spec, self.optim_spec, self.seed = ctx, objective, loop, optim, seed
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

    def run(self) -> None:
        self.objective.train()
        self.loop.run(self)

    def forward_module(self) -> torch.nn.Module:
        return self.objective

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"objective": self.optimizer}

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
        return self.objective.trainable_state()

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.objective.load_trainable_state(model_state)


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
