"""The MIM recipes through the real entry point: artifacts, lineage, image fitting and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

TINY = ["model.options.width=32", "model.options.depth=2", "model.options.heads=2", "model.decoder.width=16",
        "model.decoder.depth=1", "model.decoder.heads=2", "train.batch_size=32", "train.max_steps=2",
        "eval.knn_train_images=200", "eval.test_images=100"]
SDFT = ["train.batch_size=32", "train.steps=2", "train.distill_steps=1", "eval.knn_train_images=200",
        "eval.test_images=100"]


@pytest.fixture
def mae_ref(cli):
    result = cli("train", "mae", *TINY, "--format", "quiet")
    assert result.code == 0, result.stderr
    return result.stdout.strip()


def test_rc_mae_artifact_holds_teacher_for_downstream_and_student(cli, mltk_env):
    result = cli("train", "rc-mae", *TINY, "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["artifact"] == "rc-mae-vit-tiny-digits:1"
    assert {"knn_accuracy", "test_recon_loss", "student_knn_accuracy", "student_test_recon_loss"} <= set(out["metrics"])
    card = cli("show", out["artifact"], "--format", "json").json()
    card = card.get("card", card)
    assert card["kind"] == "encoder" and card["engine"] == "mim"
    assert card["weights"] == {"model.safetensors": "teacher", "student.safetensors": "student"}
    assert card["lineage"] == {"parent": "dataset:digits", "relation": "trained"}
    assert cli("verify", out["artifact"]).code == 0


def test_sdft_lineage_relations_and_distances(cli, mae_ref):
    result = cli("train", "sdft", f"init={mae_ref}", *SDFT, "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["artifact"] == "sdft-digits:1"
    metrics = out["metrics"]
    for key in ("knn_accuracy", "teacher_knn_accuracy", "init_knn_accuracy", "student_distance_from_init",
                "teacher_distance_from_init"):
        assert key in metrics
    student = cli("show", "sdft-digits:1", "--format", "json").json()
    student = student.get("card", student)
    assert student["lineage"] == {"parent": mae_ref, "relation": "distilled"}
    assert student["teacher"] == "sdft-digits-teacher:1"
    teacher = cli("show", "sdft-digits-teacher:1", "--format", "json").json()
    teacher = teacher.get("card", teacher)
    assert teacher["lineage"] == {"parent": mae_ref, "relation": "further-pretrained"}
    assert teacher["metrics"]["distance_from_init"] == metrics["teacher_distance_from_init"]


def test_sdft_fits_other_images_to_the_init_model(cli, mae_ref, mltk_env):
    rng = np.random.default_rng(0)
    path = mltk_env / "rgb16.npz"
    np.savez(path, x_train=rng.integers(0, 256, (96, 16, 16, 3), dtype=np.uint8), y_train=rng.integers(0, 3, 96),
             x_test=rng.integers(0, 256, (40, 16, 16, 3), dtype=np.uint8), y_test=rng.integers(0, 3, 40))
    fitted = cli("train", "sdft", f"init={mae_ref}", f"data=npz:{path}", *SDFT, "eval.knn_train_images=50")
    assert fitted.code == 0, fitted.stderr
    assert "fitting" in fitted.stderr and "(1, 8, 8)" in fitted.stderr
    refused = cli("train", "sdft", f"init={mae_ref}", f"data=npz:{path}", *SDFT, "adapt_images=false")
    assert refused.code == 2
    assert "3x16x16 images" in refused.stderr and "1x8x8" in refused.stderr


@pytest.mark.parametrize(("args", "code", "message"), [
    (["train", "mae", "model.options.patch_size=3", "train.max_steps=1"], 2, "not divisible by patch_size 3"),
    (["train", "rc-mae", "model.mask_ratio=1.5"], 2, "model.mask_ratio: must lie strictly between 0 and 1"),
    (["train", "rc-mae", "teacher.momentum_schedule=linear"], 2, "is not one of cosine, constant"),
    (["train", "mae", "model.mask_ratio=0", "train.max_steps=1"], 2, "model.mask_ratio: must lie strictly"),
    (["train", "sdft", "init=x", "model.mask_ratio=1.0"], 2, "model.mask_ratio: must lie strictly between 0 and 1"),
    (["train", "sdft", "train.steps=1"], 2, "init: required"),
    (["train", "sdft", "init=no-such-model"], 3, "no artifact named 'no-such-model'"),
])
def test_bad_input_is_one_line_with_the_documented_exit_code(cli, args, code, message):
    result = cli(*args)
    assert result.code == code, result.stderr
    assert message in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr


def test_sdft_refuses_an_init_that_is_not_a_masked_autoencoder(cli, convnet_classifier):
    result = cli("train", "sdft", f"init={convnet_classifier}", *SDFT)
    assert result.code == 3
    assert "not a masked auto-encoder" in result.stderr


def _encoder_with_card_arch(weights_width: int, card_encoder: dict) -> str:
    """An encoder artifact whose weights are a ViT of ``weights_width`` but whose card names ``card_encoder``."""
    import torch

    from mltk.core.registry import Registry
    from mltk.engines.mim.encoder import WEIGHTS_FILE, encoder_artifact
    from mltk.nn.encoders.mae import build_mae

    torch.manual_seed(0)
    model = build_mae({"encoder": {"arch": "vit", "args": {"in_channels": 1, "image_size": 8, "patch_size": 2,
                                                          "width": weights_width, "depth": 1, "heads": 2}},
                       "decoder": {"width": 16, "depth": 1, "heads": 2}, "mask_ratio": 0.75,
                       "norm_pix_loss": True, "mean": None, "std": None})
    files, card = encoder_artifact({WEIGHTS_FILE: ("model", model)}, engine="mim", recipe="mae",
                                   data={"name": "digits"}, class_names=[str(i) for i in range(10)], config={},
                                   config_sha256="", metrics={}, primary_metric="test_recon_loss",
                                   higher_is_better=False, parent="dataset:digits", relation="trained")
    card["arch"] = {**card["arch"], "encoder": card_encoder}
    return Registry().save("tampered-mae", files=files, card=card).ref


@pytest.mark.parametrize(("card_encoder", "message"), [
    ({"arch": "vit", "args": {"in_channels": 1, "image_size": 8, "patch_size": 2, "width": 32, "depth": 1,
                              "heads": 2}}, "the weights do not fit the architecture"),
    ({"arch": "convnet", "args": {"in_channels": 1, "image_size": 8}}, "the encoder must be a 'vit'"),
])
def test_sdft_refuses_an_init_that_is_not_a_vit_of_matching_shape(cli, card_encoder, message):
    ref = _encoder_with_card_arch(16, card_encoder)
    result = cli("train", "sdft", f"init={ref}", *SDFT)
    assert result.code == 3, result.stderr
    assert message in result.stderr
    assert result.stderr.count("error:") == 1 and "Traceback" not in result.stderr


def test_sdft_steps_are_recorded_per_stage(cli, mae_ref, mltk_env):
    result = cli("train", "sdft", f"init={mae_ref}", *SDFT, "--format", "json")
    run = json.loads(result.stdout)["run_dir"]
    lines = [json.loads(line) for line in open(f"{run}/metrics.jsonl")]
    assert [(line["stage"], line["step"]) for line in lines] == [("further-pretrain", 2), ("self-distill", 3)]
    assert "train_distill" in lines[1] and "train_distill" not in lines[0]
