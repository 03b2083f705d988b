"""Choosing the device and the mixed-precision mode."""

from __future__ import annotations

import contextlib

import torch

from mltk.core.errors import UsageError


def resolve_device(spec: str = "auto", *, local_rank: int | None = None) -> torch.device:
    """``auto`` picks cuda > mps > cpu; under torchrun each rank takes ``cuda:<local_rank>``."""
    spec = (spec or "auto").lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise UsageError(f"unknown device {spec!r}", hint="use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UsageError(f"device {spec!r} requested but CUDA is not available",
                             hint="use device=cpu or device=auto")
        if device.index is None:
            device = torch.device("cuda", local_rank or 0)
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError("device 'mps' requested but MPS is not available", hint="use device=cpu")
    return device


def amp_dtype(device: torch.device, mode: str) -> torch.dtype | None:
    """The autocast dtype for ``mode`` (auto/on/off): bf16 where CUDA supports it, else fp16; None on CPU."""
    if mode == "off" or device.type != "cuda":
        if mode == "on" and device.type != "cuda":
            raise UsageError("amp=on needs a CUDA device", hint="use amp=auto or amp=off")
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
