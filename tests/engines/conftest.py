"""Fixtures the engine tests share, all built here (no download, no shared data): for detox a tiny
byte-level BPE tokenizer, a tiny GPT-2 LM and small labelled corpora in the official file layouts; for
quantize a small trained float classifier."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe

NONTOXIC = ["what a lovely day in the park", "the cat sat on the warm mat", "we planted flowers by the river",
            "thank you for the kind letter", "the train left the station on time", "she read a good book today",
            "the soup was hot and tasty", "our team won the game last night"]
TOXIC = ["you are a stupid idiot", "shut up you dumb moron", "what a pathetic loser you are",
         "you stupid idiot go away", "nobody likes you moron", "you dumb pathetic idiot"]


def tiny_tokenizer(folder: Path):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GPT2TokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=360, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    backend.train_from_iterator((NONTOXIC + TOXIC) * 20, trainer)
    tokenizer = GPT2TokenizerFast(tokenizer_object=backend, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                  unk_token="<|endoftext|>")
    tokenizer.save_pretrained(folder)
    return tokenizer


@pytest.fixture(scope="session")
def detox_files(tmp_path_factory) -> dict[str, Path]:
    """Tokenizer folder, tiny random GPT-2 LM folder, a labelled CSV, a plain text file and prompt files."""
    from transformers import GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("detox")
    tokenizer = tiny_tokenizer(root / "tokenizer")
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=len(tokenizer), n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                       bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id))
    model.save_pretrained(root / "lm")
    tokenizer.save_pretrained(root / "lm")
    rng = random.Random(0)
    rows = [(t, 0) for t in NONTOXIC] * 6 + [(t, 1) for t in TOXIC] * 6
    rng.shuffle(rows)
    with open(root / "labelled.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        # a number suffix makes the sentences distinct, so the hash parts split them
        writer.writerows((f"{text} {i}", label) for i, (text, label) in enumerate(rows))
    (root / "corpus.txt").write_text("\n".join(f"{t} {i}" for i, (t, _) in enumerate(rows * 3)) + "\n")
    prompts = [{"prompt": {"text": "you are a", "toxicity": 0.8}, "challenging": True},
               {"prompt": {"text": "the cat sat", "toxicity": 0.1}, "challenging": False}]
    (root / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in prompts))
    return {"root": root, "tokenizer": root / "tokenizer", "lm": root / "lm", "labelled": root / "labelled.csv",
            "corpus": root / "corpus.txt", "prompts": root / "prompts.jsonl"}


FP_OVERRIDES = ["model.options.width=16", "model.options.depth=3", "model.options.norm=batchnorm",
                "train.epochs=6", "train.batch_size=32", "optim.lr=0.05", "name=fp-convnet"]


@pytest.fixture(scope="session")
def fp_digits(tmp_path_factory) -> Path:
    """An exported artifact folder (card.json + model.safetensors): a ConvNet-3 of width 16 on digits.

    Three conv layers and a classifier: the first conv and the classifier stay
    float, so two layers are quantized.
    """
    root = tmp_path_factory.mktemp("fp-digits")
    entry = get_recipe("supervised")
    cfg = config.resolve(entry.config_class, preset=preset_path("supervised", "digits"), overrides=FP_OVERRIDES)
    registry = Registry(root / "home")
    results = run_recipe(entry, cfg, resume=None, runs_root=root / "runs", registry=registry,
                         reporter=Reporter("quiet"))
    assert results["metrics"]["test_accuracy"] > 0.85, results["metrics"]
    out = root / "fp-convnet"
    registry.export(results["artifact"], out)
    return out
