"""Start a classifier from a pretrained one (``mltk train supervised init=REF``).

The new network takes the pretrained one's architecture, options and input
normalisation, built for this run's task (classes, channels, image size);
``init_options`` and ``model.mean``/``model.std`` override them
(``init_options.stem_stride=1`` for 32 px images, say). Every
tensor whose name and shape the two networks share is copied; the rest, the
classifier head when the number of classes differs, keeps its fresh
initialisation. A pretrained network none of whose weight matrices or kernels
fits is refused, since "fine-tuning" it would silently train from scratch.

A network whose BatchNorms were folded into its convolutions (TFLite and other
deployment formats; ``mltk import`` stores them as identity BatchNorms, running
mean 0 and variance 1 - eps) computes the right function in eval mode only: in train
mode each BatchNorm standardises with the batch's statistics, throws away the
scale the folded kernel carries and keeps the folded bias, and the network
falls silent (every ReLU6 of the last layers at zero). Such BatchNorms are
re-anchored on the new data: with the per-channel mean m and variance v of
their input on a few training images,

    running_mean, running_var = m, v
    bias   <- bias + weight * m / sqrt(1 + eps)
    weight <- weight * sqrt(v + eps) / sqrt(1 + eps)

which leaves the eval-mode function exactly as it was and makes train mode
compute nearly the same on batches like those images.
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
    reanchored: int  # folded (identity) BatchNorms re-anchored on the new data


def start_from(ref: str, *, num_classes: int, in_channels: int, image_size: int, options: dict,
               mean: list[float] | None, std: list[float] | None, images: torch.Tensor,
               registry: Registry | None = None) -> Started:
    """The network for this task, holding every tensor of classifier ``ref`` that fits it.

    ``images`` (float [N, C, H, W] in [0, 1], a few of the training images) re-anchor folded BatchNorms.
    """
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
                            hint="check init_options against the pretrained model's options (`mltk show REF`)")
    with torch.no_grad():
        for name, tensor in fitting.items():
            state[name].copy_(tensor)
    folded = [module for name, module in model.named_modules()
              if isinstance(module, torch.nn.BatchNorm2d) and f"{name}.running_mean" in fitting and _is_identity(module)]
    if folded:
        reanchor(folded, model, images)
    return Started(model, loaded.source, len(fitting), [name for name in state if name not in fitting], len(folded))


def _is_identity(norm: torch.nn.BatchNorm2d) -> bool:
    """Running mean 0 and variance 1 (or ``1 - eps``, which ``mltk import`` writes so that the BatchNorm is exact)."""
    return bool((norm.running_mean == 0).all() and ((norm.running_var - 1).abs() <= 2 * norm.eps).all())


@torch.no_grad()
def reanchor(norms: list[torch.nn.BatchNorm2d], model: torch.nn.Module, images: torch.Tensor,
             batch_size: int = 32) -> None:
    """Give ``norms`` the running statistics of their input on ``images``, their eval-mode function unchanged."""
    sums = {norm: torch.zeros(3, norm.num_features, dtype=torch.float64) for norm in norms}  # count, sum, squares

    def measure(module: torch.nn.Module, args: tuple, _output: torch.Tensor) -> None:
        x = args[0].detach().double().transpose(0, 1).flatten(1)
        sums[module] += torch.stack([torch.full_like(x[:, 0], x.shape[1]), x.sum(1), x.square().sum(1)])

    hooks = [norm.register_forward_hook(measure) for norm in norms]
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start:start + batch_size])
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    for norm, (count, total, squares) in sums.items():
        mean = total / count
        var = (squares / count - mean.square()).clamp_min(0)
        old_weight = norm.weight.double()
        old_std = (norm.running_var.double() + norm.eps).sqrt()
        norm.bias.copy_(norm.bias.double() + old_weight * (mean - norm.running_mean.double()) / old_std)
        norm.weight.copy_(old_weight * (var + norm.eps).sqrt() / old_std)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
