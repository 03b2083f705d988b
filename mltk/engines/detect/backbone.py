"""The detector's feature pyramid: a torchvision ResNet with a torchvision FPN on top.

ResNet stages ``layer1`` .. ``layer4`` (strides 4, 8, 16, 32) feed an FPN of
``fpn_channels`` channels; the pyramid levels are returned finest first.
Oriented R-CNN adds a fifth, stride-64 level for its proposals; we keep four
(DOTA objects that large are rare in 1024-pixel patches, and every level
costs CPU time).

No weights are downloaded: ``weights=None`` always, and a local torchvision
weights file (a torch hub cache, ``resnet18-f37072fd.pth``) can be loaded
into the ResNet body with :func:`load_backbone_weights`. Images enter in
``[0, 1]`` and are normalised here with ImageNet's statistics, which is what
torchvision's weights expect.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.misc import FrozenBatchNorm2d

from mltk.core.errors import ArtifactError, UsageError
from mltk.core.tensor_files import load_foreign_state_dict

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDES = (4, 8, 16, 32)
# Channels of layer1..layer4.
RESNET_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                   "resnet50": (256, 512, 1024, 2048)}
# batch: trained BatchNorm (training from scratch); frozen: torchvision's detection default with
# pretrained weights, where batches of a few patches are too small to estimate statistics.
NORM_LAYERS = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d}


class FeaturePyramid(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> pyramid levels ``[(B, C, H/s, W/s) for s in STRIDES]``."""

    def __init__(self, *, backbone: str = "resnet18", fpn_channels: int = 256, norm: str = "batch"):
        super().__init__()
        if backbone not in RESNET_CHANNELS:
            raise UsageError(f"unknown backbone {backbone!r}", hint=f"choose one of {', '.join(RESNET_CHANNELS)}")
        if norm not in NORM_LAYERS:
            raise UsageError(f"unknown norm {norm!r}", hint=f"choose one of {', '.join(NORM_LAYERS)}")
        resnet = getattr(torchvision.models, backbone)(weights=None, norm_layer=NORM_LAYERS[norm])
        self.body_and_fpn = BackboneWithFPN(
            resnet, return_layers={f"layer{i + 1}": str(i) for i in range(4)},
            in_channels_list=list(RESNET_CHANNELS[backbone]), out_channels=fpn_channels,
            extra_blocks=None)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.strides = STRIDES
        self.channels = fpn_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels: OrderedDict = self.body_and_fpn((images - self.mean) / self.std)
        return list(levels.values())[:len(STRIDES)]


def load_backbone_weights(pyramid: FeaturePyramid, path: str | Path) -> int:
    """Load a torchvision ResNet weights file into the pyramid's ResNet body; the number of tensors loaded.

    The classifier (``fc.*``) is left out; every other tensor of the body
    must be in the file with its shape, so a file of another architecture
    is an error, not a half-loaded model.
    """
    state = load_foreign_state_dict(Path(path).expanduser())
    body = pyramid.body_and_fpn.body
    expected = body.state_dict()
    # FrozenBatchNorm2d keeps no batch counter: a file's num_batches_tracked has nowhere to go.
    found = {k: v for k, v in state.items() if k in expected}
    # and older torchvision files hold none for a trained BatchNorm's counter either.
    missing = sorted(k for k in expected if k not in found and not k.endswith("num_batches_tracked"))
    wrong = sorted(k for k in found if found[k].shape != expected[k].shape)
    if missing or wrong:
        raise ArtifactError(
            f"{path}: not weights of this backbone ({len(missing)} tensors missing, {len(wrong)} of another "
            f"shape; first: {(missing + wrong)[0]})",
            hint="give the torchvision weights file of the backbone named in model.backbone")
    body.load_state_dict(found, strict=False)
    return len(found)
