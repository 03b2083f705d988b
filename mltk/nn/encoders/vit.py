"""Vision Transformer (ViT-Tiny/Small/Base, any patch size) with a [CLS] token.

The encoder of MAE, RC-MAE and self-distillation, and an image classifier in
the model zoo (``build_model("vit", ..., size="tiny", patch_size=4)``)::

    patches  = conv(p x p, stride p)(x)                   [B, L, D], L = (S / p)^2
    tokens   = [cls + pos_0, patches + pos_1..L]          fixed 2-D sin-cos positions
    tokens   = depth x pre-norm block(attention, MLP)     attention: F.scaled_dot_product_attention
    features = LayerNorm(tokens)[:, 0]                    ("cls" pool) or mean of the patch tokens
    logits   = classifier(features)

``encode(x, keep=...)`` runs the encoder on a subset of the patches (the
visible ones of a masked image); every caller that drops patches passes the
indices it keeps, so the masking itself lives with the caller (``mltk.nn.encoders.mae``).
The layout (pre-norm blocks, qkv with bias, LayerNorm eps 1e-6, fixed sin-cos
positions, xavier-uniform linear layers) follows the MAE family of models, so
weights trained with the MAE recipes fine-tune here unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mltk.nn.classifiers.architectures import option_problems_error, register_arch

# (width, depth, heads) of the standard sizes (DeiT / MAE naming).
VIT_SIZES = {"tiny": (192, 12, 3), "small": (384, 12, 6), "base": (768, 12, 12)}
POOLS = ("cls", "mean")
LAYER_NORM_EPS = 1e-6


def sincos_position_embedding(dim: int, grid: int, *, cls_token: bool) -> Tensor:
    """Fixed 2-D sine-cosine positions: [grid * grid (+1), dim], the [CLS] row all zeros.

    Half of ``dim`` encodes the row, half the column, each as sin/cos of
    ``position / 10000^(2k / (dim / 2))`` (the MAE / MoCo v3 layout).
    """
    if dim % 4:
        raise ValueError(f"sin-cos positions need a width divisible by 4, got {dim}")
    quarter = dim // 4
    omega = 1.0 / 10000 ** (torch.arange(quarter, dtype=torch.float64) / quarter)
    coords = torch.arange(grid, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(values: Tensor) -> Tensor:
        angles = values.reshape(-1, 1) * omega[None]
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    # MAE's grid puts the column (w) coordinate first.
    table = torch.cat([encode(cols), encode(rows)], dim=1).float()
    if cls_token:
        table = torch.cat([torch.zeros(1, dim), table], dim=0)
    return table


class Attention(nn.Module):
    """Multi-head self-attention: [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        # unbind, not qkv[:, :, 0] ...: the backward of each index op fills a zero tensor of the whole
        # qkv shape (three of them, then summed); unbind's backward is one stack, straight into the
        # [B, N, 3, heads, D / heads] layout the qkv linear's backward reads without another copy.
        q, k, v = (t.transpose(1, 2) for t in qkv.unbind(2))
        out = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, D / heads]
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class DropPath(nn.Module):
    """Stochastic depth: zero a residual branch for a random subset of the samples (training only)."""

    def __init__(self, rate: float):
        super().__init__()
        self.rate = rate

    def forward(self, x: Tensor) -> Tensor:
        if not self.training or self.rate == 0.0:
            return x
        keep = 1.0 - self.rate
        mask = torch.rand(x.shape[0], *([1] * (x.dim() - 1)), device=x.device, dtype=x.dtype) < keep
        return x * mask / keep


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)). [B, N, D] -> [B, N, D]."""

    def __init__(self, dim: int, heads: int, *, mlp_ratio: float, drop_path: float = 0.0):
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


def init_transformer_weights(module: nn.Module) -> None:
    """xavier-uniform linear layers with zero bias, unit LayerNorms (JAX ViT / MAE)."""
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class VisionTransformer(nn.Module):
    """A ViT on [B, C, S, S] inputs (already normalised), S divisible by ``patch_size``.

    ``num_classes=0`` builds the encoder alone (no ``classifier``), as MAE uses it.
    Parameter names: ``patch_embed``, ``cls_token``, ``blocks.<i>``, ``norm``,
    ``classifier``; the positions are a non-persistent buffer rebuilt from the shape.
    """

    def __init__(self, *, num_classes: int, in_channels: int, image_size: int, patch_size: int,
                 width: int, depth: int, heads: int, mlp_ratio: float = 4.0, drop_path: float = 0.0,
                 pool: str = "cls"):
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image size {image_size} is not divisible by the patch size {patch_size}")
        self.patch_size = patch_size
        self.grid = image_size // patch_size
        self.num_patches = self.grid * self.grid
        self.width = width
        self.depth = depth
        self.pool = pool
        self.patch_embed = nn.Conv2d(in_channels, width, kernel_size=patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_position_embedding(width, self.grid, cls_token=True)[None],
                             persistent=False)
        rates = [drop_path * i / max(1, depth - 1) for i in range(depth)]  # linearly deeper, as in DeiT
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio=mlp_ratio, drop_path=rate) for rate in rates)
        self.norm = nn.LayerNorm(width, eps=LAYER_NORM_EPS)
        self.classifier = nn.Linear(width, num_classes) if num_classes > 0 else None
        self.apply(init_transformer_weights)
        # The patch projection is a linear map of the flattened patch: initialise it like one.
        nn.init.xavier_uniform_(self.patch_embed.weight.view(width, -1))
        nn.init.zeros_(self.patch_embed.bias)
        nn.init.normal_(self.cls_token, std=0.02)

    def patch_tokens(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> patch tokens with their positions [B, L, D] (row-major patch order)."""
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed[:, 1:]

    def encode(self, x: Tensor, keep: Tensor | None = None) -> Tensor:
        """[B, C, S, S] -> normalised tokens [B, 1 + K, D]; [CLS] first.

        ``keep``: int64 [B, K] indices of the patches to encode (K of L); None = all.
        """
        tokens = self.patch_tokens(x)
        if keep is not None:
            tokens = tokens.gather(1, keep[..., None].expand(-1, -1, tokens.shape[-1]))
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(tokens.shape[0], -1, -1)
        tokens = torch.cat([cls, tokens], dim=1)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)

    def pooled(self, tokens: Tensor) -> Tensor:
        """Normalised tokens [B, 1 + K, D] -> features [B, D] ([CLS], or the mean of the patch tokens)."""
        return tokens[:, 0] if self.pool == "cls" else tokens[:, 1:].mean(dim=1)

    def embed(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> features [B, D] of the whole image: what the classifier reads."""
        return self.pooled(self.encode(x))

    def forward(self, x: Tensor) -> Tensor:
        """[B, C, S, S] -> logits [B, num_classes]."""
        if self.classifier is None:
            raise RuntimeError("this VisionTransformer is an encoder (num_classes=0): use embed()")
        return self.classifier(self.embed(x))

    def layer_of(self, name: str) -> int:
        """Depth index of parameter ``name`` for layer-wise lr decay: 0 = embeddings, depth + 1 = head."""
        if name.startswith(("patch_embed", "cls_token", "pos_embed")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.depth + 1


def vit_dimensions(size: str, *, width: int = 0, depth: int = 0, heads: int = 0) -> tuple[int, int, int]:
    """(width, depth, heads) of ``size`` with any non-zero override applied."""
    base_width, base_depth, base_heads = VIT_SIZES[size]
    return width or base_width, depth or base_depth, heads or base_heads


def vit_option_problems(image_size: int, *, size: str, patch_size: int, width: int, depth: int, heads: int,
                        mlp_ratio: float, drop_path: float) -> list[str]:
    """Everything wrong with a ViT's options, all at once (empty when it can be built)."""
    problems = []
    if patch_size < 1:
        problems.append(f"patch_size must be at least 1, got {patch_size}")
    elif image_size % patch_size:
        divisors = [p for p in range(1, image_size + 1) if image_size % p == 0 and p <= 32]
        problems.append(f"image size {image_size} is not divisible by patch_size {patch_size} "
                        f"(patch sizes that fit: {divisors})")
    for key, value in (("width", width), ("depth", depth), ("heads", heads)):
        if value < 0:
            problems.append(f"{key} must be 0 (the size's default) or positive, got {value}")
    if not problems and size in VIT_SIZES:
        w, _, h = vit_dimensions(size, width=width, depth=depth, heads=heads)
        if w % h:
            problems.append(f"width {w} is not divisible by heads {h}")
        elif w % 4:
            problems.append(f"width {w} must be divisible by 4 (2-D sin-cos positions)")
    if mlp_ratio <= 0:
        problems.append(f"mlp_ratio must be positive, got {mlp_ratio}")
    if not 0.0 <= drop_path < 1.0:
        problems.append(f"drop_path must be in [0, 1), got {drop_path}")
    return problems


@register_arch(
    "vit",
    description="Vision Transformer with [CLS] token (tiny 192x12, small 384x12, base 768x12; "
    "any patch size; width/depth/heads override the size when non-zero)",
    choices={"size": tuple(VIT_SIZES), "pool": POOLS},
    maxima={"patch_size": 4096, "width": 4096, "depth": 64, "heads": 64, "mlp_ratio": 16.0},
)
def vit(
    num_classes: int,
    in_channels: int,
    image_size: int,
    *,
    size: str = "tiny",
    patch_size: int = 4,
    width: int = 0,
    depth: int = 0,
    heads: int = 0,
    mlp_ratio: float = 4.0,
    drop_path: float = 0.0,
    pool: str = "cls",
) -> VisionTransformer:
    problems = vit_option_problems(image_size, size=size, patch_size=patch_size, width=width, depth=depth,
                                   heads=heads, mlp_ratio=mlp_ratio, drop_path=drop_path)
    if problems:
        raise option_problems_error("vit", problems)
    w, d, h = vit_dimensions(size, width=width, depth=depth, heads=heads)
    return VisionTransformer(num_classes=num_classes, in_channels=in_channels, image_size=image_size,
                             patch_size=patch_size, width=w, depth=d, heads=h, mlp_ratio=mlp_ratio,
                             drop_path=drop_path, pool=pool)
