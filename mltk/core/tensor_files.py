"""Reading and writing tensors without pickle.

* safetensors files, checked before they are parsed so that a truncated
  download, an HTML error page or a corrupt header gives a one-line error
  naming the file, not a parser backtrace;
* "state trees" (optimizer and trainer state: nested dicts and lists of
  tensors, numbers and strings) as one safetensors file whose tensors are keyed
  by their path in the tree and whose other values are JSON in the header;
* foreign PyTorch checkpoints (``.pt``/``.pth``/``.th``), opened only with
  ``torch.load(weights_only=True)``, so a file whose pickle would run code is
  refused, never executed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors_bytes
from safetensors.torch import save as save_safetensors_bytes

from mltk.core.errors import ArtifactError

_MAX_HEADER_BYTES = 100 * 1024 * 1024  # the safetensors format's own limit


# ---------------------------------------------------------------- plain files


def write_file(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and fsync it, so a rename after this is durable."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a directory so that renames inside it survive a power cut (POSIX only)."""
    if os.name != "posix":
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------- safetensors


def safetensors_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise ``tensors`` (moved to CPU, made contiguous, de-aliased) with string ``metadata``."""
    seen: set[tuple[int, int]] = set()
    plain = {}
    for key, tensor in tensors.items():
        tensor = tensor.detach().to("cpu")
        # safetensors refuses tensors that share memory (tied weights, an EMA
        # teacher aliasing its student): store each one as its own copy.
        ident = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if ident in seen or not tensor.is_contiguous():
            tensor = tensor.contiguous().clone()
        seen.add(ident)
        plain[key] = tensor
    meta = {str(k): str(v) for k, v in (metadata or {}).items()}
    return save_safetensors_bytes(plain, metadata=meta)


def save_safetensors(path: Path, tensors: Mapping[str, torch.Tensor],
                     metadata: Mapping[str, str] | None = None) -> None:
    write_file(Path(path), safetensors_bytes(tensors, metadata))


def read_safetensors_header(path: Path) -> tuple[dict, int]:
    """(header dict, header length) of a safetensors file, after checking its layout."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise ArtifactError(f"{path}: not a safetensors file ({size} bytes, too short)",
                                hint="the file is truncated; re-create or re-download it")
        if prefix.lstrip().startswith((b"<", b"{")):
            raise ArtifactError(f"{path}: not a safetensors file (starts with {prefix[:8]!r}, "
                                "looks like an HTML or JSON page)",
                                hint="the download probably saved an error page; download it again")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
            raise ArtifactError(f"{path}: not a valid safetensors file (header claims {header_len} "
                                f"bytes, file has {size})",
                                hint="the file is truncated or corrupt; re-create it")
        raw = handle.read(header_len)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ArtifactError(f"{path}: corrupt safetensors header (not JSON)",
                            hint="the file is corrupt; re-create it") from None
    problem = _header_problem(header)
    if problem:
        raise ArtifactError(f"{path}: corrupt safetensors header ({problem})",
                            hint="the file is corrupt; re-create it")
    data_end = max((entry["data_offsets"][1] for key, entry in header.items()
                    if key != "__metadata__"), default=0)
    if 8 + header_len + data_end > size:
        raise ArtifactError(f"{path}: truncated safetensors file ({size} bytes, its header "
                            f"needs {8 + header_len + data_end})",
                            hint="the write was interrupted or the copy is incomplete; re-create it")
    return header, header_len


def _header_problem(header: Any) -> str | None:
    """What makes a parsed safetensors header malformed, or None: checked before any entry is trusted."""
    if not isinstance(header, dict):
        return f"a JSON {type(header).__name__}, not an object"
    for key, entry in header.items():
        name = key[:80]
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                return "__metadata__ is not a mapping of strings"
            continue
        if not isinstance(entry, dict):
            return f"entry {name!r} is not an object"
        offsets, shape = entry.get("data_offsets"), entry.get("shape")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            return f"entry {name!r} has no valid data_offsets"
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            return f"entry {name!r} has no valid shape"
        if not isinstance(entry.get("dtype"), str):
            return f"entry {name!r} has no dtype"
    return None


@dataclasses.dataclass(frozen=True)
class TensorLayout:
    """What a tensor is without its values: its shape and the kind of number it holds."""

    shape: tuple[int, ...]
    kind: str  # "float", "int", "bool" or "complex": loading across kinds changes what the values mean


def tensor_layout(tensor: torch.Tensor) -> TensorLayout:
    if tensor.dtype == torch.bool:
        kind = "bool"
    elif tensor.is_complex():
        kind = "complex"
    elif tensor.is_floating_point():
        kind = "float"
    else:
        kind = "int"
    return TensorLayout(tuple(tensor.shape), kind)


def _stored_kind(dtype: str) -> str:
    """The kind of a safetensors dtype name (F32, BF16, F8_E4M3, I64, U8, BOOL, C64, ...)."""
    if dtype == "BOOL":
        return "bool"
    if dtype.startswith(("F", "BF")):
        return "float"
    if dtype.startswith(("I", "U")):
        return "int"
    if dtype.startswith("C"):
        return "complex"
    return dtype[:20]  # unknown to mltk: a kind of its own, which no parameter has


def read_tensor_layouts(path: Path) -> dict[str, TensorLayout]:
    """The layout of every tensor in a safetensors file, from its header alone: no tensor data is read,
    so a model can be checked against a file before either is given memory."""
    header, _ = read_safetensors_header(Path(path))
    return {key: TensorLayout(tuple(entry["shape"]), _stored_kind(entry["dtype"]))
            for key, entry in header.items() if key != "__metadata__"}


def load_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a safetensors file on CPU, with clear errors for bad files."""
    path = Path(path)
    header, _ = read_safetensors_header(path)
    try:
        tensors = load_safetensors_bytes(path.read_bytes())
    except (SafetensorError, ValueError, TypeError, RuntimeError) as exc:
        raise ArtifactError(f"{path}: unreadable safetensors file ({exc})",
                            hint="the file is corrupt; re-create it") from None
    return tensors, dict(header.get("__metadata__") or {})


def read_safetensors_metadata(path: Path) -> dict[str, str]:
    header, _ = read_safetensors_header(Path(path))
    return dict(header.get("__metadata__") or {})


# ---------------------------------------------------------------- state trees


_TENSOR_REF = "__tensor__"


def save_state_tree(path: Path, tree: Any) -> None:
    """Write a nested structure of dicts, lists, tensors and JSON scalars to ``path``.

    Tensors are stored as safetensors entries keyed by their path in the tree;
    the rest of the structure, with references in place of the tensors, is JSON
    in the file's metadata. Dict keys are kept with their type (int or str),
    which torch optimizer state dicts need.
    """
    tensors: dict[str, torch.Tensor] = {}

    def encode(node: Any, key: str) -> Any:
        if isinstance(node, torch.Tensor):
            tensors[key] = node
            return {_TENSOR_REF: key}
        if isinstance(node, Mapping):
            return {"__dict__": [[_encode_key(k), encode(v, f"{key}/{k}")] for k, v in node.items()]}
        if isinstance(node, (list, tuple)):
            return [encode(v, f"{key}/{i}") for i, v in enumerate(node)]
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        raise TypeError(f"cannot store {type(node).__name__} at {key or '/'} in a state file")

    structure = encode(tree, "")
    save_safetensors(path, tensors, {"mltk_state": json.dumps(structure)})


def load_state_tree(path: Path) -> Any:
    tensors, metadata = load_safetensors(path)
    if "mltk_state" not in metadata:
        raise ArtifactError(f"{path}: not an mltk state file (no 'mltk_state' metadata)")

    def decode(node: Any) -> Any:
        if isinstance(node, dict) and _TENSOR_REF in node:
            return tensors[node[_TENSOR_REF]]
        if isinstance(node, dict) and "__dict__" in node:
            return {k: decode(v) for k, v in node["__dict__"]}
        if isinstance(node, list):
            return [decode(v) for v in node]
        return node

    try:
        return decode(json.loads(metadata["mltk_state"]))
    except (ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"{path}: corrupt mltk state file ({type(exc).__name__}: {str(exc)[:200]})",
                            hint="the file is corrupt; re-create it") from None


def _encode_key(key: Any) -> Any:
    if isinstance(key, bool) or not isinstance(key, (int, str)):
        raise TypeError(f"state dict keys must be int or str, got {key!r}")
    return key


# ---------------------------------------------------------------- foreign checkpoints


def load_foreign_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a plain PyTorch checkpoint, read with ``weights_only=True``.

    Accepts a state_dict, or a dict holding one under ``state_dict``, ``model``,
    ``model_state_dict`` or ``net`` (as training scripts save them); strips a
    DataParallel/DDP ``module.`` prefix. A pickle that references code is
    refused with the global it asked for.
    """
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise unsafe_pickle_error(str(path), exc) from None
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path}: not a readable PyTorch checkpoint ({str(exc).splitlines()[0]})",
                            hint="check that the file is complete and was written by torch.save") from None
    state = _find_state_dict(obj)
    if state is None:
        keys = ", ".join(map(str, list(obj)[:8])) if isinstance(obj, Mapping) else type(obj).__name__
        raise ArtifactError(f"{path}: no tensors found (top-level keys: {keys})",
                            hint="save the model's state_dict() to the file")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def unsafe_pickle_error(where: str, exc: pickle.UnpicklingError) -> ArtifactError:
    """mltk's one-line refusal of a pickle that ``torch.load(weights_only=True)`` would not load.

    torch's own message runs to several lines and suggests ``weights_only=False``,
    which would run the file's code: only the global it refused is kept.
    """
    reason = str(exc).splitlines()
    detail = next((line.strip() for line in reason if "Unsupported global" in line or "GLOBAL" in line),
                  reason[0].strip() if reason else "unsupported content")
    return ArtifactError(
        f"{where}: refused: the file holds pickled Python objects that could run code ({detail[:200]})",
        hint="mltk reads pickled weights with torch.load(weights_only=True) only, so no code runs; "
             "re-save the weights as a plain state_dict or as safetensors")


def _find_state_dict(obj: Any) -> dict[str, torch.Tensor] | None:
    if isinstance(obj, Mapping):
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors and len(tensors) == len(obj):
            return dict(tensors)
        for key in ("state_dict", "model", "model_state_dict", "net", "module"):
            if key in obj:
                found = _find_state_dict(obj[key])
                if found is not None:
                    return found
        if tensors:
            return dict(tensors)
    return None
