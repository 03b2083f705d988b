"""The condensed evaluation (minutes of training fresh networks) shows its progress on stderr."""

from __future__ import annotations

import torch

from mltk.core.console import Reporter
from mltk.data import load_dataset
from mltk.engines.condense import protocols
from mltk.engines.condense.config import EvalSpec, NetSpec


def test_off_a_terminal_the_evaluation_prints_epoch_lines_on_stderr(capsys, monkeypatch):
    monkeypatch.setenv("CI", "1")
    monkeypatch.setattr(protocols, "PROGRESS_LINE_SECONDS", 0.0)  # a line after every epoch
    test = load_dataset("digits", "test")
    torch.manual_seed(0)
    images = torch.rand(20, *test.image_shape)
    labels = torch.arange(10).repeat_interleave(2)
    result = protocols.evaluate_condensed(
        images, labels, test, net=NetSpec(options={"width": 4, "depth": 1}), spec=EvalSpec(runs=2, epochs=3, dsa="none"),
        mean=[0.5], std=[0.5], flip_ok=False, seed=0, device=torch.device("cpu"), reporter=Reporter("human"))
    assert len(result["accuracies"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    for run in (1, 2):
        for epoch in (1, 2, 3):
            assert f"evaluation run {run}/2: epoch {epoch}/3" in err
        assert f"evaluation run {run}/2: test accuracy" in err
