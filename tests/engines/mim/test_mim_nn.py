"""The ViT and the masked auto-encoder: masking from an external permutation, what each path sees."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import ConfigError
from mltk.nn import build_model
from mltk.nn.encoders.mae import (
    build_mae,
    ema_copy,
    ema_update,
    norm_pix,
    patchify,
    random_permutation,
    unpatchify,
    visible_patches,
)
from mltk.nn.encoders.vit import sincos_position_embedding


def tiny_mae(*, image_size: int = 8, patch_size: int = 2, channels: int = 3, mask_ratio: float = 0.75,
             seed: int = 0):
    torch.manual_seed(seed)
    return build_mae({"encoder": {"arch": "vit", "args": {"in_channels": channels, "image_size": image_size,
                                                          "patch_size": patch_size, "width": 32, "depth": 2,
                                                          "heads": 2}},
                      "decoder": {"width": 16, "depth": 1, "heads": 2}, "mask_ratio": mask_ratio,
                      "norm_pix_loss": True, "mean": None, "std": None}).eval()


def test_patchify_round_trip_and_layout():
    images = torch.rand(2, 3, 8, 8)
    patches = patchify(images, 2)
    assert patches.shape == (2, 16, 12)
    assert torch.equal(unpatchify(patches, 2, 3), images)
    # patch 1 is row 0, columns 2-3; values flattened as (row, col, channel)
    assert torch.equal(patches[0, 1].view(2, 2, 3), images[0, :, 0:2, 2:4].permute(1, 2, 0))


def test_visible_patches_follow_the_permutation():
    ids = random_permutation(4, 16, generator=torch.Generator().manual_seed(0))
    view = visible_patches(ids, 0.75)
    assert view.keep.shape == (4, 4) and torch.equal(view.keep, ids[:, :4])
    assert view.mask.sum(dim=1).tolist() == [12.0] * 4
    for row in range(4):
        assert view.mask[row, view.keep[row]].sum() == 0  # kept patches are exactly the unmasked ones
    assert torch.equal(ids.gather(1, view.restore), torch.arange(16).expand(4, 16))


def test_norm_pix_standardises_each_patch():
    target = norm_pix(torch.rand(3, 5, 12) * 7 + 2)
    assert torch.allclose(target.mean(-1), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(target.var(-1), torch.ones(3, 5), atol=1e-3)


def test_masked_forward_sees_only_the_visible_patches():
    model = tiny_mae()
    x = torch.rand(2, 3, 8, 8)
    ids = random_permutation(2, 16, generator=torch.Generator().manual_seed(1))
    view = visible_patches(ids, model.mask_ratio)
    changed = x.clone()
    masked_patch = int(ids[0, -1])  # the last of the permutation is masked
    row, col = divmod(masked_patch, 4)
    changed[0, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2] = torch.rand(3, 2, 2)
    with torch.no_grad():
        assert torch.equal(model.predict(x, ids), model.predict(changed, ids))
        assert view.mask[0, masked_patch] == 1
        out = model(changed, ids)
        assert not torch.equal(out.target, model(x, ids).target)  # the target does see it


def test_unmasked_cls_path_sees_every_patch():
    model = tiny_mae()
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        base = model.features(x)
        assert base.shape == (1, 32)
        for patch in range(16):
            row, col = divmod(patch, 4)
            changed = x.clone()
            changed[0, :, 2 * row:2 * row + 2, 2 * col:2 * col + 2] += 0.5
            assert not torch.allclose(model.features(changed), base), f"patch {patch} is not seen"


def test_ema_update_follows_the_formula_and_teacher_has_no_gradient():
    student = tiny_mae(seed=1)
    teacher = ema_copy(student)
    assert all(not p.requires_grad for p in teacher.parameters())
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    before = [p.clone() for p in teacher.parameters()]
    ema_update(teacher, student, 0.9)
    for old, new, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        assert torch.allclose(new, 0.9 * old + 0.1 * s, atol=1e-6)


def test_attention_matches_softmax_attention_in_value_and_gradient():
    """The fused-qkv attention (heads split with unbind) is plain multi-head softmax attention."""
    from mltk.nn.encoders.vit import Attention

    torch.manual_seed(0)
    attention = Attention(24, 3)
    x = torch.randn(2, 5, 24, requires_grad=True)

    def reference(x):
        q, k, v = attention.qkv(x).split(24, dim=-1)
        q, k, v = (t.reshape(2, 5, 3, 8).transpose(1, 2) for t in (q, k, v))
        weights = torch.softmax(q @ k.mT / 8 ** 0.5, dim=-1)
        return attention.proj((weights @ v).transpose(1, 2).reshape(2, 5, 24))

    expected = reference(x)
    out = attention(x)
    assert torch.allclose(out, expected, atol=1e-6)
    grads = torch.autograd.grad(out.square().sum(), [x, attention.qkv.weight])
    expected_grads = torch.autograd.grad(expected.square().sum(), [x, attention.qkv.weight])
    for got, want in zip(grads, expected_grads, strict=True):
        assert torch.allclose(got, want, atol=1e-5)


def test_sincos_positions_are_distinct_and_cls_row_is_zero():
    table = sincos_position_embedding(16, 4, cls_token=True)
    assert table.shape == (17, 16) and torch.equal(table[0], torch.zeros(16))
    assert torch.cdist(table[1:], table[1:]).add(torch.eye(16)).min() > 0.1


def test_vit_classifier_and_encoder_share_parameter_names():
    classifier = build_model("vit", num_classes=5, in_channels=3, image_size=8, patch_size=2, width=32, depth=2,
                             heads=2)
    encoder = tiny_mae().encoder
    assert set(classifier.net.state_dict()) - set(encoder.state_dict()) == {"classifier.weight", "classifier.bias"}
    assert classifier(torch.rand(2, 3, 8, 8)).shape == (2, 5)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"image_size": 10, "patch_size": 4}, "not divisible by patch_size 4"),
    ({"mask_ratio": 1.0}, "mask_ratio must lie strictly between 0 and 1"),
    ({"mask_ratio": 0.99}, "at least one must be visible"),
])
def test_bad_shapes_and_ratios_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tiny_mae(**kwargs)


def _from_hugging_face(hf_state: dict, depth: int, decoder_depth: int) -> dict:
    """Our MAE's state dict holding the weights of a transformers ViTMAEForPreTraining."""
    def block(src: str, dst: str) -> dict:
        att = f"{src}.attention"
        return {f"{dst}.norm1.weight": hf_state[f"{src}.layernorm_before.weight"],
                f"{dst}.norm1.bias": hf_state[f"{src}.layernorm_before.bias"],
                f"{dst}.attn.qkv.weight": torch.cat([hf_state[f"{att}.{p}_proj.weight"] for p in "qkv"]),
                f"{dst}.attn.qkv.bias": torch.cat([hf_state[f"{att}.{p}_proj.bias"] for p in "qkv"]),
                f"{dst}.attn.proj.weight": hf_state[f"{att}.o_proj.weight"],
                f"{dst}.attn.proj.bias": hf_state[f"{att}.o_proj.bias"],
                f"{dst}.norm2.weight": hf_state[f"{src}.layernorm_after.weight"],
                f"{dst}.norm2.bias": hf_state[f"{src}.layernorm_after.bias"],
                f"{dst}.mlp.0.weight": hf_state[f"{src}.mlp.fc1.weight"], f"{dst}.mlp.0.bias": hf_state[f"{src}.mlp.fc1.bias"],
                f"{dst}.mlp.2.weight": hf_state[f"{src}.mlp.fc2.weight"], f"{dst}.mlp.2.bias": hf_state[f"{src}.mlp.fc2.bias"]}

    out = {"encoder.cls_token": hf_state["vit.embeddings.cls_token"],
           "encoder.patch_embed.weight": hf_state["vit.embeddings.patch_embeddings.projection.weight"],
           "encoder.patch_embed.bias": hf_state["vit.embeddings.patch_embeddings.projection.bias"],
           "encoder.norm.weight": hf_state["vit.layernorm.weight"], "encoder.norm.bias": hf_state["vit.layernorm.bias"],
           "decoder.mask_token": hf_state["decoder.mask_token"],
           "decoder.embed.weight": hf_state["decoder.decoder_embed.weight"],
           "decoder.embed.bias": hf_state["decoder.decoder_embed.bias"],
           "decoder.norm.weight": hf_state["decoder.decoder_norm.weight"],
           "decoder.norm.bias": hf_state["decoder.decoder_norm.bias"],
           "decoder.pred.weight": hf_state["decoder.decoder_pred.weight"],
           "decoder.pred.bias": hf_state["decoder.decoder_pred.bias"]}
    for i in range(depth):
        out.update(block(f"vit.layers.{i}", f"encoder.blocks.{i}"))
    for i in range(decoder_depth):
        out.update(block(f"decoder.decoder_layers.{i}", f"decoder.blocks.{i}"))
    return out


def test_same_loss_as_hugging_face_vitmae_with_the_same_weights_and_noise():
    """Patch order, sin-cos positions, masking from the noise's argsort, decoder and norm-pix loss all agree."""
    from transformers import ViTMAEConfig, ViTMAEForPreTraining

    config = ViTMAEConfig(image_size=8, patch_size=2, num_channels=3, hidden_size=32, num_hidden_layers=2,
                          num_attention_heads=2, intermediate_size=128, decoder_hidden_size=16,
                          decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
                          mask_ratio=0.75, norm_pix_loss=True, layer_norm_eps=1e-6)
    torch.manual_seed(0)
    reference = ViTMAEForPreTraining(config).eval()
    # transformers 5.x leaves the frozen sin-cos positions of a model built from a config at zero (its
    # lazy-init flag skips them): compute them with its own initialisers.
    reference.vit.embeddings.patch_embeddings.projection._is_hf_initialized = False
    reference.vit.embeddings.initialize_weights()
    reference.decoder.initialize_weights(16)
    ours = build_mae({"encoder": {"arch": "vit", "args": {"in_channels": 3, "image_size": 8, "patch_size": 2,
                                                          "width": 32, "depth": 2, "heads": 2}},
                      "decoder": {"width": 16, "depth": 1, "heads": 2}, "mask_ratio": 0.75, "norm_pix_loss": True,
                      "mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0]}).eval()
    state = reference.state_dict()
    assert torch.allclose(state["vit.embeddings.position_embeddings"][0], ours.encoder.pos_embed[0], atol=1e-6)
    assert torch.allclose(state["decoder.decoder_pos_embed"][0], ours.decoder.pos_embed[0], atol=1e-6)
    ours.load_state_dict(_from_hugging_face(state, 2, 1))
    x, noise = torch.rand(4, 3, 8, 8), torch.rand(4, 16)
    with torch.no_grad():
        expected = reference(pixel_values=x, noise=noise)
        out = ours(x, noise.argsort(dim=1))
    assert torch.allclose(out.pred, expected.logits, atol=1e-5)
    assert torch.equal(out.mask, expected.mask)
    assert torch.allclose(out.loss, expected.loss, atol=1e-6)
