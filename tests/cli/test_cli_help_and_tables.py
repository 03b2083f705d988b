"""Help describes the commands that exist, and text reaches the reader whole: no square-bracketed
words dropped as markup, no table cut to 80 columns because stdout is a pipe."""

from __future__ import annotations

import re

import typer

from mltk.cli.main import app

# The verbs the top-level help may use, and the command each one promises.
VERB_COMMANDS = {"train": "train", "evaluate": "eval", "condense": "condense", "binarize": "quantize",
                 "quantize": "quantize", "detoxify": "detox-generate", "animate": "talk", "detect": "detect",
                 "talk": "talk"}


def test_the_top_level_help_promises_only_commands_that_exist(cli):
    result = cli("--help")
    assert result.code == 0
    description = result.stdout.split("Options:")[0].lower()
    commands = set(typer.main.get_command(app).commands)
    promised = {VERB_COMMANDS[word] for word in re.findall(r"[a-z-]+", description) if word in VERB_COMMANDS}
    assert promised, description
    assert promised <= commands, f"help promises {sorted(promised - commands)}"


def test_help_keeps_text_in_square_brackets(cli):
    result = cli("condense", "--help")
    assert result.code == 0
    text = " ".join(result.stdout.split())  # help wraps lines
    assert "[default: the preset's]" in text and "[default: $MLTK_RUNS or ./runs]" in text


def test_recipes_keep_square_brackets_and_are_not_cut_in_a_pipe(cli):
    result = cli("recipes")
    assert result.code == 0
    assert "depth x [conv3x3-norm-ReLU-pool2x2] -> linear" in result.stdout
    assert "…" not in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) > 80


def test_ls_prints_whole_names_in_a_pipe(cli, tiny):
    name = "a-rather-long-artifact-name-for-a-continuous-integration-job"
    assert cli("train", "supervised", *tiny, f"name={name}", "--format", "quiet").code == 0
    result = cli("ls")
    assert result.code == 0
    assert f"{name}:1" in result.stdout and "…" not in result.stdout
