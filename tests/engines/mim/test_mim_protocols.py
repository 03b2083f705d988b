"""linear-probe, knn and finetune: the protocols' math, and their results through `mltk eval`."""

from __future__ import annotations

import pytest
import torch

from mltk.engines.mim.finetune_protocol import layer_decay_groups
from mltk.nn import build_model
from mltk.nn.encoders.evaluation import knn_predict, linear_probe

TINY = ["model.options.width=32", "model.options.depth=2", "model.options.heads=2", "model.decoder.width=16",
        "model.decoder.depth=1", "model.decoder.heads=2", "train.batch_size=32", "train.max_steps=4",
        "eval.knn_train_images=300", "eval.test_images=0", "seed=2"]


@pytest.fixture
def rc_mae(cli):
    result = cli("train", "rc-mae", *TINY, "--format", "json")
    assert result.code == 0, result.stderr
    return result.json()


def test_knn_votes_are_weighted_by_similarity():
    train = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.2, 0.8]])
    labels = torch.tensor([0, 0, 1, 1, 1])
    query = torch.tensor([[1.0, 0.05]])
    # k=5: three votes for class 1 against two, but the two are far more similar
    assert knn_predict(train, labels, query, num_classes=2, k=5, temperature=0.07).item() == 0
    assert knn_predict(train, labels, query, num_classes=2, k=5, temperature=100.0).item() == 1


def test_linear_probe_standardises_features():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (200,), generator=generator)
    # class information lives in a feature with a tiny scale next to a huge uninformative one
    features = torch.stack([labels * 1e-4 + torch.randn(200, generator=generator) * 1e-6,
                            torch.randn(200, generator=generator) * 1e4], dim=1)
    scores = linear_probe(features[:150], labels[:150], features[150:], labels[150:])
    assert scores["accuracy"] == 1.0


def test_layer_decay_scales_the_learning_rate_by_depth():
    net = build_model("vit", num_classes=3, in_channels=1, image_size=8, patch_size=2, width=32, depth=2,
                      heads=2).net
    groups = layer_decay_groups(net, weight_decay=0.05, layer_decay=0.5)
    scale = {}
    for group in groups:
        for param in group["params"]:
            scale[id(param)] = (group["lr_scale"], group["weight_decay"])
    named = dict(net.named_parameters())
    assert scale[id(named["patch_embed.weight"])] == (0.125, 0.05)
    assert scale[id(named["cls_token"])] == (0.125, 0.0)
    assert scale[id(named["blocks.0.attn.qkv.weight"])] == (0.25, 0.05)
    assert scale[id(named["blocks.1.mlp.0.bias"])] == (0.5, 0.0)
    assert scale[id(named["classifier.weight"])] == (1.0, 0.05)
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_knn_protocol_reproduces_the_end_of_training_score(cli, rc_mae):
    ref = rc_mae["artifact"]
    result = cli("eval", ref, "--protocol", "knn", "--train-images", "300", "--seed", "2", "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["metrics"]["accuracy"] == rc_mae["metrics"]["knn_accuracy"]
    assert out["weights"] == "teacher" and out["protocol_settings"]["name"] == "knn"
    assert out["protocol_settings"]["k"] == 20 and out["images"] == 360
    student = cli("eval", ref, "--protocol", "knn", "--train-images", "300", "--seed", "2", "--weights", "student",
                  "--format", "json").json()
    assert student["weights"] == "student"
    assert student["metrics"]["accuracy"] == rc_mae["metrics"]["student_knn_accuracy"]


def test_linear_probe_protocol_records_its_settings(cli, rc_mae):
    result = cli("eval", rc_mae["artifact"], "--protocol", "linear-probe", "--c", "0.5", "--min", "0.2",
                 "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["protocol"] == "linear-probe" and out["protocol_settings"]["c"] == 0.5
    assert out["train_images"] == 1437 and out["feature_dim"] == 32
    assert out["metrics"]["accuracy"] > 0.2  # 10 classes: chance is 0.1
    bad = cli("eval", rc_mae["artifact"], "--protocol", "linear-probe", "--weights", "ema")
    assert bad.code == 2 and "holds student, teacher" in bad.stderr


def test_finetune_trains_the_encoder_and_saves_a_classifier(cli, rc_mae):
    result = cli("eval", rc_mae["artifact"], "--protocol", "finetune", "--epochs", "1", "--batch-size", "64",
                 "--lr", "1e-3", "--save", "tuned", "--format", "json")
    assert result.code == 0, result.stderr
    out = result.json()
    assert out["saved"] == "tuned:1" and out["protocol_settings"]["layer_decay"] == 0.75
    again = cli("eval", "tuned", "--protocol", "accuracy", "--format", "json").json()
    assert again["metrics"]["accuracy"] == out["metrics"]["accuracy"]
    card = cli("show", "tuned", "--format", "json").json()
    card = card.get("card", card)
    assert card["lineage"] == {"parent": rc_mae["artifact"], "relation": "finetuned"}


def test_probes_take_classifiers_but_finetune_does_not(cli, convnet_classifier):
    classifier = convnet_classifier
    probed = cli("eval", classifier, "--protocol", "linear-probe", "--format", "json")
    assert probed.code == 0, probed.stderr
    assert probed.json()["weights"] == "classifier"
    refused = cli("eval", classifier, "--protocol", "finetune")
    assert refused.code == 2 and "finetune takes an encoder artifact" in refused.stderr
