"""The user's path through the real entry point: condense, eval, registry, export; bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mltk.data import load_dataset
from mltk.engines.condense import load_condensed
from mltk.engines.condense.artifact import factorized_set

# A small KFS run on digits: a 2-block ConvNet of width 8, 5 warm-up steps, 10 matching iterations, the
# evaluation network trained for 60 epochs on the synthetic set (at 20 its accuracy ran 0.16-0.29 over 14 seeds,
# too close to the bound below; at 60, 0.41-0.54 over 5).
TINY = ["model.options.width=8", "match.iterations=10", "match.batch_real=16", "kfs.warmup_steps=5",
        "eval.runs=1", "eval.epochs=60"]


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, result.stderr
    return lines[0]


@pytest.fixture
def condensed(cli, mltk_env):
    result = cli("condense", "digits", "--ipc", "1", *TINY, "--export", str(mltk_env / "exported"),
                 "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


def test_condense_accounts_storage_and_eval_reproduces_its_accuracy(cli, condensed):
    metrics = condensed["metrics"]
    assert condensed["artifact"] == "kfs-digits-ipc1:1"
    assert (metrics["budget_floats"], metrics["stored_floats"], metrics["synthetic_images"]) == (640, 640, 240)
    assert metrics["compression_ratio"] == round(1437 * 64 / 640, 3)
    assert 0.25 < metrics["test_accuracy"] <= 1.0  # well above chance (0.1), from one image per class

    evaluated = cli("eval", "kfs-digits-ipc1", "--protocol", "condensed", "--format", "json")
    assert evaluated.code == 0, evaluated.stderr
    report = evaluated.json()
    # The card keeps the evaluation settings; the same seed trains the same network.
    assert report["metrics"]["accuracy"] == metrics["test_accuracy"]
    assert (report["runs"], report["epochs"], report["images"], report["synthetic_images"]) == (1, 60, 360, 240)

    other = cli("eval", "kfs-digits-ipc1", "--protocol", "condensed", "--runs", "2", "--epochs", "5",
                "--format", "json")
    assert other.code == 0, other.stderr
    assert len(other.json()["accuracies"]) == 2 and other.json()["epochs"] == 5


def test_artifact_round_trips_through_the_registry_and_decodes_deterministically(cli, condensed, mltk_env):
    shown = cli("show", "kfs-digits-ipc1", "--format", "json").json()["card"]
    assert shown["kind"] == "condensed-dataset" and shown["engine"] == "condense"
    assert shown["lineage"] == {"parent": "dataset:digits", "relation": "condensed-from"}
    assert set(shown["files"]) == {"condensed.safetensors", "grid.png"}
    assert shown["condensed"]["storage"]["stored_floats"] == 640
    assert cli("verify", "kfs-digits-ipc1").code == 0

    first, second = load_condensed("kfs-digits-ipc1"), load_condensed("kfs-digits-ipc1:1")
    assert sum(t.numel() for t in first.tensors.values()) == 640  # what is stored is what is counted
    images, labels = first.pixels()
    assert torch.equal(images, second.pixels()[0]) and images.shape == (240, 1, 8, 8)
    assert torch.equal(labels, torch.arange(10).repeat_interleave(24))
    # Decoding is the stored codes through the stored decoders, nothing else.
    fset = factorized_set(first.info, first.tensors)
    with torch.no_grad():
        direct = fset.decoders(first.tensors["codes"].flatten(0, 1)).flatten(0, 1)
    assert torch.equal(direct * first.std + first.mean, images)

    exported = mltk_env / "folder"
    assert cli("export", "kfs-digits-ipc1", "-o", str(exported)).code == 0
    assert torch.equal(load_condensed(str(exported)).pixels()[0], images)
    from_folder = cli("eval", str(exported), "--protocol", "condensed", "--format", "json")
    assert from_folder.json()["metrics"]["accuracy"] == condensed["metrics"]["test_accuracy"]

    # --export: an npz any tool reads, and a picture.
    npz = mltk_env / "exported" / "condensed.npz"
    assert condensed["exported"] == [str(npz), str(mltk_env / "exported" / "grid.png")]
    with np.load(npz, allow_pickle=False) as archive:
        assert archive["images"].shape == (240, 1, 8, 8) and archive["images"].dtype == np.float32
        assert 0.0 <= archive["images"].min() and archive["images"].max() <= 1.0
        assert list(archive["class_names"]) == [str(d) for d in range(10)]
    dataset = load_dataset(f"npz:{npz}", "train")  # mltk itself trains on it as a dataset
    assert len(dataset) == 240 and dataset.num_classes == 10
    picture = Image.open(mltk_env / "exported" / "grid.png")
    assert picture.size == (1 + 10 * 33, 1 + 10 * 33)  # 10 classes x 10 of their images, 8 px drawn at 32


@pytest.mark.parametrize("method", ["random", "herding", "dm"])
def test_baselines_store_ipc_images_per_class_in_the_same_budget(cli, method):
    result = cli("condense", "digits", "--ipc", "2", "--method", method, *TINY, "--format", "json")
    assert result.code == 0, result.stderr
    metrics = result.json()["metrics"]
    assert (metrics["budget_floats"], metrics["stored_floats"], metrics["synthetic_images"]) == (1280, 1280, 20)
    cset = load_condensed(f"{method}-digits-ipc2")
    images, _ = cset.pixels()
    real = load_dataset("digits", "train").images.float() / 255
    exact = [bool(((real - image).abs().amax(dim=(1, 2, 3)) < 1e-5).any()) for image in images]
    # Random and herding store real training images; DM moved its real initialisation.
    assert all(exact) if method != "dm" else not all(exact)


def test_budget_too_small_for_the_decoders_names_the_smallest_ipc(cli, mltk_env):
    result = cli("condense", "digits", "--ipc", "1", "kfs.decoders=16", "kfs.hidden=8")
    assert result.code == 2
    assert "the smallest IPC that works is 5" in _one_error_line(result)
    assert "use --ipc 5" in result.stderr
    assert not (mltk_env / "home" / "artifacts").exists()


def test_unknown_method(cli):
    result = cli("condense", "digits", "--method", "kfz")
    assert result.code == 2
    assert "method: 'kfz' is not one of kfs, dm, random, herding; did you mean 'kfs'?" in _one_error_line(result)


def test_out_of_range_values_are_listed_together(cli, mltk_env):
    result = cli("condense", "digits", "optim.lr=0", "optim.momentum=1.5", "train.log_every=0",
                 "kfs.div_weight=1", "kfs.pairs_per_class=2", "eval.epochs=-1")
    assert result.code == 2
    line = _one_error_line(result)
    for problem in ("optim.lr: must be positive", "optim.momentum: must lie in [0, 1]",
                    "train.log_every: must be positive", "kfs.div_weight: needs every pair decoded",
                    "eval.epochs: must not be negative"):
        assert problem in line, problem
    assert not (mltk_env / "runs").exists()


@pytest.mark.parametrize("method,needed", [("random", "ipc=3 images per class"),
                                            ("kfs", "7 codes per class (kfs.codes_per_class)")])
def test_class_with_too_few_images_for_initialisation(cli, mltk_env, method, needed):
    images = np.random.default_rng(0).integers(0, 255, size=(12, 1, 8, 8), dtype=np.uint8)
    labels = np.array([0] * 10 + [1] * 2)
    path = mltk_env / "small.npz"
    np.savez(path, x_train=images, y_train=labels, x_test=images, y_test=labels)
    # KFS at ipc=3 on 2 classes: (3 * 2 * 64 - 4 decoders of 39 floats) // (2 * 16) = 7 codes per class.
    result = cli("condense", f"npz:{path}", "--ipc", "3", "--method", method, "eval.runs=0")
    assert result.code == 2
    line = _one_error_line(result)
    assert f"class 1 has 2 training images, fewer than the {needed}" in line
    assert not (mltk_env / "home" / "artifacts").exists()


def test_eval_of_a_classifier_with_the_condensed_protocol_is_refused(cli):
    trained = cli("train", "supervised", "model.options.width=8", "model.options.depth=2", "train.epochs=1",
                  "--format", "quiet")
    assert trained.code == 0, trained.stderr
    result = cli("eval", "convnet-digits", "--protocol", "condensed")
    assert result.code == 3
    assert "is a 'classifier' artifact, not a condensed-dataset" in _one_error_line(result)
