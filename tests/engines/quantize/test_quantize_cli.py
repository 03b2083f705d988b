"""``mltk quantize`` through the real entry point: artifact, deployed eval, show, export, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors

# float32 vectors (the digits preset stores float16 ones): the deployed network then scores as the trained one
QUICK = ["train.epochs=2", "calibration.images=128", "quant.vector_dtype=float32"]


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_bitat_artifact_is_packed_and_eval_runs_the_deployed_network(cli, fp_digits, mltk_env):
    result = cli("quantize", str(fp_digits), *QUICK, "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    ref, metrics = out["artifact"], out["metrics"]
    assert ref == "fp-convnet-w1a1-bitat:1"
    assert "stage 1/2" in result.stderr and "stage 2/2" in result.stderr  # progress names the stage
    # the deployed network scores exactly what the float shadow scores
    assert metrics["test_accuracy"] == pytest.approx(metrics["shadow_test_accuracy"], abs=1 / 360)
    assert metrics["test_accuracy"] > 0.2, metrics  # well above chance (0.1): the W1/A1 network trains

    evaluated = cli("eval", ref, "--format", "json")
    assert evaluated.code == 0, evaluated.stderr
    assert evaluated.json()["metrics"]["accuracy"] == pytest.approx(metrics["test_accuracy"], abs=1e-12)

    card = cli("show", ref, "--format", "json").json()["card"]
    assert card["kind"] == "binarized-classifier"
    assert card["lineage"] == {"parent": str(fp_digits), "relation": "quantized"}
    plan = card["quantization"]["plan"]
    assert [layer["name"] for layer in plan["layers"]] == ["net.features.4", "net.features.8"]
    assert {k["name"] for k in plan["full_precision"]} == {"net.features.0", "net.classifier"}
    bits = card["tensor_bits"]
    assert bits["net.features.4.weight_packed"] == 1 and bits["net.classifier.weight"] == 32

    # on disk: one bit per binarized weight, no float copy of those weights anywhere
    record = Registry().resolve(ref)
    tensors, _ = load_safetensors(record.file("model.safetensors"))
    packed = tensors["net.features.4.weight_packed"]
    assert packed.dtype == torch.uint8 and packed.numel() == 16 * 16 * 9 // 8
    assert not any(key.endswith("features.4.weight") for key in tensors)

    exported = cli("export", ref, "-o", str(mltk_env / "exported"), "--format", "torchscript")
    assert exported.code == 0, exported.stderr
    scripted = torch.jit.load(exported.stdout.strip())
    assert scripted(torch.rand(3, 1, 8, 8)).shape == (3, 10)

    copied = cli("export", ref, "-o", str(mltk_env / "copied"))  # the artifact's own files, as a reference
    assert copied.code == 0, copied.stderr
    from_folder = cli("eval", str(mltk_env / "copied"), "--format", "json")
    assert from_folder.code == 0, from_folder.stderr
    assert from_folder.json()["metrics"]["accuracy"] == evaluated.json()["metrics"]["accuracy"]


def test_eight_bit_post_training_loses_under_half_a_point_on_digits(cli, fp_digits):
    result = cli("quantize", str(fp_digits), "--bits", "8", "--format", "json")
    assert result.code == 0, result.stderr
    metrics = result.json()["metrics"]
    assert metrics["bits"] == 8 and metrics["act_bits"] == 32
    assert metrics["accuracy_gap"] < 0.005, metrics
    card = cli("show", result.json()["artifact"], "--format", "json").json()["card"]
    assert card["kind"] == "quantized-classifier"
    assert card["tensor_bits"]["net.features.4.weight_packed"] == 8


@pytest.mark.parametrize("method", ["xnor", "reactnet"])
def test_baselines_run_with_the_same_budget(cli, fp_digits, method):
    # float32 vectors (the digits preset stores float16 ones): deployed and trained network then score alike
    result = cli("quantize", str(fp_digits), "--method", method, "train.epochs=1", "calibration.images=128",
                 "quant.vector_dtype=float32", "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["artifact"] == f"fp-convnet-w1a1-{method}:1"
    if method == "reactnet":
        assert "step 1: binary activations, float weights" in result.stderr
    metrics = out["metrics"]
    # W1/A1 QAT really trains on this net (chance is 0.1), and the deployed network is the one that was trained
    assert metrics["test_accuracy"] > 0.2, metrics
    assert metrics["test_accuracy"] == pytest.approx(metrics["shadow_test_accuracy"], abs=1 / 360)


def test_a_validation_split_of_the_parent_s_data_is_scored_every_epoch(cli, fp_digits):
    result = cli("quantize", str(fp_digits), "--method", "xnor", "train.epochs=1", "calibration.images=64",
                 "data.val_holdout=0.2", "--format", "json")
    assert result.code == 0, result.stderr
    records = [json.loads(line) for line in
               (Path(result.json()["run_dir"]) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    epochs = [record for record in records if "epoch" in record]
    assert epochs and all(0 <= record["val_accuracy"] <= 1 for record in epochs)


# ---------------------------------------------------------------- bad input


def test_unsupported_bits_is_a_usage_error(cli, fp_digits):
    result = cli("quantize", str(fp_digits), "--bits", "3")
    assert result.code == 2
    assert "quant.bits: 3 is not supported; choose 1 (binary), 2, 4 or 8" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_pickled_whole_model_is_refused_with_how_to_save_a_state_dict(cli, mltk_env):
    path = mltk_env / "whole.pt"
    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), path)
    result = cli("quantize", str(path), "--data", "digits")
    assert result.code == 3
    assert "torch.save(model.state_dict(), 'model.pt')" in result.stderr


def test_unknown_architecture_keys_list_the_nearest_known(cli, mltk_env):
    path = mltk_env / "odd.pt"
    torch.save({"features.0.0.weight": torch.zeros(16, 1, 3, 3), "head.weight": torch.zeros(10, 16)}, path)
    result = cli("quantize", str(path), "--data", "digits")
    assert result.code == 2
    assert "those of no architecture mltk builds" in result.stderr and "nearest: " in result.stderr
    assert "mobilenet" in result.stderr


def test_advice_for_a_foreign_resnet_works_when_followed(cli, mltk_env):
    import torchvision

    path = mltk_env / "resnet18.pt"  # torchvision's ImageNet ResNet-18: mltk's resnet18 is the CIFAR one
    torch.save(torchvision.models.resnet18(num_classes=10).state_dict(), path)
    first = cli("quantize", str(path), "--data", "digits")
    assert first.code == 2 and "nearest: resnet18" in first.stderr
    assert "no --arch value will load it" in first.stderr  # not advice that repeats the same error
    followed = cli("quantize", str(path), "--data", "digits", "--arch", "resnet18")
    assert followed.code == 2 and "not those of resnet18" in followed.stderr


def test_a_whole_pickled_model_is_refused_before_any_data_is_read(cli, mltk_env):
    import torchvision

    path = mltk_env / "whole.pt"
    torch.save(torchvision.models.mobilenet_v2(num_classes=10), path)
    result = cli("quantize", str(path), "--data", "cifar10")  # no CIFAR-10 here: refusing the file comes first
    assert result.code == 3 and "pickled Python objects" in result.stderr and "cifar" not in result.stderr


def test_a_model_without_quantizable_layers_is_refused(cli, mltk_env):
    from mltk.nn import build_model

    path = mltk_env / "shallow.pt"
    torch.save(build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=4, depth=1).state_dict(),
               path)
    result = cli("quantize", str(path), "--data", "digits")
    assert result.code == 2
    assert "no quantizable layers" in result.stderr and "first layer (stem)" in result.stderr


def test_a_bare_state_dict_needs_data(cli, mltk_env):
    from mltk.nn import build_model

    path = mltk_env / "convnet.pt"
    torch.save(build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=4).net.state_dict(), path)
    result = cli("quantize", str(path))
    assert result.code == 2 and "--data" in result.stderr


def test_binary_method_with_multi_bit_weights_is_a_usage_error(cli, fp_digits):
    result = cli("quantize", str(fp_digits), "--bits", "4", "--method", "xnor")
    assert result.code == 2 and "--bits 4 uses uniform quantization" in result.stderr


@pytest.mark.parametrize("overrides,said", [
    (["quant.branch_gain=-1"], "quant.branch_gain: must be >= 0"),
    (["--method", "bitat", "bitat.transform=identity", "bitat.rank=8"],
     "bitat.rank=8: the identity transform has no correlation to approximate"),
], ids=["negative-branch-gain", "rank-without-a-correlation"])
def test_settings_that_cannot_apply_are_config_errors(cli, fp_digits, overrides, said):
    result = cli("quantize", str(fp_digits), *overrides)
    assert result.code == 2 and said in result.stderr


@pytest.mark.parametrize("overrides,said,in_effect", [
    (["train.max_steps=2"], "branch gain 0.25: the binary branches of 2 layers start at 0.25", 0.25),
    # without float shortcuts no binary layer has a branch of its own: the gain cannot apply
    (["train.max_steps=2", "quant.float_shortcuts=false"],
     "quant.branch_gain=0.25 has no effect: no binary layer of convnet", 1.0),
    # the gain starts the branches small so that they grow back as they learn: calibration alone cannot
    (["train.epochs=0"], "quant.branch_gain=0.25 has no effect: without training steps", 1.0),
], ids=["applied", "no-branch", "no-training"])
def test_the_branch_gain_in_effect_is_reported_and_recorded(cli, fp_digits, overrides, said, in_effect):
    result = cli("quantize", str(fp_digits), "--method", "xnor", "calibration.images=64", "quant.branch_gain=0.25",
                 *overrides, "--format", "json")
    assert result.code == 0, result.stderr
    assert said in result.stderr
    card = cli("show", result.json()["artifact"], "--format", "json").json()["card"]
    assert card["quantization"]["branch_gain"] == in_effect


def test_foreign_torchvision_state_dict_is_inferred_and_quantized(cli, mltk_env):
    import torchvision

    path = mltk_env / "mobilenet.pt"
    net = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.25)
    net.features[0][0] = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)  # 1-channel digits
    torch.save(net.state_dict(), path)
    result = cli("quantize", str(path), "--data", "digits", "train.max_steps=2", "calibration.images=64",
                 "bitat.stages=3", "--format", "json")
    assert result.code == 0, result.stderr
    card = cli("show", result.json()["artifact"], "--format", "json").json()["card"]
    assert card["arch"]["arch"] == "mobilenet_v2"
    assert card["arch"]["args"]["width_mult"] == 0.25 and card["arch"]["args"]["stem_stride"] == 1
    assert card["lineage"]["parent"] == "file:mobilenet.pt"
    json.dumps(card)  # the plan is plain JSON


@pytest.mark.slow
def test_quantize_runs_on_two_gloo_ranks(fp_digits, cli_process):
    result = cli_process("quantize", str(fp_digits), "train.max_steps=4", "calibration.images=64", "--name", "ranks",
                         "--nproc-per-node", "2", "--format", "json", timeout=300)
    assert result.code == 0, result.stderr
    assert result.json()["world_size"] == 2 and result.json()["artifact"] == "ranks:1"


def test_a_quantized_card_asking_for_a_huge_network_is_refused_from_the_header(cli, fp_digits, mltk_env,
                                                                                load_limited):
    result = cli("quantize", str(fp_digits), "train.max_steps=1", "calibration.images=64", "--name", "small",
                 "--format", "json")
    assert result.code == 0, result.stderr
    folder = mltk_env / "exported"
    assert cli("export", "small", "-o", str(folder)).code == 0
    card = json.loads((folder / "card.json").read_text())
    card["arch"]["args"]["width"] = 4096  # 300M float parameters: within every bound, 1.2 GB if built
    (folder / "card.json").write_text(json.dumps(card))
    loaded = load_limited("import mltk; from mltk.nn.artifacts import load_classifier; mltk.load_engines()",
                          f"load_classifier({str(folder)!r})")
    assert loaded.code == 3, loaded.stderr
    assert "quantization plan in the card" in loaded.stdout
