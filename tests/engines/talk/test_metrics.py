"""LMD, PSNR and SSIM on cases worked by hand, and SSIM against scikit-image when it is installed."""

from __future__ import annotations

import math

import pytest
import torch

from mltk.engines.talk import faces, metrics


def test_lmd_is_the_mean_mouth_point_distance_and_ignores_other_points():
    target = torch.zeros(3, 468, 3)
    predicted = target.clone()
    predicted[:, list(faces.MOUTH_LANDMARKS), 0] = 3.0
    predicted[:, list(faces.MOUTH_LANDMARKS), 1] = 4.0
    predicted[:, 100] = 50.0  # a cheek point: not the mouth
    assert metrics.landmark_distance(predicted, target) == pytest.approx(5.0)
    predicted[0, list(faces.MOUTH_LANDMARKS), :2] = 0.0
    assert metrics.landmark_distance(predicted, target) == pytest.approx(10 / 3)
    mouth = list(faces.MOUTH_LANDMARKS)
    assert metrics.landmark_distance(predicted[:, mouth, :2], target[:, mouth, :2], points=None) == \
        pytest.approx(10 / 3)


def test_psnr_of_a_known_error():
    target = torch.full((2, 8, 8, 3), 100, dtype=torch.uint8)
    predicted = target + 5  # MSE 25
    assert metrics.psnr(predicted, target) == pytest.approx(10 * math.log10(255**2 / 25))
    assert metrics.psnr(target, target) == math.inf


def test_ssim_is_one_for_equal_images_and_falls_with_noise_and_with_contrast_loss():
    generator = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (32, 40, 3), generator=generator, dtype=torch.uint8)
    assert metrics.ssim(image, image) == pytest.approx(1.0)
    noise = torch.randn(image.shape, generator=generator)
    slightly, very = ((image.float() + sigma * noise).clamp(0, 255).to(torch.uint8) for sigma in (10, 60))
    flat = (image.float() * 0.5 + 64).to(torch.uint8)
    assert 1.0 > metrics.ssim(slightly, image) > metrics.ssim(very, image)
    assert metrics.ssim(flat, image) < 0.95
    noisy = very
    assert metrics.ssim(noisy, image) == pytest.approx(metrics.ssim(image, noisy))
    assert metrics.gaussian_window().sum().item() == pytest.approx(1.0)


def test_ssim_matches_scikit_image():
    skimage_metrics = pytest.importorskip("skimage.metrics", reason="scikit-image is not installed")
    generator = torch.Generator().manual_seed(1)
    image = torch.randint(0, 256, (40, 50, 3), generator=generator, dtype=torch.uint8)
    other = (image.float() + 20 * torch.randn(image.shape, generator=generator)).clamp(0, 255).to(torch.uint8)
    reference = skimage_metrics.structural_similarity(
        image.numpy(), other.numpy(), gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=255, channel_axis=-1)
    assert metrics.ssim(image, other) == pytest.approx(reference, abs=1e-9)
