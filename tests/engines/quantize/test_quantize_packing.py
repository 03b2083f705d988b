"""Packed storage: every code survives pack -> unpack exactly, at the true width."""

from __future__ import annotations

import pytest
import torch

from mltk.engines.quantize.packing import (
    pack_codes,
    pack_signs,
    pack_symmetric,
    packed_size,
    unpack_codes,
    unpack_signs,
    unpack_symmetric,
)


@pytest.mark.parametrize("shape", [(1,), (7,), (8,), (9,), (32, 3, 3, 3), (5, 1, 3, 3), (13, 17)])
def test_signs_round_trip_exactly_at_one_bit_per_weight(shape):
    signs = torch.where(torch.rand(shape, generator=torch.Generator().manual_seed(len(shape))) < 0.5, -1.0, 1.0)
    packed = pack_signs(signs)
    assert packed.dtype == torch.uint8
    assert packed.numel() == -(-signs.numel() // 8)
    assert torch.equal(unpack_signs(packed, shape), signs)


def test_bit_order_is_little_end_first():
    # +1 at positions 0 and 9 -> byte 0 = 0b00000001, byte 1 = 0b00000010
    signs = -torch.ones(16)
    signs[0] = signs[9] = 1
    assert pack_signs(signs).tolist() == [1, 2]


@pytest.mark.parametrize("bits", [1, 2, 4])
def test_codes_round_trip_for_every_packable_width(bits):
    codes = torch.randint(0, 1 << bits, (1000,), generator=torch.Generator().manual_seed(bits))
    packed = pack_codes(codes, bits=bits)
    assert packed.numel() == packed_size(1000, bits)
    assert torch.equal(unpack_codes(packed, bits=bits, shape=(10, 100)).reshape(-1).long(), codes)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_symmetric_levels_round_trip(bits):
    limit = (1 << (bits - 1)) - 1
    levels = torch.randint(-limit, limit + 1, (6, 4, 3, 3), generator=torch.Generator().manual_seed(bits)).float()
    stored = pack_symmetric(levels, bits=bits)
    assert stored.numel() * stored.element_size() == -(-levels.numel() * bits // 8)
    assert torch.equal(unpack_symmetric(stored, bits=bits, shape=levels.shape), levels)


def test_out_of_range_codes_and_wrong_sizes_are_refused():
    with pytest.raises(ValueError, match="lie in"):
        pack_codes(torch.tensor([0, 4]), bits=2)
    with pytest.raises(ValueError, match="magnitude"):
        pack_symmetric(torch.tensor([2.0]), bits=2)
    with pytest.raises(ValueError, match="packed bytes"):
        unpack_signs(torch.zeros(2, dtype=torch.uint8), (17,))
