"""Scoring a model on one's own folder of class folders takes one flag: no train split is read or needed."""

from __future__ import annotations

import numpy as np
from PIL import Image

from mltk.data import DataSpec, load_splits


def test_eval_on_a_folder_that_holds_only_test_images(cli, tiny, mltk_env):
    trained = cli("train", "supervised", *tiny, "--format", "json")
    assert trained.code == 0, trained.stderr
    test = load_splits(DataSpec(name="digits")).test
    for label in range(10):  # four test images of every class, in folders named as digits' classes are
        folder = mltk_env / "mine" / str(label)
        folder.mkdir(parents=True)
        for index in np.flatnonzero(test.labels.numpy() == label)[:4]:
            Image.fromarray(test.images[index, 0].numpy()).save(folder / f"{index}.png")
    scored = cli("eval", trained.json()["artifact"], "--data", f"imagefolder:{mltk_env / 'mine'}",
                 "--format", "json")
    assert scored.code == 0, scored.stderr
    report = scored.json()
    assert "40 images" in scored.stderr, report
    assert report["metrics"]["accuracy"] > 0.5
