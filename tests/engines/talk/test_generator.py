"""The style-based generator: modulated convolutions do what StyleGAN2's equations say, W+ has one latent per layer."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mltk.engines.talk.encoders import ImageEncoder, mask_mouth
from mltk.engines.talk.generator import ModulatedConv2d, StyleGenerator, num_latents


def test_modulated_conv_is_a_per_sample_conv_with_scaled_demodulated_kernel():
    torch.manual_seed(0)
    layer = ModulatedConv2d(4, 5, 3, w_dim=6)
    torch.nn.init.normal_(layer.affine.weight)
    x, w = torch.randn(3, 4, 8, 8), torch.randn(3, 6)
    out = layer(x, w)
    for b in range(3):
        kernel = layer.weight * layer.affine(w[b])[None, :, None, None]
        kernel = kernel / kernel.pow(2).sum(dim=(1, 2, 3), keepdim=True).add(1e-8).sqrt()
        expected = F.conv2d(x[b:b + 1], kernel, padding=1) + layer.bias[None, :, None, None]
        torch.testing.assert_close(out[b:b + 1], expected, rtol=1e-4, atol=1e-5)


def test_demodulation_makes_the_output_blind_to_the_style_s_overall_scale():
    torch.manual_seed(1)
    layer = ModulatedConv2d(4, 5, 3, w_dim=6)
    torch.nn.init.zeros_(layer.affine.weight)
    x = torch.randn(2, 4, 8, 8)
    w = torch.zeros(2, 6)
    base = layer(x, w)
    with torch.no_grad():
        layer.affine.bias.mul_(7.0)  # every input channel scaled by 7: demodulation removes it
    torch.testing.assert_close(layer(x, w), base, rtol=1e-4, atol=1e-5)
    plain = ModulatedConv2d(4, 5, 3, w_dim=6, demodulate=False)
    with torch.no_grad():
        plain.weight.copy_(layer.weight)
        before = plain(x, w) - plain.bias[None, :, None, None]
        plain.affine.bias.mul_(7.0)
        after = plain(x, w) - plain.bias[None, :, None, None]
    torch.testing.assert_close(after, 7.0 * before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("resolution", [16, 32])
def test_generator_and_encoder_shapes_follow_the_resolution(resolution):
    generator = StyleGenerator(resolution, w_dim=8, base_channels=4, max_channels=8)
    assert generator.num_ws == num_latents(resolution) == 3 * (resolution.bit_length() - 2) - 1
    encoder = ImageEncoder(resolution, generator.num_ws, w_dim=8, base_channels=4, max_channels=8)
    images = generator(encoder(torch.randn(2, 3, resolution, resolution)))
    assert images.shape == (2, 3, resolution, resolution)


def test_each_latent_of_w_plus_reaches_the_image():
    torch.manual_seed(2)
    generator = StyleGenerator(16, w_dim=8, base_channels=4, max_channels=8)
    for layer in generator.modules():
        if isinstance(layer, ModulatedConv2d):
            torch.nn.init.normal_(layer.affine.weight, std=0.5)
    ws = torch.randn(1, generator.num_ws, 8, requires_grad=True)
    generator(ws).square().sum().backward()
    assert (ws.grad.abs().sum(-1) > 0).all()


def test_generator_refuses_resolutions_it_cannot_build():
    with pytest.raises(ValueError, match="power of two"):
        StyleGenerator(48)


def test_mouth_mask_greys_the_lower_face_only():
    faces = torch.ones(1, 3, 32, 32)
    masked = mask_mouth(faces)
    assert masked[..., :16, :].eq(1).all()  # eyes and nose untouched
    assert masked[..., 24, 16].eq(0).all()  # the mouth gone
