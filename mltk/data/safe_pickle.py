"""Loading the pickles that some official datasets ship (CIFAR) without running code.

A pickle can call any importable function while it loads; a data file is not
a program. ``load_restricted`` resolves only the numpy globals needed to
rebuild plain arrays and refuses every other global, so a malicious or
tampered file raises ``ArtifactError`` before anything executes.

The CIFAR batches were written by Python 2 (protocol 2, byte strings), so they
need ``encoding="latin1"`` to give ``str`` keys and let numpy read the raw
array bytes; the same pickles written by Python 3 load unchanged (at protocol
2 they carry the array bytes as latin-1 text for ``_codecs.encode``, which is
allowed with that codec alone).
"""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any

import numpy as np

from mltk.core.errors import ArtifactError


def _numpy_core(submodule: str) -> Any:
    # numpy >= 2 moved numpy.core to numpy._core; older pickles still name numpy.core.
    try:
        return importlib.import_module(f"numpy._core.{submodule}")
    except ImportError:
        return importlib.import_module(f"numpy.core.{submodule}")


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """What Python 3's protocol-2 pickles call (as ``_codecs.encode``) to rebuild a numpy array's bytes.

    Only the latin-1 codec is allowed: it maps characters to bytes one to one and runs nothing.
    """
    if encoding.lower().replace("_", "-") not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with {encoding!r}: only latin1 text is allowed")
    return text.encode("latin1")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    reconstruct = _numpy_core("multiarray")._reconstruct  # protocols 0-4
    frombuffer = _numpy_core("numeric")._frombuffer  # protocol 5, Python >= 3.8
    return {
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds only dicts, lists, strings, numbers and numpy arrays."""

    def __init__(self, file: io.BufferedIOBase, source: str, encoding: str = "latin1"):
        super().__init__(file, encoding=encoding)
        self.source = source
        self.allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        found = self.allowed.get((module, name))
        if found is None:
            raise ArtifactError(
                f"{self.source}: refused to load a pickle that references {module}.{name}; "
                "a data file may only hold plain data and numpy arrays",
                "get the file again from the official source; mltk never runs code from data files",
            )
        return found


def load_restricted(data: bytes, source: str) -> Any:
    """Unpickle ``data`` (read from ``source``, named in errors) with ``RestrictedUnpickler``."""
    try:
        return RestrictedUnpickler(io.BytesIO(data), source).load()
    except ArtifactError:
        raise
    except Exception as error:  # a corrupt pickle can fail in many ways: one message for all
        raise ArtifactError(
            f"{source}: not a readable pickle ({type(error).__name__}: {error})",
            "the file is truncated or corrupt; get it again from the official source",
        ) from error
