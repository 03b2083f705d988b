"""Storage accounting is exact: what the budget allows, what is stored, and the smallest IPC that works."""

from __future__ import annotations

import pytest
import torch

from mltk.core import config
from mltk.core.catalog import get_recipe, preset_path
from mltk.core.errors import ConfigError
from mltk.engines.condense.kfs import FactorizedSet
from mltk.engines.condense.storage import budget_floats, decoder_floats, kfs_layout

DIGITS = {"num_classes": 10, "image_shape": (1, 8, 8)}


def test_digits_layout_matches_the_prototype_and_counts_every_stored_float():
    layout = kfs_layout(ipc=1, **DIGITS, downsample=2, latent_channels=0, decoders=4, hidden=2)
    # The brief's prototype: 3 codes of 1x4x4 per class, 4 decoders of 39 floats, 636 of 640 floats.
    assert (layout.codes_per_class, layout.latent_shape, layout.floats_per_decoder) == (3, (1, 4, 4), 39)
    assert layout.stored_floats == 636 <= budget_floats(1, 10, (1, 8, 8)) == 640
    assert layout.images_per_class == 12
    fset = FactorizedSet(layout)
    assert sum(p.numel() for p in fset.parameters()) == layout.stored_floats
    assert sum(t.numel() for t in fset.stored_tensors().values()) == layout.stored_floats
    assert kfs_layout(ipc=2, **DIGITS, downsample=2, latent_channels=0, decoders=4, hidden=2).codes_per_class == 7


def test_the_digits_preset_layout_spends_the_whole_budget():
    # The preset's layout (chosen on a validation split): 8 decoders of 1 hidden channel, 20 floats each.
    k = config.resolve(get_recipe("condense").config_class, preset=preset_path("condense", "digits")).kfs
    sizes = {"downsample": k.downsample, "latent_channels": k.latent_channels, "decoders": k.decoders,
             "hidden": k.hidden}
    layout = kfs_layout(ipc=1, **DIGITS, **sizes)
    assert (layout.codes_per_class, layout.floats_per_decoder, layout.decoder_floats) == (3, 20, 160)
    assert layout.stored_floats == 640 == budget_floats(1, 10, (1, 8, 8)) and layout.images_per_class == 24
    ipc2 = kfs_layout(ipc=2, **DIGITS, **sizes)
    assert (ipc2.codes_per_class, ipc2.stored_floats, ipc2.images_per_class) == (7, 1280, 56)
    assert sum(p.numel() for p in FactorizedSet(ipc2).parameters()) == ipc2.stored_floats


@pytest.mark.parametrize("ipc,decoders,hidden,channels,latent", [(1, 1, 1, 3, 0), (10, 4, 16, 3, 0),
                                                                 (50, 8, 32, 3, 6), (2, 3, 5, 1, 2)])
def test_every_layout_fits_its_budget_and_adding_a_code_would_not(ipc, decoders, hidden, channels, latent):
    shape = (channels, 32, 32)
    layout = kfs_layout(ipc=ipc, num_classes=10, image_shape=shape, downsample=2, latent_channels=latent,
                        decoders=decoders, hidden=hidden)
    budget = budget_floats(ipc, 10, shape)
    assert layout.stored_floats <= budget < layout.stored_floats + 10 * layout.floats_per_code
    assert layout.decoder_floats == decoders * decoder_floats(latent_channels=latent or channels, hidden=hidden,
                                                              image_channels=channels)
    assert sum(p.numel() for p in FactorizedSet(layout).parameters()) == layout.stored_floats


def test_a_budget_that_cannot_hold_the_decoders_names_the_smallest_ipc_that_works():
    with pytest.raises(ConfigError) as info:
        kfs_layout(ipc=1, **DIGITS, downsample=2, latent_channels=0, decoders=16, hidden=8)
    message = info.value.message
    smallest = int(message.rsplit("the smallest IPC that works is ", 1)[1].split()[0])
    # 16 decoders of 8*9+8 + 8*9+1 = 153 floats, plus ten 4x4 codes: 2608 floats, 5 images of 64 px per class.
    assert smallest == 5 and "--ipc 5" in info.value.hint
    layout = kfs_layout(ipc=smallest, **DIGITS, downsample=2, latent_channels=0, decoders=16, hidden=8)
    assert layout.codes_per_class >= 1
    with pytest.raises(ConfigError):
        kfs_layout(ipc=smallest - 1, **DIGITS, downsample=2, latent_channels=0, decoders=16, hidden=8)


def test_asking_for_more_codes_than_fit_is_a_config_error():
    with pytest.raises(ConfigError, match="holds at most 3 codes per class"):
        kfs_layout(ipc=1, **DIGITS, downsample=2, latent_channels=0, decoders=4, hidden=2, codes_per_class=4)


def test_pairs_decode_the_same_images_as_the_full_set():
    torch.manual_seed(0)
    layout = kfs_layout(ipc=2, **DIGITS, downsample=2, latent_channels=0, decoders=4, hidden=2)
    fset = FactorizedSet(layout)
    with torch.no_grad():
        fset.codes.normal_()
        full = fset.decode()
        pairs = torch.tensor([5, 0, 27, 13])
        assert full.shape == (10, 28, 1, 8, 8)
        assert torch.equal(fset.decode(pairs), full[:, pairs])
        # Pair i * K + k is code i through decoder k: decoder 1 of code 3.
        alone = fset.decoders(fset.codes[:, 3])[:, 1]
        assert torch.allclose(full[:, 3 * 4 + 1], alone)
