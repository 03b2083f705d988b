"""``mltk train umbc`` and ``mltk eval --protocol mbc`` through the real entry point, the stored artifact read
back from Python, and configs that cannot work refused before training."""

from __future__ import annotations

import numpy as np
import torch

from mltk.engines.sets import chunks_of, load_set_model

TINY = ["train.steps=4", "data.test_sets=4", "model.hidden=16", "model.heads=2"]


def test_train_then_eval_mbc_and_stream_from_python(cli):
    trained = cli("train", "umbc", *TINY, "--format", "json")
    assert trained.code == 0, trained.stderr
    metrics = trained.json()["metrics"]
    assert metrics["mbc_max_abs_diff"] < 1e-5 and np.isfinite(metrics["test_nll"])
    evaluated = cli("eval", trained.json()["artifact"], "--protocol", "mbc", "--partitions", "8", "--set-size",
                    "200", "--format", "json")
    assert evaluated.code == 0, evaluated.stderr
    result = evaluated.json()
    assert result["metrics"]["max_abs_diff"] < 1e-5
    memory = result["peak_tensor_bytes_per_chunk_size"]
    assert memory["1"] < memory["100"] <= result["peak_tensor_bytes_whole_set"] * 1.01

    loaded = load_set_model(trained.json()["artifact"])
    x = torch.randn(2, 300, 2)
    with torch.no_grad():
        whole, streamed = loaded.model.encode(x), loaded.model.encode_stream(chunks_of(x, 7))
    assert float((whole - streamed).abs().max()) < 1e-5


def test_point_cloud_training_reports_accuracy_and_calibration(cli, tmp_path):
    rng = np.random.default_rng(0)
    spheres = rng.normal(size=(12, 64, 3))
    spheres /= np.linalg.norm(spheres, axis=-1, keepdims=True)
    blobs = rng.normal(size=(12, 64, 3))
    np.savez(tmp_path / "clouds.npz", points=np.concatenate([spheres, blobs]).astype(np.float32),
             labels=np.repeat([0, 1], 12))
    # Adam at 3e-3 with the x0.1 decay at 70%: at a constant 1e-2 half of 24 seed pairs (data x training) ended
    # at chance, the head's ReLU units dead during the plateau at ln 2 or the loss collapsing after a spike;
    # these settings trained 48 of 48 to full held-out accuracy (a later sweep of 8 data x 4 training seeds: 31 of 32
    # reached >= 0.8, with or without the rFF in front of PMA)
    # the default preset (tiny) is written for Gaussian mixtures: the settings this test relies on are spelt out
    trained = cli("train", "umbc", f"data=npz:{tmp_path / 'clouds.npz'}", "data.points=64", "model.hidden=16",
                  "model.heads=2", "model.slots=4", "model.head_layers=1", "train.grad_set_size=16",
                  "train.chunk_size=16", "eval.chunk_size=16", "train.steps=120", "train.batch_size=6",
                  "train.element_dropout=0.2", "eval.mc_samples=2", "optim.lr=0.003", "optim.decay_at=0.7",
                  "--format", "json")
    assert trained.code == 0, trained.stderr
    metrics = trained.json()["metrics"]
    assert metrics["test_accuracy"] >= 0.8  # spheres from Gaussian blobs (chance: 0.5)
    assert {"test_ece", "test_mc_ece", "test_corrupted_ece", "test_corrupted_mc_accuracy"} <= metrics.keys()
    calibrated = cli("eval", trained.json()["artifact"], "--protocol", "calibration", "--mc-samples", "2",
                     "--format", "json")
    assert calibrated.code == 0, calibrated.stderr
    assert 0 <= calibrated.json()["metrics"]["corrupted_mc_ece"] <= 1


def test_configs_that_cannot_work_are_refused(cli):
    refused = cli("train", "umbc", *TINY, "model.kind=set-transformer")  # grad_set_size 16 in the tiny preset
    assert refused.code == 2 and "not mini-batch consistent" in refused.stderr
    refused = cli("train", "umbc", *TINY, "model.activation=relu")
    assert refused.code == 2 and "activation" in refused.stderr
    refused = cli("train", "umbc", *TINY, "train.chunk_size=0")
    assert refused.code == 2 and "chunk_size" in refused.stderr
    missing = cli("train", "umbc", *TINY, "data=npz:/nonexistent/x.npz")
    assert missing.code == 3 and "no such file" in missing.stderr
