"""``mltk train uagdet`` then ``mltk detect`` through the real entry point, on synthetic DOTA files."""

from __future__ import annotations

import json
import shutil

import pytest

from mltk.engines.detect.dota import DOTA_V1_0_CLASSES
from mltk.engines.detect.synthetic import write_synthetic_dota

TINY = ["data.patch_size=128", "data.overlap=28", "data.val_fraction=0.5", "model.fpn_channels=16",
        "model.roi.representation=32", "model.roi.sampled_rois=32", "model.proposals.pre_nms_per_level=50",
        "model.proposals.post_nms=32", "model.proposals.sampled_anchors=64", "graph.hidden=16", "graph.tau=0.5",
        "train.max_steps=3", "train.batch_size=1"]


def test_train_then_detect_writes_dota_files_and_pictures(cli, tmp_path):
    folder = write_synthetic_dota(tmp_path / "dota", images=2, size=128)
    trained = cli("train", "uagdet", f"data=dota:{folder}", *TINY, "--format", "json")
    assert trained.code == 0, trained.stderr
    training = trained.json()
    assert training["artifact"] == "uagdet:1"
    metrics = training["metrics"]
    assert metrics["val_regions"] == 1 and 0 <= metrics["val_mAP"] <= 1  # held out: the second image
    assert 0 <= metrics["val_refined_fraction"] <= 1
    # The dota protocol rebuilds the same held-out region from the card and scores it the same.
    scored = cli("eval", "uagdet:1", "--protocol", "dota", "--format", "json")
    assert scored.code == 0, scored.stderr
    assert scored.json()["metrics"]["mAP"] == metrics["val_mAP"] and scored.json()["regions"] == 1

    out = tmp_path / "out"
    # No --model: the newest uagdet artifact. A threshold of 0 keeps whatever the tiny model finds.
    result = cli("detect", str(folder / "images"), "-o", str(out), "--score-threshold", "0", "--format", "json")
    assert result.code == 0, result.stderr
    document = result.json()
    assert document["model"] == "uagdet:1" and [image["image"] for image in document["images"]] == ["S0000", "S0001"]
    assert "[1/2]" in result.stderr and "[2/2]" in result.stderr
    for image in document["images"]:
        lines = (out / "labelTxt" / f"{image['image']}.txt").read_text().splitlines()
        assert len(lines) == len(image["detections"])
        for line, detection in zip(lines, image["detections"], strict=True):
            fields = line.split()
            assert len(fields) == 10 and fields[8] == detection["class"] in DOTA_V1_0_CLASSES
            assert float(fields[9]) == pytest.approx(detection["score"], rel=1e-5)
        assert (out / f"{image['image']}.png").stat().st_size > 0
    task1 = sorted(path.name for path in out.glob("Task1_*.txt"))
    assert task1 == sorted(f"Task1_{name}.txt" for name in DOTA_V1_0_CLASSES)
    submitted = sum(len(path.read_text().splitlines()) for path in out.glob("Task1_*.txt"))
    assert submitted == sum(len(image["detections"]) for image in document["images"])

    # An image that cannot be decoded is reported; the others are still written, and the exit code says so.
    images = tmp_path / "mixed"
    images.mkdir()
    shutil.copy(folder / "images" / "S0000.png", images / "good.png")
    (images / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "out-mixed"
    result = cli("detect", str(images), "--model", "uagdet:1", "-o", str(out), "--format", "json")
    assert result.code == 3 and "1 of 2 images could not be decoded" in result.stderr
    document = json.loads(result.stdout)
    assert [("error" in image) for image in document["images"]] == [True, False]
    assert (out / "labelTxt" / "good.txt").is_file() and not (out / "labelTxt" / "broken.txt").exists()


def test_detect_without_images_or_without_a_detector_is_a_clear_error(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = cli("detect", str(empty), "-o", str(tmp_path / "out"))
    assert result.code == 3 and "no oriented detector" in result.stderr  # the model is looked up first
    folder = write_synthetic_dota(tmp_path / "dota", images=1, size=64)
    result = cli("detect", str(folder / "images"), "--model", "nothing-here", "-o", str(tmp_path / "out"))
    assert result.code == 3 and "no artifact named 'nothing-here'" in result.stderr
    (tmp_path / "a-file").write_text("")
    result = cli("detect", str(folder / "images"), "-o", str(tmp_path / "a-file" / "out"))
    assert result.code == 2 and "cannot write to" in result.stderr
