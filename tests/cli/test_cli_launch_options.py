"""Every command that trains takes the same torchrun flags, defined once, and relaunches itself with them."""

from __future__ import annotations

import click
import pytest
import typer

from mltk.cli.launching import FLAGS, worker_args
from mltk.cli.main import app
from mltk.core import config as config_mod
from mltk.core import distributed
from mltk.engines.quantize import QuantizeConfig, resolve_config


def _options(command: str) -> set[str]:
    group = typer.main.get_command(app)
    with click.Context(group) as ctx:
        return {decl for param in group.get_command(ctx, command).params for decl in param.opts}


@pytest.mark.parametrize("command", ["train", "condense", "quantize"])
def test_every_training_command_has_the_launcher_flags(command):
    assert set(FLAGS) <= _options(command)


def test_a_command_that_does_not_train_has_none():
    assert not set(FLAGS) & _options("eval")


def test_the_ranks_run_the_typed_command_without_the_launcher_flags():
    typed = ["quantize", "m.pt", "--nproc-per-node", "2", "--bits", "1", "--master-port=29500", "train.epochs=1",
             "--nnodes", "1", "--format", "json"]
    assert worker_args(typed) == ["quantize", "m.pt", "--bits", "1", "train.epochs=1", "--format", "json"]


@pytest.mark.parametrize("typed", [
    ["train", "supervised", "train.epochs=1"],
    ["condense", "digits", "--ipc", "1"],
    ["quantize", "model.pt", "--data", "digits", "--bits", "1"],
])
def test_every_training_command_relaunches_itself_under_torchrun(cli, monkeypatch, typed):
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    launched = []

    def fake_launch(options, worker_argv):
        launched.append((options, list(worker_argv)))
        return 0

    monkeypatch.setattr(distributed, "launch", fake_launch)
    result = cli(*typed, "--nproc-per-node", "2", "--master-port", "29511")
    assert result.code == 0, result.stderr
    assert launched == [(distributed.LaunchOptions(nproc_per_node=2, master_port=29511), typed)]


def test_quantize_is_a_registered_recipe_with_a_preset_to_copy(cli, tmp_path):
    listed = cli("recipes", "--format", "json")
    assert "quantize" in [r["name"] for r in listed.json()["recipes"]]
    copied = cli("cp", "quantize/digits", str(tmp_path / "q.yaml"))
    assert copied.code == 0, copied.stderr
    copied_cfg = config_mod.resolve(QuantizeConfig, config_file=tmp_path / "q.yaml", overrides=["model.ref=m"])
    assert copied_cfg == resolve_config(preset="digits", overrides=["model.ref=m"])
    assert copied_cfg.train.epochs > 0
