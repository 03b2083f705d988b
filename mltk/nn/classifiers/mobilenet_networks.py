"""torchvision's MobileNetV2 and MobileNetV3 classes with an ``embed`` method.

Kept apart from the registered builders in ``mltk.nn.classifiers.mobilenet`` because
importing torchvision's model zoo costs seconds (it pulls in torch._dynamo);
the builders import this module only when a MobileNet is actually built, so
every other ``mltk`` command starts without it.
"""

from __future__ import annotations

from torch import Tensor, nn
from torchvision.models import MobileNetV2, MobileNetV3

# Private in torchvision, but it is the only way to get the V3 block tables
# into a subclass; tests/nn check our V3 against torchvision's public builder.
from torchvision.models.mobilenetv3 import _mobilenet_v3_conf


class EmbeddingMobileNetV2(MobileNetV2):
    """torchvision MobileNetV2 plus ``embed``.

    forward: [B, C, S, S] -> logits [B, num_classes];
    embed:   [B, C, S, S] -> pooled last feature map [B, last_channel] (1280 at width 1).
    """

    def embed(self, x: Tensor) -> Tensor:
        return nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))


class EmbeddingMobileNetV3(MobileNetV3):
    """torchvision MobileNetV3 plus ``embed``.

    forward: [B, C, S, S] -> logits [B, num_classes];
    embed:   [B, C, S, S] -> pooled last feature map [B, D] (576 small, 960 large,
    at width 1). The 1024/1280-wide hidden layer belongs to the classifier head,
    which is replaced or retrained with the classes, so it is not the embedding.
    """

    def __init__(self, *, variant: str, num_classes: int, width_mult: float, dropout: float):
        blocks, last_channel = _mobilenet_v3_conf(variant, width_mult=width_mult)
        super().__init__(blocks, last_channel, num_classes=num_classes, dropout=dropout)

    def embed(self, x: Tensor) -> Tensor:
        return self.avgpool(self.features(x)).flatten(1)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.embed(x))
