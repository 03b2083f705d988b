"""The detector's feature pyramid: a torchvision ResNet or MobileNetV3 with a torchvision FPN on top.

Four body stages at strides 4, 8, 16, 32 feed an FPN of ``fpn_channels``
channels; the pyramid levels are returned finest first. For a ResNet they
are ``layer1`` .. ``layer4``; for ``mobilenet_v3_large`` the last block of
each stride in ``features`` (blocks 3, 6, 12 and the final 960-channel
convolution 16: 24, 40, 112 and 960 channels). torchvision's own
``fasterrcnn_mobilenet_v3_large_fpn`` takes only the two coarsest stages
(strides 16 and 32); we keep all four so both backbones give the heads the
same pyramid. Oriented R-CNN adds a fifth, stride-64 level for its
proposals; we keep four (DOTA objects that large are rare in 1024-pixel
patches, and every level costs CPU time).

No weights are downloaded: ``weights=None`` always, and a local torchvision
weights file (a torch hub cache, ``resnet18-f37072fd.pth`` or
``mobilenet_v3_large-8738ca79.pth``) can be loaded into the body with
:func:`load_backbone_weights`. Images enter in ``[0, 1]`` and are
normalised here with ImageNet's statistics, which is what torchvision's
weights expect.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from functools import partial
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
# batch: trained BatchNorm (training from scratch); frozen: torchvision's detection default with
# pretrained weights, where batches of a few patches are too small to estimate statistics.
NORM_LAYERS = {"batch": nn.BatchNorm2d, "frozen": FrozenBatchNorm2d}


@dataclasses.dataclass(frozen=True)
class Body:
    """Where a torchvision classifier's pyramid stages are: its module holding them and their names."""

    module: str  # "" = the whole model (ResNet), "features" = its ``features`` (MobileNetV3)
    stages: tuple[str, str, str, str]  # children of ``module`` ending strides 4, 8, 16, 32
    channels: tuple[int, int, int, int]
    # MobileNetV3's own BatchNorm settings (torchvision builds it with eps 0.001, momentum 0.01).
    norm_options: tuple[tuple[str, float], ...] = ()


RESNET_STAGES = ("layer1", "layer2", "layer3", "layer4")
BODIES = {
    "resnet18": Body("", RESNET_STAGES, (64, 128, 256, 512)),
    "resnet34": Body("", RESNET_STAGES, (64, 128, 256, 512)),
    "resnet50": Body("", RESNET_STAGES, (256, 512, 1024, 2048)),
    "mobilenet_v3_large": Body("features", ("3", "6", "12", "16"), (24, 40, 112, 960), (("eps", 0.001),)),
}


def _body(backbone: str, norm: str) -> nn.Module:
    """The torchvision module holding the backbone's stages, built with ``weights=None``."""
    spec = BODIES[backbone]
    options = dict(spec.norm_options)
    if norm == "batch" and backbone.startswith("mobilenet"):
        options["momentum"] = 0.01
    model = getattr(torchvision.models, backbone)(weights=None, norm_layer=partial(NORM_LAYERS[norm], **options))
    return getattr(model, spec.module) if spec.module else model


class FeaturePyramid(nn.Module):
    """Images ``(B, 3, H, W)`` in [0, 1] -> pyramid levels ``[(B, C, H/s, W/s) for s in STRIDES]``."""

    def __init__(self, *, backbone: str = "resnet18", fpn_channels: int = 256, norm: str = "batch"):
        super().__init__()
        if backbone not in BODIES:
            raise UsageError(f"unknown backbone {backbone!r}", hint=f"choose one of {', '.join(BODIES)}")
        if norm not in NORM_LAYERS:
            raise UsageError(f"unknown norm {norm!r}", hint=f"choose one of {', '.join(NORM_LAYERS)}")
        spec = BODIES[backbone]
        self.body_and_fpn = BackboneWithFPN(
            _body(backbone, norm), return_layers={stage: str(i) for i, stage in enumerate(spec.stages)},
            in_channels_list=list(spec.channels), out_channels=fpn_channels, extra_blocks=None)
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.strides = STRIDES
        self.channels = fpn_channels

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        levels: OrderedDict = self.body_and_fpn((images - self.mean) / self.std)
        return list(levels.values())[:len(STRIDES)]


def load_backbone_weights(pyramid: FeaturePyramid, path: str | Path) -> int:
    """Load a torchvision classifier's weights file into the pyramid's body; the number of tensors loaded.

    The classifier (``fc.*``, ``classifier.*``) is left out; every other
    tensor of the body must be in the file with its shape, so a file of
    another architecture is an error, not a half-loaded model.
    """
    state = load_foreign_state_dict(Path(path).expanduser())
    prefix = BODIES[pyramid.backbone].module
    if prefix:  # MobileNetV3: the body is the model's ``features``, keys "features.3.block..." -> "3.block..."
        state = {key.removeprefix(prefix + "."): value for key, value in state.items() if key.startswith(prefix + ".")}
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
