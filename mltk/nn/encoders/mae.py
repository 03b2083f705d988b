"""Masked auto-encoder: a ViT encoder on the visible patches and a light decoder that
reconstructs the rest (He et al. 2021), with the masking supplied from outside.

One forward, for images x in [0, 1] and a per-sample patch permutation::

    keep, mask, restore = visible_patches(ids_shuffle, mask_ratio)  # first (1 - ratio) * L stay visible
    latent = encoder.encode(normalise(x), keep)                     [B, 1 + K, D]
    pred   = decoder(latent, restore)                               [B, L, p * p * C]
    loss   = masked_patch_mse(pred, norm_pix(patchify(x)), mask)    masked patches only

The permutation is an argument, not drawn inside, because the methods built
on this share it: RC-MAE's EMA teacher must see exactly the student's mask,
and data-parallel ranks draw their slices of one global permutation.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from mltk.core.errors import ConfigError
from mltk.nn.classifiers.architectures import build_model
from mltk.nn.encoders.vit import (
    LAYER_NORM_EPS,
    Block,
    VisionTransformer,
    init_transformer_weights,
    sincos_position_embedding,
)

# (width, depth, heads) of the decoder each encoder size is paired with in RC-MAE / MAE.
DECODER_SIZES = {"tiny": (128, 2, 4), "small": (256, 4, 8), "base": (512, 8, 16)}
DECODER_MAXIMA = {"width": 4096, "depth": 64, "heads": 64}  # as the ViT encoder's own
NORM_PIX_EPS = 1e-6
MAE_SPEC_KEYS = ("encoder", "decoder", "mask_ratio", "norm_pix_loss", "mean", "std")


def patchify(images: Tensor, patch_size: int) -> Tensor:
    """[B, C, S, S] -> [B, L, p * p * C], patches row-major, each flattened as (row, col, channel)."""
    batch, channels, size, _ = images.shape
    grid = size // patch_size
    x = images.reshape(batch, channels, grid, patch_size, grid, patch_size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(batch, grid * grid, patch_size * patch_size * channels)


def unpatchify(patches: Tensor, patch_size: int, channels: int) -> Tensor:
    """[B, L, p * p * C] -> [B, C, S, S], the inverse of :func:`patchify`."""
    batch, length, _ = patches.shape
    grid = int(round(length ** 0.5))
    x = patches.reshape(batch, grid, grid, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid * patch_size, grid * patch_size)


def norm_pix(patches: Tensor) -> Tensor:
    """Each patch standardised over its own values: [B, L, P] -> [B, L, P] (unbiased variance, eps 1e-6)."""
    mean = patches.mean(dim=-1, keepdim=True)
    var = patches.var(dim=-1, keepdim=True)
    return (patches - mean) / (var + NORM_PIX_EPS) ** 0.5


def masked_patch_mse(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Mean over masked patches of the per-patch mean squared error. pred, target [B, L, P]; mask [B, L] (1 = masked)."""
    per_patch = (pred - target).pow(2).mean(dim=-1)
    return (per_patch * mask).sum() / mask.sum()


def visible_count(num_patches: int, mask_ratio: float) -> int:
    """How many patches stay visible: int(L * (1 - ratio)), as MAE counts."""
    return int(num_patches * (1 - mask_ratio))


def mask_ratio_problem(mask_ratio: float, num_patches: int) -> str | None:
    """Why ``mask_ratio`` cannot mask ``num_patches`` patches, or None."""
    if not 0.0 < mask_ratio < 1.0:
        return f"mask_ratio must lie strictly between 0 and 1, got {mask_ratio}"
    keep = visible_count(num_patches, mask_ratio)
    if keep < 1 or keep >= num_patches:
        return (f"mask_ratio {mask_ratio} leaves {keep} of {num_patches} patches visible; "
                "at least one must be visible and one masked")
    return None


def random_permutation(batch: int, num_patches: int, *, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> Tensor:
    """Per-sample random orders of the patches: int64 [batch, num_patches] (argsort of uniform noise, as MAE)."""
    noise = torch.rand(batch, num_patches, generator=generator)
    return noise.argsort(dim=1).to(device)


@dataclasses.dataclass(frozen=True)
class MaskedView:
    """Which patches a masked forward sees. keep: [B, K]; mask: float [B, L], 1 = masked; restore: [B, L]."""

    keep: Tensor
    mask: Tensor
    restore: Tensor


def visible_patches(ids_shuffle: Tensor, mask_ratio: float) -> MaskedView:
    """The first ``int(L * (1 - ratio))`` patches of each sample's permutation stay visible."""
    batch, length = ids_shuffle.shape
    keep_count = visible_count(length, mask_ratio)
    restore = ids_shuffle.argsort(dim=1)
    mask = torch.ones(batch, length, device=ids_shuffle.device)
    mask[:, :keep_count] = 0
    return MaskedView(keep=ids_shuffle[:, :keep_count], mask=mask.gather(1, restore), restore=restore)


class MAEDecoder(nn.Module):
    """Encoder tokens of the visible patches -> a prediction for every patch.

    forward(latent [B, 1 + K, D_enc], restore [B, L]) -> [B, L, out_dim]. Mask
    tokens fill the missing positions; all positions get fixed sin-cos embeddings.
    """

    def __init__(self, *, num_patches: int, encoder_width: int, width: int, depth: int, heads: int,
                 out_dim: int, mlp_ratio: float = 4.0):
        super().__init__()
        grid = int(round(num_patches ** 0.5))
        self.embed = nn.Linear(encoder_width, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_position_embedding(width, grid, cls_token=True)[None],
                             persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio=mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.pred = nn.Linear(width, out_dim)
        self.apply(init_transformer_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    def forward(self, latent: Tensor, restore: Tensor) -> Tensor:
        x = self.embed(latent)
        batch, visible, width = x.shape
        fill = self.mask_token.expand(batch, restore.shape[1] + 1 - visible, -1)
        patches = torch.cat([x[:, 1:], fill], dim=1).gather(1, restore[..., None].expand(-1, -1, width))
        x = torch.cat([x[:, :1], patches], dim=1) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.pred(self.norm(x))[:, 1:]


@dataclasses.dataclass
class MAEOutput:
    pred: Tensor  # [B, L, p * p * C] prediction for every patch
    target: Tensor  # [B, L, p * p * C] (norm-pix) pixels of every patch
    mask: Tensor  # [B, L], 1 = masked

    @property
    def loss(self) -> Tensor:
        return masked_patch_mse(self.pred, self.target, self.mask)


class MaskedAutoencoder(nn.Module):
    """ViT encoder + MAE decoder on images in [0, 1] (normalised inside, like ImageClassifier).

    ``forward(x, ids_shuffle)`` -> MAEOutput; ``predict(x, ids_shuffle)`` -> pred only
    (the RC-MAE teacher); ``features(x)`` -> [CLS] (or pooled) features of the
    whole, unmasked image [B, D] (linear probes, self-distillation).
    """

    def __init__(self, encoder: VisionTransformer, *, decoder_width: int, decoder_depth: int,
                 decoder_heads: int, in_channels: int, mask_ratio: float = 0.75, norm_pix_loss: bool = True,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if encoder.classifier is not None:
            raise ValueError("the MAE encoder is built without a classifier (num_classes=0)")
        problem = mask_ratio_problem(mask_ratio, encoder.num_patches)
        if problem:
            raise ValueError(problem)
        self.encoder = encoder
        self.patch_size = encoder.patch_size
        self.in_channels = in_channels
        self.mask_ratio = mask_ratio
        self.norm_pix_loss = norm_pix_loss
        self.decoder = MAEDecoder(num_patches=encoder.num_patches, encoder_width=encoder.width,
                                  width=decoder_width, depth=decoder_depth, heads=decoder_heads,
                                  out_dim=self.patch_size ** 2 * in_channels)
        mean = [0.5] * in_channels if mean is None else list(mean)
        std = [0.5] * in_channels if std is None else list(std)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.spec: dict | None = None  # set by build_mae: the JSON that rebuilds this model

    @property
    def num_patches(self) -> int:
        return self.encoder.num_patches

    def normalize(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def target(self, normalized: Tensor) -> Tensor:
        patches = patchify(normalized, self.patch_size)
        return norm_pix(patches) if self.norm_pix_loss else patches

    def predict(self, x: Tensor, ids_shuffle: Tensor) -> Tensor:
        """x [B, C, S, S] in [0, 1], ids_shuffle [B, L] -> pred [B, L, p * p * C]."""
        view = visible_patches(ids_shuffle, self.mask_ratio)
        return self.decoder(self.encoder.encode(self.normalize(x), view.keep), view.restore)

    def forward(self, x: Tensor, ids_shuffle: Tensor) -> MAEOutput:
        normalized = self.normalize(x)
        view = visible_patches(ids_shuffle, self.mask_ratio)
        pred = self.decoder(self.encoder.encode(normalized, view.keep), view.restore)
        return MAEOutput(pred=pred, target=self.target(normalized), mask=view.mask)

    def features(self, x: Tensor) -> Tensor:
        """[B, C, S, S] in [0, 1] -> features of the whole image [B, D] (every patch seen)."""
        return self.encoder.embed(self.normalize(x))


def build_mae(spec: dict) -> MaskedAutoencoder:
    """The MaskedAutoencoder a spec describes (weights not included); ConfigError listing every problem.

    spec: ``{"arch": "mae", "encoder": {"arch": "vit", "args": {in_channels, image_size, ViT options}},
    "decoder": {"width", "depth", "heads"} (0 = the encoder size's pairing), "mask_ratio",
    "norm_pix_loss", "mean", "std"}``. The encoder part is a classifier spec without
    ``num_classes``, so ``build_model("vit", num_classes=K, **args)`` fine-tunes it.
    """
    problems = [f"missing key {key!r}" for key in MAE_SPEC_KEYS if key not in spec]
    if spec.get("arch", "mae") != "mae":
        problems.append(f"'arch' must be 'mae', got {spec.get('arch')!r}")
    if problems:
        raise ConfigError(problems, source="MAE spec", hint="save the spec from model.spec")
    encoder_spec, decoder = spec["encoder"], dict(spec["decoder"])
    if encoder_spec.get("arch") != "vit":
        raise ConfigError([f"the encoder must be a 'vit', got {encoder_spec.get('arch')!r}"], source="MAE spec")
    args = dict(encoder_spec.get("args", {}))
    # The model zoo checks the ViT options (names, types, choices, shape); the head it adds is dropped.
    classifier = build_model("vit", num_classes=1, mean=spec["mean"], std=spec["std"], **args)
    encoder = classifier.net
    encoder.classifier = None
    size = classifier.args["size"]
    widths = dict(zip(("width", "depth", "heads"), DECODER_SIZES[size], strict=True))
    unknown = sorted(set(decoder) - set(widths))
    dims = {key: int(decoder.get(key) or default) for key, default in widths.items()}
    problems = [f"decoder: unknown key {key!r} (valid: width, depth, heads)" for key in unknown]
    # The decoder's sizes come from a card too: bounded like the encoder's, before anything is built.
    problems += [f"decoder {key} must lie in [1, {DECODER_MAXIMA[key]}], got {value}"
                 for key, value in dims.items() if not 0 < value <= DECODER_MAXIMA[key]]
    if not problems and (dims["width"] % dims["heads"] or dims["width"] % 4):
        problems.append(f"decoder width {dims['width']} must be divisible by its heads {dims['heads']} and by 4")
    ratio_problem = mask_ratio_problem(float(spec["mask_ratio"]), encoder.num_patches)
    if ratio_problem:
        problems.append(ratio_problem)
    if problems:
        raise ConfigError(problems, source="MAE spec", hint="see `mltk cp mae my.yaml` for the model keys")
    model = MaskedAutoencoder(encoder, decoder_width=dims["width"], decoder_depth=dims["depth"],
                              decoder_heads=dims["heads"], in_channels=classifier.args["in_channels"],
                              mask_ratio=float(spec["mask_ratio"]), norm_pix_loss=bool(spec["norm_pix_loss"]),
                              mean=classifier.spec["mean"], std=classifier.spec["std"])
    model.spec = {"arch": "mae", "encoder": {"arch": "vit", "args": {k: v for k, v in classifier.args.items()
                                                      if k != "num_classes"}},
                  "decoder": dims, "mask_ratio": float(spec["mask_ratio"]),
                  "norm_pix_loss": bool(spec["norm_pix_loss"]),
                  "mean": classifier.spec["mean"], "std": classifier.spec["std"]}
    return model


def ema_copy(model: nn.Module) -> nn.Module:
    """A frozen copy of ``model`` to serve as an EMA teacher: same weights, no gradients, eval mode."""
    teacher = copy.deepcopy(model)
    teacher.requires_grad_(False)
    return teacher.eval()


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, momentum: float) -> None:
    """teacher <- momentum * teacher + (1 - momentum) * student, over every parameter."""
    t_params = list(teacher.parameters())
    s_params = [p.detach() for p in student.parameters()]
    if len(t_params) != len(s_params):
        raise ValueError("teacher and student have different parameters")
    torch._foreach_mul_(t_params, momentum)
    torch._foreach_add_(t_params, s_params, alpha=1.0 - momentum)
