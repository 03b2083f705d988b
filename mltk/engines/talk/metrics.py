"""Frame and landmark metrics that need no model: LMD, PSNR, SSIM.

* LMD (landmark distance, Chen et al. 2018): the Euclidean distance between
  corresponding mouth landmarks of a generated and a ground-truth track,
  averaged over points and frames. Both tracks must be in the same aligned
  crop coordinates (``faces.align``), so the figure is in crop pixels and
  head motion does not count; papers differ on the landmark set and the
  normalisation (PC-AVS #25, #26), ours is MediaPipe's 40 lip points at the
  crop size used, stated beside every number.
* PSNR in dB over images in [0, data_range], per frame, then averaged.
* SSIM (Wang et al. 2004) with an 11 x 11 Gaussian window of sigma 1.5,
  K1 = 0.01, K2 = 0.03, per channel, over the positions where the window
  fits inside the image, then averaged: the same number as scikit-image's
  ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)``.
"""

from __future__ import annotations

import torch

from mltk.engines.talk.faces import MOUTH_LANDMARKS

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def landmark_distance(predicted: torch.Tensor, target: torch.Tensor,
                      points: tuple[int, ...] | None = MOUTH_LANDMARKS) -> float:
    """LMD: tracks [T, 468, >=2] (or [T, K, 2] with ``points=None``) -> mean L2 distance in their units."""
    if predicted.shape != target.shape:
        raise ValueError(f"landmark tracks differ in shape: {tuple(predicted.shape)} vs {tuple(target.shape)}")
    if points is not None:
        predicted, target = predicted[..., list(points), :], target[..., list(points), :]
    return float((predicted[..., :2].double() - target[..., :2].double()).norm(dim=-1).mean())


def _as_batch(images: torch.Tensor) -> torch.Tensor:
    """[H, W, C] or [T, H, W, C] -> float64 [T, C, H, W]."""
    images = images[None] if images.dim() == 3 else images
    return images.permute(0, 3, 1, 2).to(torch.float64)


def psnr(predicted: torch.Tensor, target: torch.Tensor, data_range: float = 255.0) -> float:
    """Mean over frames of 10 log10(range^2 / MSE); images [T, H, W, C] or [H, W, C]. Identical frames give inf."""
    error = (_as_batch(predicted) - _as_batch(target)).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(data_range**2 / error)).mean())


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """[size, size] normalised Gaussian weights."""
    offsets = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    line = torch.exp(-offsets.pow(2) / (2 * sigma**2))
    line /= line.sum()
    return line[:, None] * line[None, :]


def ssim(predicted: torch.Tensor, target: torch.Tensor, data_range: float = 255.0) -> float:
    """Mean SSIM over frames, channels and valid window positions; images [T, H, W, C] or [H, W, C]."""
    x, y = _as_batch(predicted), _as_batch(target)
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW} x {SSIM_WINDOW} pixels, got {tuple(x.shape[-2:])}")
    channels = x.shape[1]
    window = gaussian_window().expand(channels, 1, SSIM_WINDOW, SSIM_WINDOW)

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.conv2d(image, window, groups=channels)

    mean_x, mean_y = local_mean(x), local_mean(y)
    variance_x = local_mean(x * x) - mean_x**2
    variance_y = local_mean(y * y) - mean_y**2
    covariance = local_mean(x * y) - mean_x * mean_y
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    index = ((2 * mean_x * mean_y + c1) * (2 * covariance + c2)) / (
        (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2))
    return float(index.mean())
