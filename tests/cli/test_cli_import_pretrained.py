"""Real pretrained CIFAR-10 ResNets (akamaster .th files) imported into the registry and scored."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WEIGHTS = SHARED / "pretrained_weights" / "resnet_cifar10_akamaster"
CIFAR_ZIP = SHARED / "cifar10" / "cifar10_train_jpg.zip"
PER_CLASS = 40


@pytest.fixture
def cifar_sample(tmp_path):
    """The first images of each class of the shared CIFAR-10 JPEG zip, as a small image-folder zip."""
    if not CIFAR_ZIP.is_file():
        pytest.skip(f"shared CIFAR-10 images not found at {CIFAR_ZIP}")
    out = tmp_path / "cifar10_sample.zip"
    with zipfile.ZipFile(CIFAR_ZIP) as source, zipfile.ZipFile(out, "w") as sample:
        counts: dict[str, int] = {}
        for name in sorted(source.namelist()):
            parts = name.split("/")
            if len(parts) != 3 or not parts[2].endswith(".jpg"):
                continue
            if counts.get(parts[1], 0) < PER_CLASS:
                counts[parts[1]] = counts.get(parts[1], 0) + 1
                sample.writestr(name, source.read(name))
    return out


@pytest.mark.parametrize("file,arch,floor", [("resnet20-12fca82f.th", "resnet20", 0.80),
                                             ("resnet56-4bfd9763.th", "resnet56", 0.84)])
def test_import_then_eval_on_real_images(cli, cifar_sample, file, arch, floor):
    path = WEIGHTS / file
    if not path.is_file():
        pytest.skip(f"pretrained weights not found at {path}")
    imported = cli("import", str(path), "--arch", arch, "--data", "cifar10", "--mean", "0.485,0.456,0.406",
                   "--std", "0.229,0.224,0.225", "--format", "quiet")
    assert imported.code == 0, imported.stderr
    ref = imported.stdout.strip()
    assert ref == f"{path.stem}:1"
    shown = cli("show", ref, "--format", "json").json()["card"]
    assert shown["lineage"] == {"parent": f"file:{file}", "relation": "imported"}
    assert shown["task"]["class_names"][0] == "airplane"
    result = cli("eval", ref, "--data", f"imagefolder:{cifar_sample}", "--split", "train", "--format", "json")
    assert result.code == 0, result.stderr
    report = result.json()
    assert report["images"] == 10 * PER_CLASS
    assert report["metrics"]["accuracy"] >= floor
