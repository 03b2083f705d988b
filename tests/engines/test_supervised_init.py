"""``mltk train supervised init=REF`` fine-tunes a pretrained classifier: its architecture, options and
normalisation, every weight that fits the new task copied, a fresh head for another number of classes."""

from __future__ import annotations

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
