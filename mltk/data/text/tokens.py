"""Text as token tensors: sentences one per row or a corpus packed into rows, with labels.

Every row starts with the tokenizer's end-of-text token (GPT-2's convention
for a document start); padding is masked, never trained on.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.errors import ConfigError
from mltk.core.seeding import generator
from mltk.data.text.sources import TextExample

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
