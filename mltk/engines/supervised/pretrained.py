"""Start a classifier from a pretrained one (``mltk train supervised init=REF``).

The new network takes the pretrained one's architecture, options and input
normalisation, built for this run's task (classes, channels, image size);
``init_options`` and ``model.mean``/``model.std`` override them
(``init_options.stem_stride=1`` for 32 px images, say). Every
tensor whose name and shape the two networks share is copied; the rest, the
classifier head when the number of classes differs, keeps its fresh
initialisation. A pretrained network none of whose weight matrices or kernels
fits is refused, since "fine-tuning" it would silently train from scratch.
"""

from __future__ import annotations

import dataclasses

import torch

from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.nn import build_model
from mltk.nn.artifacts import load_classifier
from mltk.nn.classifiers.classifier import ImageClassifier

TASK_ARGS = ("num_classes", "in_channels", "image_size")


@dataclasses.dataclass
class Started:
    model: ImageClassifier
    source: str  # the pretrained model's reference, the new artifact's parent
    copied: int  # tensors taken from it
    fresh: list[str]  # tensors that start from their initialisation (another shape there, or absent)


def start_from(ref: str, *, num_classes: int, in_channels: int, image_size: int, options: dict,
               mean: list[float] | None, std: list[float] | None, registry: Registry | None = None) -> Started:
    """The network for this task, holding every tensor of classifier ``ref`` that fits it."""
    loaded = load_classifier(ref, registry=registry)
    if not isinstance(loaded.model, ImageClassifier):
        raise UsageError(f"init={ref}: a {loaded.card.get('kind')!r} artifact cannot be fine-tuned",
                         hint="start from a float classifier (its parent, see `mltk show REF`)")
    spec = loaded.model.spec
    own_options = {key: value for key, value in spec["args"].items() if key not in TASK_ARGS}
    model = build_model(spec["arch"], num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                        mean=spec["mean"] if mean is None else mean, std=spec["std"] if std is None else std,
                        **{**own_options, **options})
    pretrained = loaded.model.state_dict()
    state = model.state_dict()
    fitting = {name: tensor for name, tensor in pretrained.items()
               if name in state and state[name].shape == tensor.shape and state[name].dtype == tensor.dtype}
    if not any(name in fitting for name, parameter in model.named_parameters() if parameter.dim() > 1):
        raise ArtifactError(f"init={ref}: none of its weights fits a {spec['arch']} for this task",
                            hint="check model.options against the pretrained model's (`mltk show REF`)")
    with torch.no_grad():
        for name, tensor in fitting.items():
            state[name].copy_(tensor)
    return Started(model, loaded.source, len(fitting), [name for name in state if name not in fitting])
