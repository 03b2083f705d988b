"""Storing quantized weights at their true width: 8 binary weights per byte.

A binarized weight is +1 or -1; it is stored as one bit (1 for +1, 0 for -1).
A b-bit weight (b = 2 or 4) is stored as its unsigned code ``q + 2**(b-1)``
in b bits. Codes are packed little-end first: element ``8 // b * i + j`` of
the flattened tensor sits in bits ``[j*b, (j+1)*b)`` of byte ``i``. The last
byte is padded with zero bits; the tensor's shape, kept beside the bytes,
says how many codes are real. 8-bit codes need no packing: they are int8.

    packed = pack_codes(codes, bits=1)        # uint8 [ceil(numel / 8)]
    codes  = unpack_codes(packed, bits=1, shape=codes.shape)   # exactly the input
"""

from __future__ import annotations

import math

import torch

PACKABLE_BITS = (1, 2, 4)


def binary_to_codes(signs: torch.Tensor) -> torch.Tensor:
    """+1/-1 (any float or int dtype) -> codes 1/0 as uint8, same shape. Zero counts as +1."""
    return (signs >= 0).to(torch.uint8)


def codes_to_binary(codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """codes 1/0 -> +1/-1 of ``dtype``, same shape."""
    return codes.to(dtype).mul_(2).sub_(1)


def packed_size(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take once packed."""
    return math.ceil(numel * bits / 8)


def pack_codes(codes: torch.Tensor, *, bits: int) -> torch.Tensor:
    """Unsigned integer codes < 2**bits (any shape) -> uint8 [packed_size(numel, bits)]."""
    if bits not in PACKABLE_BITS:
        raise ValueError(f"pack_codes packs 1, 2 or 4 bits per code, got {bits}")
    flat = codes.detach().reshape(-1).to(torch.int64).cpu()
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= 1 << bits):
        raise ValueError(f"codes must lie in [0, {(1 << bits) - 1}] to pack into {bits} bits, "
                         f"got [{int(flat.min())}, {int(flat.max())}]")
    per_byte = 8 // bits
    padded = torch.zeros(packed_size(flat.numel(), bits) * per_byte, dtype=torch.int64)
    padded[: flat.numel()] = flat
    shifts = torch.arange(per_byte, dtype=torch.int64) * bits
    return (padded.view(-1, per_byte) << shifts).sum(dim=1).to(torch.uint8)


def unpack_codes(packed: torch.Tensor, *, bits: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """The inverse of :func:`pack_codes`: uint8 bytes -> uint8 codes of ``shape``."""
    if bits not in PACKABLE_BITS:
        raise ValueError(f"unpack_codes unpacks 1, 2 or 4 bits per code, got {bits}")
    numel = math.prod(shape)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_size(numel, bits):
        raise ValueError(f"expected {packed_size(numel, bits)} packed bytes (uint8, 1-d) for {numel} "
                         f"codes of {bits} bits, got {packed.dtype} {tuple(packed.shape)}")
    per_byte = 8 // bits
    shifts = torch.arange(per_byte, dtype=torch.int64, device=packed.device) * bits
    mask = (1 << bits) - 1
    codes = (packed.to(torch.int64).unsqueeze(1) >> shifts) & mask
    return codes.reshape(-1)[:numel].to(torch.uint8).reshape(tuple(shape))


def pack_signs(signs: torch.Tensor) -> torch.Tensor:
    """+1/-1 weights of any shape -> uint8 [ceil(numel / 8)], one bit each."""
    return pack_codes(binary_to_codes(signs), bits=1)


def unpack_signs(packed: torch.Tensor, shape: tuple[int, ...] | torch.Size,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 packed bits -> +1/-1 of ``shape`` and ``dtype``."""
    return codes_to_binary(unpack_codes(packed, bits=1, shape=shape), dtype)


def pack_symmetric(levels: torch.Tensor, *, bits: int) -> torch.Tensor:
    """Integer levels in [-(2**(b-1) - 1), 2**(b-1) - 1] -> packed bytes (b = 2, 4) or int8 (b = 8)."""
    limit = (1 << (bits - 1)) - 1
    levels = levels.detach().round().to(torch.int64).cpu()
    if levels.numel() and int(levels.abs().max()) > limit:
        raise ValueError(f"levels of a {bits}-bit symmetric quantizer lie in [-{limit}, {limit}], "
                         f"got magnitude {int(levels.abs().max())}")
    if bits == 8:
        return levels.to(torch.int8).reshape(-1)
    return pack_codes(levels + (1 << (bits - 1)), bits=bits)


def unpack_symmetric(stored: torch.Tensor, *, bits: int, shape: tuple[int, ...] | torch.Size,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The inverse of :func:`pack_symmetric`: integer levels of ``shape`` as ``dtype``."""
    if bits == 8:
        if stored.dtype != torch.int8 or stored.numel() != math.prod(shape):
            raise ValueError(f"expected {math.prod(shape)} int8 values, got {stored.dtype} "
                             f"{tuple(stored.shape)}")
        return stored.reshape(tuple(shape)).to(dtype)
    codes = unpack_codes(stored, bits=bits, shape=shape)
    return codes.to(dtype) - float(1 << (bits - 1))
