"""The recipe and the protocol through the real entry point, on the built-in digits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CEC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fscil_index_lists_CEC" / "cifar100"


def test_train_then_eval_replays_every_session_to_the_same_weights(cli):
    trained = cli("train", "softnet", "name=fs", "--format", "json")
    assert trained.code == 0, trained.stderr
    metrics = trained.json()["metrics"]
    assert set(metrics) >= {"session_0_accuracy", "session_2_accuracy", "mean_accuracy", "performance_drop",
                            "last_base_accuracy", "last_novel_accuracy"}
    assert metrics["performance_drop"] == metrics["session_0_accuracy"] - metrics["session_2_accuracy"]

    scored = cli("eval", "fs", "--protocol", "fscil", "--format", "json")
    assert scored.code == 0, scored.stderr
    out = scored.json()
    assert out["replay_matches_training"] is True
    assert out["metrics"] == metrics  # the replay scores exactly what training scored
    assert "session 2" in out and "novel" in out["session 2"]


def test_bad_capacity_and_layer_are_usage_errors(cli):
    bad = cli("train", "softnet", "model.capacity=1.5")
    assert bad.code == 2 and "capacity" in bad.stderr
    missing = cli("train", "softnet", "incremental.layers=[stages.9.0]")
    assert missing.code == 2 and "stages.9.0" in missing.stderr and "stages.1.0" in missing.stderr


def test_a_dataset_with_too_few_classes_is_refused(cli):
    short = cli("train", "softnet", "sessions.sessions=3")
    assert short.code == 3 and "needs 12 classes" in short.stderr


@pytest.mark.slow
@pytest.mark.skipif(not CEC.is_dir(), reason="the CEC index lists of ../shared/data are not here")
def test_cifar100_preset_runs_the_official_session_structure(cli, tmp_path):
    # CIFAR-100 is not available offline: 8x8 noise images stand in, labelled so that the official lists
    # index the classes they name (session 1: 60 classes, then 8 x 5 new ones).
    lists = [[int(v) for v in (CEC / f"session_{i}.txt").read_text().split()] for i in range(1, 10)]
    labels = np.full(50000, 99, dtype=np.int64)
    labels[lists[0]] = np.arange(30000) % 60
    for session, indices in enumerate(lists[1:]):
        labels[indices] = 60 + 5 * session + np.arange(25) // 5
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c100.npz", x_train=rng.integers(0, 255, (50000, 8, 8, 3), dtype=np.uint8), y_train=labels,
             x_test=rng.integers(0, 255, (200, 8, 8, 3), dtype=np.uint8), y_test=np.arange(200) % 100)
    result = cli("train", "softnet", "--preset", "cifar100", f"data=npz:{tmp_path / 'c100.npz'}",
                 f"sessions.index_lists={CEC}", "model.widths=[4]", "model.blocks=[1]", "train.max_steps=1",
                 "train.batch_size=64", "incremental.steps=1", "incremental.layers=[last]", "--format", "json")
    assert result.code == 0, result.stderr
    metrics = result.json()["metrics"]
    assert [k for k in metrics if k.startswith("session_")] == [f"session_{i}_accuracy" for i in range(9)]
