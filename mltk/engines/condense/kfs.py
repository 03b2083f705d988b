"""The KFS parameterisation: latent codes per class, decoded by tiny decoders shared by every class.

Per class c there are M learnable codes ``z[c, i]`` of shape (c_z, h, w), a
fraction of the image's resolution; K decoders ``g_k`` (upsample -> 3x3 conv ->
activation -> 3x3 conv, optionally plus the upsampled code itself) are shared by all classes, and every (code, decoder)
pair is one synthetic image of its class::

    image[c, i * K + k] = g_k(z[c, i])          # M * K images per class

The K decoders run as two convolution calls whatever K is (the second one
grouped). Images live in the normalised space of
the dataset (``(x - mean) / std``), as the DM reference keeps its images.

Initialisation (the brief's prototype found both necessary to beat DM): codes
are down-sampled real images of their class, and the decoders get a short
autoencoder warm start, ``g_k(downsample(x)) ~ x`` on real images, before
matching begins. Which sizes, activation and upsampling KFS itself uses could
not be read from the paper; ours are configurable (``kfs.*``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.condense.storage import KERNEL, KfsLayout

ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "leaky_relu": lambda x: F.leaky_relu(x, 0.2)}


class TinyDecoders(nn.Module):
    """K decoders in one module. forward: codes [N, c_z, h, w] -> images [N, K, C, H, W].

    Parameters (per decoder k): ``w1[k]`` [hidden, c_z, 3, 3], ``b1[k]`` [hidden],
    ``w2[k]`` [C, hidden, 3, 3], ``b2[k]`` [C].
    """

    def __init__(self, *, decoders: int, latent_channels: int, hidden: int, image_shape: tuple[int, int, int],
                 activation: str = "tanh", upsample: str = "nearest", residual: bool = False):
        super().__init__()
        channels = image_shape[0]
        self.decoders, self.hidden, self.channels = decoders, hidden, channels
        self.image_size = tuple(image_shape[1:])
        self.activation_name, self.upsample, self.residual = activation, upsample, residual
        # With ``residual`` the decoders add detail to the upsampled code (its channels cycled to C),
        # which a code initialised from a down-sampled image already makes a blurred image of.
        self.register_buffer("base_channels", torch.arange(channels) % latent_channels, persistent=False)
        self.activation = ACTIVATIONS[activation]
        self.w1 = nn.Parameter(torch.empty(decoders, hidden, latent_channels, KERNEL, KERNEL))
        self.b1 = nn.Parameter(torch.empty(decoders, hidden))
        self.w2 = nn.Parameter(torch.empty(decoders, channels, hidden, KERNEL, KERNEL))
        self.b2 = nn.Parameter(torch.empty(decoders, channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's Conv2d initialisation, decoder by decoder (from the global generator)."""
        for weight, bias in ((self.w1, self.b1), (self.w2, self.b2)):
            fan_in = weight.shape[2] * KERNEL * KERNEL
            bound = 1.0 / fan_in**0.5
            with torch.no_grad():
                weight.uniform_(-bound, bound)
                bias.uniform_(-bound, bound)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        count = codes.shape[0]
        mode = {"mode": self.upsample} if self.upsample == "nearest" else {"mode": "bilinear",
                                                                           "align_corners": False}
        up = F.interpolate(codes, size=self.image_size, **mode)  # [N, c_z, H, W]
        k = self.decoders
        # Every decoder's first layer reads the same upsampled code: one convolution with K * hidden
        # outputs; the second is grouped, decoder k reading its own hidden block. Channels-last
        # memory makes CPU kernels fast for these few channels (NCHW grouped backward is ~5x slower).
        hidden = F.conv2d(up.contiguous(memory_format=torch.channels_last), self.w1.flatten(0, 1),
                          self.b1.flatten(), padding=1)
        out = F.conv2d(self.activation(hidden), self.w2.flatten(0, 1), self.b2.flatten(), padding=1, groups=k)
        out = out.contiguous().view(count, k, self.channels, *self.image_size)
        if self.residual:
            out = out + up[:, self.base_channels].unsqueeze(1)
        return out


class FactorizedSet(nn.Module):
    """Codes [classes, M, c_z, h, w] and the shared decoders.

    ``decode()`` -> images [classes, M * K, C, H, W] (pair i * K + k is code i
    through decoder k); ``decode(pairs)`` decodes only the pairs whose flat
    indices ``pairs`` int64 [P] names, for every class -> [classes, P, C, H, W].
    """

    def __init__(self, layout: KfsLayout, *, activation: str = "tanh", upsample: str = "nearest",
                 residual: bool = False):
        super().__init__()
        self.layout = layout
        self.codes = nn.Parameter(torch.zeros(layout.num_classes, layout.codes_per_class, *layout.latent_shape))
        self.decoders = TinyDecoders(decoders=layout.decoders, latent_channels=layout.latent_shape[0],
                                     hidden=layout.hidden, image_shape=layout.image_shape,
                                     activation=activation, upsample=upsample, residual=residual)

    def decode(self, pairs: torch.Tensor | None = None) -> torch.Tensor:
        classes, m = self.codes.shape[:2]
        k = self.layout.decoders
        if pairs is None:
            images = self.decoders(self.codes.flatten(0, 1))  # [classes * M, K, C, H, W]
            return images.view(classes, m * k, *images.shape[2:])
        code_index, decoder_index = pairs // k, pairs % k
        codes = self.codes[:, code_index].flatten(0, 1)  # [classes * P, c_z, h, w]
        images = self.decoders(codes)  # [classes * P, K, C, H, W]
        chosen = images[torch.arange(len(codes), device=codes.device), decoder_index.repeat(classes)]
        return chosen.view(classes, len(pairs), *chosen.shape[1:])

    def stored_tensors(self) -> dict[str, torch.Tensor]:
        """Everything a condensed set stores, by name: the codes and each decoder tensor."""
        d = self.decoders
        return {"codes": self.codes.detach(), "decoders.w1": d.w1.detach(), "decoders.b1": d.b1.detach(),
                "decoders.w2": d.w2.detach(), "decoders.b2": d.b2.detach()}

    def load_stored(self, tensors: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for name, param in (("codes", self.codes), ("decoders.w1", self.decoders.w1),
                                ("decoders.b1", self.decoders.b1), ("decoders.w2", self.decoders.w2),
                                ("decoders.b2", self.decoders.b2)):
                param.copy_(tensors[name])


def downsample(images: torch.Tensor, latent_shape: tuple[int, int, int]) -> torch.Tensor:
    """Real images [N, C, H, W] -> codes [N, c_z, h, w]: area-averaged, channels cycled to c_z.

    With c_z = C (the default) a code is simply the low-resolution image.
    """
    channels_out, height, width = latent_shape
    small = F.adaptive_avg_pool2d(images, (height, width))
    index = torch.arange(channels_out, device=images.device) % images.shape[1]
    return small.index_select(1, index)


def warmup_loss(fset: FactorizedSet, real: torch.Tensor) -> torch.Tensor:
    """Autoencoder loss of every decoder on real images [N, C, H, W]: mean of |g_k(down(x)) - x|^2."""
    codes = downsample(real, fset.layout.latent_shape)
    decoded = fset.decoders(codes)  # [N, K, C, H, W]
    return (decoded - real.unsqueeze(1)).pow(2).mean()


def decoder_spread(images: torch.Tensor, decoders: int) -> float:
    """Mean distance between the images two different decoders make of the same code.

    images: [classes, M * K, C, H, W] as ``FactorizedSet.decode`` returns them.
    Near 0 means the decoders collapsed onto one another and the budget is wasted.
    """
    if decoders < 2:
        return 0.0
    classes, pairs = images.shape[:2]
    grouped = images.reshape(classes, pairs // decoders, decoders, -1)
    distances = torch.cdist(grouped, grouped)  # [classes, M, K, K]
    off_diagonal = distances.sum() / (classes * grouped.shape[1] * decoders * (decoders - 1))
    return float(off_diagonal) / grouped.shape[-1] ** 0.5


def diversity_penalty(images: torch.Tensor, decoders: int) -> torch.Tensor:
    """Negative mean squared distance between decoders' images of the same code (minimised)."""
    classes, pairs = images.shape[:2]
    grouped = images.reshape(classes, pairs // decoders, decoders, -1)
    centred = grouped - grouped.mean(dim=2, keepdim=True)
    return -centred.pow(2).mean()
