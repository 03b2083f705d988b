"""Real CIFAR-10 weights from akamaster/pytorch_resnet_cifar10 classify real CIFAR-10.

This is the end-to-end check that the option-A ResNets match the published
ones bit for bit in layout and behaviour, not just in key names: a wrong
channel padding or pooling loads strictly yet classifies near chance. The
data is research-licensed and read in place from ``<repo>/../shared/data``.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mltk.nn import build_model

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
WEIGHTS_DIR = SHARED_DATA / "pretrained_weights" / "resnet_cifar10_akamaster"
CIFAR10_ZIP = SHARED_DATA / "cifar10" / "cifar10_train_jpg.zip"
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGES_PER_CLASS = 50
# The normalisation akamaster trained with.
MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _require(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} is absent (shared research data is not on this machine)")
    return path


@pytest.fixture(scope="module")
def cifar10_sample() -> tuple[torch.Tensor, torch.Tensor]:
    """The first 50 training images of each class: float [500, 3, 32, 32] in [0, 1], labels [500]."""
    images, labels = [], []
    with zipfile.ZipFile(_require(CIFAR10_ZIP)) as archive:
        for label, name in enumerate(CIFAR10_CLASSES):
            for index in range(IMAGES_PER_CLASS):
                data = archive.read(f"train/{name}/{index:04d}.jpg")
                pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
                images.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
                labels.append(label)
    return torch.stack(images).float() / 255, torch.tensor(labels)


def load_akamaster_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's weights without DataParallel's ``module.`` prefix."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    return {key.removeprefix("module."): value for key, value in checkpoint["state_dict"].items()}


@pytest.mark.parametrize(
    ("arch", "file_name", "minimum_accuracy"),
    [
        ("resnet20", "resnet20-12fca82f.th", 0.80),  # 0.86 measured on the first 500/class
        ("resnet56", "resnet56-4bfd9763.th", 0.84),  # 0.90 measured on the first 500/class
    ],
)
def test_akamaster_weights_load_strictly_and_classify_cifar10(
    arch, file_name, minimum_accuracy, cifar10_sample
):
    state_dict = load_akamaster_state_dict(_require(WEIGHTS_DIR / file_name))
    model = build_model(arch, num_classes=10, in_channels=3, image_size=32, mean=MEAN, std=STD)
    # The legacy files predate BatchNorm's num_batches_tracked; torch fills it in.
    model.net.load_state_dict(state_dict, strict=True)
    images, labels = cifar10_sample
    with torch.no_grad():
        predictions = model.eval()(images).argmax(dim=1)
    accuracy = (predictions == labels).float().mean().item()
    assert accuracy >= minimum_accuracy, f"{arch}: accuracy {accuracy:.3f} on 500 CIFAR-10 images"
