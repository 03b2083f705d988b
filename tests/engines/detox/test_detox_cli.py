"""End to end through the real entry point: train lm -> adlm / dexperts / scorer -> detox-generate -> eval.

Tiny everything (a 2-layer width-32 GPT-2 over a 360-token BPE vocabulary, a few steps), so it checks the
plumbing and the artifacts, not the quality; the quality is measured in benchmarks/detox.py.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from mltk.core.config import resolve
from mltk.core.console import Reporter
from mltk.core.distributed import DistInfo
from mltk.core.registry import Registry
from mltk.core.run_recipe import RunContext
from mltk.core.runs import RunDir
from mltk.engines.detox.adlm_recipe import AdlmRecipe
from mltk.engines.detox.config import AdlmConfig

TINY_LOOP = ["train.batch_size=4", "train.seq_len=16", "train.log_every=2", "train.eval_batch_size=8"]


@pytest.fixture
def tiny_lm(cli, detox_files):
    result = cli("train", "lm", f"tokenizer={detox_files['tokenizer']}", f"data=text:{detox_files['corpus']}",
                 "data.sources=[]",
                 "name=tiny-lm", "model.n_layer=2", "model.n_embd=32", "model.n_head=2", "model.n_positions=64",
                 "train.steps=4", *TINY_LOOP, "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


def test_adlm_training_leaves_the_lm_bit_identical_and_moves_only_the_head(mltk_env, detox_files):
    cfg = resolve(AdlmConfig, overrides=[f"lm={detox_files['lm']}", f"data=labelled:{detox_files['labelled']}",
                                         "train.steps=3", "adlm.fisher_sequences=2", *TINY_LOOP])
    run = RunDir.create(mltk_env / "runs", "adlm", "t", config_yaml="", config_hash="x")
    ctx = RunContext(recipe="adlm", run=run, dist=DistInfo(), device=torch.device("cpu"),
                     registry=Registry(mltk_env / "home"), reporter=Reporter("quiet"), resume_from=None)
    recipe = AdlmRecipe(cfg, ctx)
    recipe.setup()
    lm_before = {k: v.clone() for k, v in recipe.loaded.model.state_dict().items()}
    head_before = {k: v.clone() for k, v in recipe.head.state_dict().items()}
    recipe.train()
    assert all(torch.equal(v, lm_before[k]) for k, v in recipe.loaded.model.state_dict().items())
    assert all(not p.requires_grad for p in recipe.loaded.model.parameters())
    assert any(not torch.equal(v, head_before[k]) for k, v in recipe.head.state_dict().items())


@pytest.mark.slow
def test_train_generate_and_evaluate_every_method(cli, tiny_lm, detox_files, mltk_env):
    lm_ref = tiny_lm["artifact"]
    assert tiny_lm["metrics"]["val_perplexity"] > 1
    data = f"data=labelled:{detox_files['labelled']}"
    adlm = cli("train", "adlm", f"lm={lm_ref}", data, "name=tiny-adlm", "train.steps=4", "adlm.fisher_sequences=2",
               *TINY_LOOP, "--format", "json")
    assert adlm.code == 0, adlm.stderr
    record = cli("show", "tiny-adlm", "--format", "json").json()
    card = record["card"]
    assert card["kind"] == "adlm" and card["lineage"] == {"parent": lm_ref, "relation": "detoxified"}
    assert list(card["files"]) == ["adlm.safetensors"]  # only ADLM's own weights are stored
    assert card["parameters"] == adlm.json()["metrics"]["added_parameters"] < 20_000
    dexperts = cli("train", "dexperts", f"lm={lm_ref}", data, "name=tiny-dexperts", "train.steps=2", *TINY_LOOP,
                   "--format", "quiet")
    assert dexperts.code == 0 and dexperts.stdout.strip() == "tiny-dexperts:1", dexperts.stderr
    scorer = cli("train", "toxicity-scorer", data, "data.part=[0,1]", "extra_test=[]", "reference_rtp=[]",
                 "model.features=4096", "model.test_fraction=0.3", "--format", "json")
    assert scorer.code == 0, scorer.stderr
    assert scorer.json()["metrics"]["test_accuracy"] > 0.8  # the toy labels are easy, and held out

    one = cli("detox-generate", "tiny-adlm", "--prompt", "you are a", "-n", "3", "--max-new-tokens", "5",
              "--seed", "1", "--format", "json")
    assert one.code == 0, one.stderr
    assert one.json()["method"] == "adlm" and len(one.json()["continuations"]) == 3
    again = cli("detox-generate", "tiny-adlm", "--prompt", "you are a", "-n", "3", "--max-new-tokens", "5",
                "--seed", "1", "--format", "json")
    assert again.json()["continuations"] == one.json()["continuations"]  # a seed fixes the samples
    base = cli("detox-generate", "tiny-adlm", "--method", "base", "--alpha", "0", "--prompt", "you are a",
               "--max-new-tokens", "5", "--format", "json")
    assert base.code == 0 and base.json()["method"] == "base", base.stderr
    other_lm = cli("detox-generate", "tiny-adlm", "--lm", str(detox_files["lm"]), "--prompt", "you are a")
    assert other_lm.code == 3 and "trained on another LM" in other_lm.stderr
    lines = cli("detox-generate", "tiny-dexperts", "--prompts", str(detox_files["prompts"]), "-n", "2",
                "--max-new-tokens", "4")
    assert lines.code == 0, lines.stderr
    records = [json.loads(line) for line in lines.stdout.splitlines()]
    assert [r["prompt"] for r in records] == ["you are a", "the cat sat"]
    assert all(len(r["continuations"]) == 2 for r in records) and records[0]["challenging"] is True

    results = {}
    for ref in ("tiny-adlm", "tiny-dexperts", lm_ref):
        out = mltk_env / f"{ref.replace(':', '-')}.jsonl"
        evaluated = cli("eval", ref, "--protocol", "toxicity", "--prompts", str(detox_files["prompts"]),
                        "--scorer", "toxicity-scorer", "--judge", lm_ref, "--n", "3", "--max-new-tokens", "4",
                        "--out", str(out), "--format", "json")
        assert evaluated.code == 0, evaluated.stderr
        results[ref] = evaluated.json()
        assert len(out.read_text().splitlines()) == 2
    metrics = results["tiny-adlm"]["metrics"]
    assert 0.0 <= metrics["expected_max_toxicity"] <= 1.0 and metrics["toxicity_probability"] in (0.0, 0.5, 1.0)
    assert metrics["perplexity"] > 1 and 0 < metrics["dist_1"] <= 1 and metrics["tokens_per_s"] > 0
    assert results["tiny-adlm"]["primary_metric"] == "expected_max_toxicity"
    heldout = scorer.json()["metrics"]["test_balanced_accuracy"]  # the scorer's held-out accuracy, reported
    assert results["tiny-adlm"]["scorer_heldout"]["test_balanced_accuracy"] == heldout
    assert results[lm_ref]["method"] == "base" and results[lm_ref]["metrics"]["added_parameters"] == 0
    lm_parameters = tiny_lm["metrics"]["parameters"]
    assert results["tiny-dexperts"]["metrics"]["added_parameters"] == 2 * lm_parameters  # two whole LMs
    assert metrics["added_parameters"] < lm_parameters / 2  # one block, two vectors and a linear layer

    exported = mltk_env / "exported"
    assert cli("export", lm_ref, "-o", str(exported)).code == 0
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoModelForCausalLM.from_pretrained(exported).config.n_layer == 2
    assert AutoTokenizer.from_pretrained(exported)("you")["input_ids"]


def test_bad_inputs_exit_with_one_line_and_the_documented_code(cli, detox_files, mltk_env):
    no_tokenizer = mltk_env / "no-tokenizer"
    shutil.copytree(detox_files["lm"], no_tokenizer)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        (no_tokenizer / name).unlink(missing_ok=True)
    result = cli("detox-generate", str(no_tokenizer), "--prompt", "hello")
    assert result.code == 3 and "no tokenizer" in result.stderr and result.stderr.count("\n") == 1

    mismatched = mltk_env / "mismatched"
    shutil.copytree(detox_files["lm"], mismatched)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(detox_files["tokenizer"])
    tokenizer.add_tokens([f"extra{i}" for i in range(40)])  # ids past the LM's embedding
    tokenizer.save_pretrained(mismatched)
    result = cli("detox-generate", str(mismatched), "--prompt", "hello")
    assert result.code == 3 and "tokenizer has" in result.stderr and "embedding" in result.stderr

    result = cli("detox-generate", str(detox_files["lm"]), "--prompt", "   ")
    assert result.code == 2 and "empty prompt" in result.stderr

    bad = mltk_env / "bad.jsonl"
    bad.write_text('{"prompt": "fine"}\n{broken\n{"prompt": ""}\n')
    result = cli("detox-generate", str(detox_files["lm"]), "--prompts", str(bad))
    assert result.code == 3 and "line 2" in result.stderr and "line 3" in result.stderr and result.stdout == ""

    result = cli("detox-generate", str(detox_files["lm"]), "--prompt", "hi", "--method", "adlm")
    assert result.code == 2 and "mltk train adlm" in result.stderr
    result = cli("train", "adlm", "train.steps=1")
    assert result.code == 2 and "lm: required" in result.stderr
