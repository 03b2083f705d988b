"""What every detox recipe shares: text turned into token tensors, and one resumable step loop.

Each recipe supplies an *objective*: an ``nn.Module`` whose
``forward(ids, mask, labels) -> (loss, stats)`` computes the loss of a batch
and whose ``trainable_state()`` / ``load_trainable_state()`` name the weights
that change (the LM for ``lm``/``dapt``, the two experts for ``dexperts``,
the ADLM head for ``adlm``). The loop here runs the steps: a seeded data order
per epoch, rank-sliced batches under DDP, warm-up + cosine learning rate as a
pure function of the step, a checkpoint every ``ckpt_every`` steps (or
``ckpt_minutes``) and at the end, and a clean stop with a checkpoint when
``ctx.should_stop()`` says so. Every random draw of step N depends only on
(seed, step, rank), so a resumed run ends bit-identical (CPU) to an
uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch.nn.parallel import DistributedDataParallel

from mltk.core.device import amp_dtype, autocast
from mltk.core.errors import ConfigError
from mltk.core.run_recipe import RunContext
from mltk.core.runs import checkpoint_due
from mltk.core.seeding import generator, seed_step
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
    lo, hi = (list(spec.part) + [None, None])[:2]
    problems = []
    if lo is None or hi is None or not 0.0 <= lo < hi <= 1.0 or len(spec.part) != 2:
        problems.append(f"data.part: expected [lo, hi] with 0 <= lo < hi <= 1, got {list(spec.part)}")
    if not 0.0 <= spec.val_fraction < 1.0:
        problems.append(f"data.val_fraction: expected a fraction in [0, 1), got {spec.val_fraction}")
    if problems:
        raise ConfigError(problems, source=what)
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


class StepLoop:
    """Trains ``objective`` on ``data`` for ``loop.steps`` steps, resumable and data-parallel."""

    def __init__(self, ctx: RunContext, *, objective: torch.nn.Module, data: TokenData, loop: LoopSpec,
                 optim: OptimSpec, seed: int):
        self.ctx, self.objective, self.loop, self.optim_spec, self.seed = ctx, objective, loop, optim, seed
        problems = []
        if loop.steps < 1:
            problems.append(f"train.steps: must be at least 1, got {loop.steps}")
        if optim.lr <= 0:
            problems.append(f"optim.lr: must be positive, got {optim.lr}")
        if loop.batch_size > len(data):
            problems.append(f"train.batch_size: {loop.batch_size} is more than the {len(data)} training sequences")
        if problems:
            raise ConfigError(problems, hint="lower train.batch_size or add data")
        self.local_batch = per_rank_batch(loop.batch_size, ctx.dist.world_size)
        self.data = data.to(ctx.device)
        self.steps_per_epoch = len(data) // loop.batch_size
        decay, no_decay = [], []
        for param in objective.parameters():
            if param.requires_grad:
                (decay if param.dim() >= 2 else no_decay).append(param)
        self.params = decay + no_decay
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": optim.weight_decay},
                                            {"params": no_decay, "weight_decay": 0.0}], lr=optim.lr)
        self.amp = amp_dtype(ctx.device, loop.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp == torch.float16)
        self.start_step = 0
        if ctx.resume_from is not None:
            self._restore(ctx.resume_from)
        self.train_module = objective
        if ctx.dist.enabled:
            self.train_module = DistributedDataParallel(
                objective, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)

    def _restore(self, ckpt) -> None:
        self.objective.load_trainable_state(ckpt.load_model_state())
        state = ckpt.load_trainer_state()
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        self.start_step = int(state["step"])
        if state.get("total_steps") != self.loop.steps:
            self.ctx.reporter.warn(f"the checkpoint was written for {state.get('total_steps')} steps, "
                                   f"this config runs {self.loop.steps}")

    def run(self) -> None:
        ctx, loop = self.ctx, self.loop
        self.train_module.train()
        order, order_epoch = None, -1
        totals: dict[str, float] = {}
        tokens, since, started = 0, 0, time.perf_counter()
        last_checkpoint = time.perf_counter()
        with ctx.reporter.progress(loop.steps, start=self.start_step, description=ctx.recipe) as bar:
            for step in range(self.start_step, loop.steps):
                ctx.stop_if_asked(step, loop.steps, self._checkpoint)
                epoch, in_epoch = divmod(step, self.steps_per_epoch)
                if epoch != order_epoch:
                    order, order_epoch = epoch_order(len(self.data), seed=self.seed, epoch=epoch), epoch
                lr = learning_rate(step, total_steps=loop.steps, optim=self.optim_spec)
                stats, count = self._step(step, order, in_epoch, lr)
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + value
                tokens += count
                since += 1
                done = step + 1
                if bar.wants_update():
                    bar.update(done, loss=stats["loss"], lr=lr)
                if done % loop.log_every == 0 or done == loop.steps:
                    seconds = time.perf_counter() - started
                    record = {"step": done, "lr": lr, **{k: v / since for k, v in totals.items()},
                              "tokens_per_s": tokens / max(seconds, 1e-9)}
                    ctx.run.append_metrics(record)
                    bar.line(f"step {done}/{loop.steps}  " + "  ".join(
                        f"{k} {v:.4g}" for k, v in record.items() if k != "step"))
                    totals, tokens, since, started = {}, 0, 0, time.perf_counter()
                if checkpoint_due(done, loop.steps, every_steps=loop.ckpt_every,
                                  every_minutes=loop.ckpt_minutes, last_saved=last_checkpoint):
                    self._checkpoint(done)
                    last_checkpoint = time.perf_counter()
            bar.update(loop.steps)

    def _step(self, step: int, order: torch.Tensor, in_epoch: int, lr: float) -> tuple[dict[str, float], int]:
        ctx = self.ctx
        seed_step(self.seed, step, ctx.dist.rank, ctx.device)
        index = step_indices(order, in_epoch, batch_size=self.loop.batch_size, rank=ctx.dist.rank,
                             world_size=ctx.dist.world_size).to(ctx.device)
        batch = self.data.take(index)
        # Sentences are right-padded to seq_len: cut the columns no row of this batch uses (the loss is the same).
        longest = int(batch.mask.sum(1).max())
        batch = TokenData(batch.ids[:, :longest], batch.mask[:, :longest], batch.labels)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with autocast(ctx.device, self.amp):
            loss, stats = self.train_module(batch.ids, batch.mask, batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.optim_spec.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.optim_spec.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return {"loss": float(loss.detach()), **{k: float(v) for k, v in stats.items()}}, int(batch.mask.sum())

    def _checkpoint(self, step: int) -> None:
        if not self.ctx.dist.is_main:
            return
        state = {"step": step, "total_steps": self.loop.steps, "optimizer": self.optimizer.state_dict(),
                 "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None}
        self.ctx.run.save_checkpoint(step, self.objective.trainable_state(), state,
                                     keep=self.loop.keep_checkpoints)


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
