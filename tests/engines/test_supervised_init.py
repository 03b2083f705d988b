"""``mltk train supervised init=REF`` fine-tunes a pretrained classifier: its architecture, options and
normalisation, every weight that fits the new task copied, a fresh head for another number of classes."""

from __future__ import annotations

import copy

import torch

from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors
from mltk.nn import build_model
from mltk.nn.artifacts import classifier_artifact

# One step at a vanishing learning rate: the copied weights come out of training as they went in.
UNCHANGED = ["train.max_steps=1", "optim.lr=1e-12", "optim.weight_decay=0", "train.batch_size=16"]


def _pretrained(home, *, num_classes: int) -> tuple[str, dict]:
    torch.manual_seed(0)
    model = build_model("convnet", num_classes=num_classes, in_channels=1, image_size=8, width=8, depth=1,
                        mean=[0.3], std=[0.2])
    files, card = classifier_artifact(model, engine="supervised", data={"name": "elsewhere"},
                                      class_names=[str(i) for i in range(num_classes)], config={},
                                      config_sha256="0" * 64, metrics={}, primary_metric="test_accuracy",
                                      parent="dataset:elsewhere", relation="trained")
    record = Registry(home).save("pre", files=files, card=card)
    return record.ref, {k: v.clone() for k, v in model.state_dict().items()}


def test_fine_tuning_copies_what_fits_and_starts_a_fresh_head(cli, mltk_env):
    ref, pretrained = _pretrained(mltk_env / "home", num_classes=5)
    result = cli("train", "supervised", f"init={ref}", *UNCHANGED, "--format", "json")
    assert result.code == 0, result.stderr
    assert f"from {ref}: " in result.stderr and " fresh (" in result.stderr
    artifact = result.json()["artifact"]
    assert artifact.startswith("pre-digits:")
    card = cli("show", artifact, "--format", "json").json()["card"]
    assert card["lineage"] == {"parent": ref, "relation": "fine-tuned"}
    spec = card["arch"]
    # The pretrained network's architecture and normalisation, not the preset's ConvNet of width 128.
    assert spec["args"]["width"] == 8 and spec["args"]["depth"] == 1 and spec["args"]["num_classes"] == 10
    assert spec["mean"] == [0.3] and spec["std"] == [0.2]
    name, version = artifact.split(":")
    tuned, _ = load_safetensors(mltk_env / "home" / "artifacts" / name / version / "model.safetensors")
    head = [key for key, value in pretrained.items() if tuned[key].shape != value.shape]
    assert head and all(tuned[key].shape[0] == 10 for key in head)
    conv_weights = [key for key, value in pretrained.items() if key not in head and value.dim() == 4]
    assert conv_weights
    for key in conv_weights:
        assert torch.allclose(tuned[key], pretrained[key], atol=1e-6), key


def test_a_pretrained_model_that_shares_no_weight_is_refused(cli, mltk_env):
    ref, _ = _pretrained(mltk_env / "home", num_classes=10)
    result = cli("train", "supervised", f"init={ref}", "init_options.width=16", *UNCHANGED)
    assert result.code == 3, result.stderr
    assert f"init={ref}: none of its weights fits" in result.stderr


def test_init_naming_nothing_is_a_clear_error(cli):
    result = cli("train", "supervised", "init=no-such-model:1", *UNCHANGED)
    assert result.code != 0 and "no-such-model" in result.stderr and "internal error" not in result.stderr


def test_folded_batchnorms_are_reanchored_without_changing_the_eval_function():
    """A BatchNorm folded into its conv (identity statistics) keeps its eval-mode function, and train mode on the
    re-anchoring images computes the same instead of standardising the folded scale away."""
    from mltk.engines.supervised.pretrained import _is_identity, reanchor

    torch.manual_seed(0)
    model = build_model("convnet", num_classes=3, in_channels=1, image_size=8, width=8, depth=2, norm="batchnorm")
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for norm in norms:  # what `mltk import` writes for a folded BatchNorm: scale in the conv, bias here
            norm.running_mean.zero_()
            norm.running_var.fill_(1 - norm.eps)
            norm.bias.uniform_(-1, 1)
        for conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.mul_(5)
    assert all(_is_identity(norm) for norm in norms)
    images = torch.rand(40, 1, 8, 8)
    model.eval()
    before = model(images)
    unanchored = copy.deepcopy(model).train()  # (a train-mode pass moves the running statistics)
    assert not torch.allclose(unanchored(images), before, atol=1e-2)  # the defect: another function in train mode
    reanchor(norms, model, images, batch_size=16)
    model.eval()
    assert torch.allclose(model(images), before, atol=1e-5)
    model.train()
    assert torch.allclose(model(images), before, atol=1e-4)
