"""The method's defining properties: matching lowers the DM loss; herding tracks the class mean; resume is exact."""

from __future__ import annotations

import torch
from safetensors.torch import load_file

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.console import Reporter
from mltk.core.distributed import DistInfo
from mltk.core.registry import Registry
from mltk.core.run_recipe import run_recipe
from mltk.core.seeding import generator
from mltk.data import load_dataset
from mltk.engines.condense import load_condensed
from mltk.engines.condense.dsa import SiameseAugment, parse_strategy
from mltk.engines.condense.matching import (
    RandomEmbedder,
    matching_loss,
    real_class_means,
    synthetic_class_means,
)
from mltk.engines.condense.selection import class_indices, herding, random_per_class
from mltk.nn import build_model
from mltk.nn.classifiers.fit import FitSchedule, fit_classifier

TINY = ["model.options.width=8", "match.batch_real=16", "kfs.warmup_steps=10", "eval.runs=0"]


def _condense(mltk_env, overrides: list[str]) -> str:
    entry = get_recipe("condense")
    cfg = config.resolve(entry.config_class, preset=preset_path("condense", "digits"), overrides=TINY + overrides)
    results = run_recipe(entry, cfg, resume=None, runs_root=mltk_env / "runs", registry=Registry(),
                         reporter=Reporter("quiet"))
    return results["artifact"]


def _held_out_matching_loss(ref: str) -> float:
    """The DM loss of a condensed set under 8 fixed random networks and augmentations it never saw."""
    cset = load_condensed(ref)
    synthetic = cset.decode_normalized()
    train = load_dataset("digits", "train")
    real_pixels = train.images.float() / 255
    real = (real_pixels - cset.mean) / cset.std
    chosen = random_per_class(class_indices(train.labels, 10), 64, seed=99)
    augment = SiameseAugment(parse_strategy("auto", flip_ok=False))
    embedder = RandomEmbedder(build_model("convnet", num_classes=10, in_channels=1, image_size=8, width=8,
                                          depth=2).net)
    total = 0.0
    with torch.no_grad():
        for trial in range(8):
            embedder.resample(seed=12345, iteration=trial, device=torch.device("cpu"))
            draw = augment.draw(10, (8, 8), generator(777, trial))
            real_means = real_class_means(embedder, real[chosen], augment=augment, draw=draw,
                                          batch_per_class=64, dist=DistInfo())
            total += float(matching_loss(real_means, synthetic_class_means(embedder, synthetic, augment=augment,
                                                                             draw=draw)))
    return total / 8


def test_twenty_iterations_of_kfs_lower_the_matching_loss(mltk_env):
    before = _condense(mltk_env, ["match.iterations=0", "name=before"])  # codes from real images, warm decoders
    after = _condense(mltk_env, ["match.iterations=20", "name=after"])
    assert _held_out_matching_loss(after) < 0.9 * _held_out_matching_loss(before)


def test_resumed_condensation_is_bit_identical(cli, mltk_env):
    # 10 warm-up steps then 10 matching iterations; resume from the end of the warm-up.
    run = ["--ipc", "1", *TINY, "match.iterations=10", "train.ckpt_every=5", "train.keep_checkpoints=4",
           "--format", "json"]
    whole = cli("condense", "digits", *run)
    assert whole.code == 0, whole.stderr
    run_dir = mltk_env / "runs" / "condense" / whole.json()["run_dir"].rsplit("/", 1)[1]
    resumed = cli("condense", "digits", *run, "--resume", str(run_dir / "ckpt" / "step-10"))
    assert resumed.code == 0, resumed.stderr
    assert resumed.json()["resumed_from"].endswith("step-10") and resumed.json()["artifact"] == "kfs-digits-ipc1:2"
    home = mltk_env / "home" / "artifacts" / "kfs-digits-ipc1"
    one, two = load_file(home / "1" / "condensed.safetensors"), load_file(home / "2" / "condensed.safetensors")
    assert one.keys() == two.keys() == {"codes", "decoders.w1", "decoders.b1", "decoders.w2", "decoders.b2"}
    for key in one:
        assert torch.equal(one[key], two[key]), key


def test_herding_tracks_the_class_mean_better_than_random_choice():
    torch.manual_seed(0)
    features = torch.randn(300, 16) + torch.linspace(0, 3, 300).unsqueeze(1)
    target = features.mean(0)
    chosen = herding(features, 5)
    assert len(set(chosen.tolist())) == 5
    herded_gap = (features[chosen].mean(0) - target).norm()
    random_gaps = torch.stack([(features[torch.randperm(300)[:5]].mean(0) - target).norm() for _ in range(200)])
    assert herded_gap < random_gaps.quantile(0.02)


def test_random_choice_is_per_class_distinct_and_seeded():
    labels = torch.arange(5).repeat_interleave(20)
    per_class = class_indices(labels, 5)
    first = random_per_class(per_class, 4, seed=1)
    assert first.shape == (5, 4) and all(len(set(row.tolist())) == 4 for row in first)
    assert all((labels[row] == c).all() for c, row in enumerate(first))
    assert torch.equal(first, random_per_class(per_class, 4, seed=1))
    assert not torch.equal(first, random_per_class(per_class, 4, seed=2))


def test_fit_classifier_is_a_function_of_its_seed():
    images, labels = torch.rand(40, 1, 8, 8), torch.arange(4).repeat(10)

    def weights(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = build_model("convnet", num_classes=4, in_channels=1, image_size=8, width=8, depth=2)
        fit_classifier(model, images, labels, FitSchedule(epochs=3, batch_size=16), seed=seed,
                       device=torch.device("cpu"), augment=lambda x, g: x + 0.01 * torch.randn(x.shape, generator=g))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    assert torch.equal(weights(0), weights(0))
    assert not torch.equal(weights(0), weights(1))
