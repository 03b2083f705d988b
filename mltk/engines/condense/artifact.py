"""Condensed datasets as artifacts: what is stored, how it is decoded, how it is exported.

A ``condensed-dataset`` artifact (relation ``condensed-from``, parent
``dataset:<name>``) holds ``condensed.safetensors`` and ``grid.png``:

* ``kfs``: ``codes`` [classes, M, c_z, h, w] and the decoders' ``decoders.w1``,
  ``.b1``, ``.w2``, ``.b2``; the images are decoded when asked for, never stored.
* ``dm``, ``random``, ``herding``: ``images`` [classes, ipc, C, H, W].

Tensors live in the dataset's normalised space; the card's ``condensed``
section gives the layout, the normalisation, the storage accounting and the
data spec that rebuilds the real test split. Images of class c come in the
order stored, so the labels are not stored.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from mltk.core.artifact import open_artifact
from mltk.core.errors import UsageError
from mltk.core.registry import Registry
from mltk.core.tensor_files import load_safetensors, safetensors_bytes
from mltk.data.images.png_grid import grid_png
from mltk.data.splits import DataSpec
from mltk.engines.condense.kfs import FactorizedSet
from mltk.engines.condense.storage import KfsLayout

KIND = "condensed-dataset"
RELATION = "condensed-from"
TENSORS_FILE = "condensed.safetensors"
GRID_FILE = "grid.png"
EXPORT_NPZ = "condensed.npz"
GRID_COLUMNS = 10  # images per class shown in the picture


@dataclasses.dataclass
class CondensedSet:
    """A loaded condensed dataset. ``pixels()`` decodes it: images [N, C, H, W] on the [0, 1] scale, labels [N]."""

    card: dict
    tensors: dict[str, torch.Tensor]
    source: str

    @property
    def info(self) -> dict:
        return self.card["condensed"]

    @property
    def method(self) -> str:
        return self.info["method"]

    @property
    def class_names(self) -> list[str]:
        return list(self.card["task"]["class_names"])

    @property
    def mean(self) -> torch.Tensor:
        return torch.tensor(self.info["normalization"]["mean"]).view(1, -1, 1, 1)

    @property
    def std(self) -> torch.Tensor:
        return torch.tensor(self.info["normalization"]["std"]).view(1, -1, 1, 1)

    def data_spec(self) -> DataSpec:
        return DataSpec.stored(self.card["task"]["data"])

    @torch.no_grad()
    def decode_normalized(self) -> torch.Tensor:
        """Every synthetic image, normalised: [classes, per_class, C, H, W]."""
        if self.method == "kfs":
            return factorized_set(self.info, self.tensors).decode()
        return self.tensors["images"]

    def pixels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(images float [N, C, H, W] on the [0, 1] scale, not clipped; labels int64 [N]), class by class."""
        images = self.decode_normalized()
        classes, per_class = images.shape[:2]
        flat = images.flatten(0, 1) * self.std + self.mean
        return flat, torch.arange(classes).repeat_interleave(per_class)


def factorized_set(info: dict, tensors: dict[str, torch.Tensor]) -> FactorizedSet:
    """The KFS module a card's ``condensed`` section describes, holding ``tensors``."""
    layout = KfsLayout(**{**info["layout"], "latent_shape": tuple(info["layout"]["latent_shape"]),
                          "image_shape": tuple(info["layout"]["image_shape"])})
    decoder = info["decoder"]
    fset = FactorizedSet(layout, activation=decoder["activation"], upsample=decoder["upsample"],
                         residual=decoder["residual"])
    fset.load_stored(tensors)
    return fset.eval()


def condensed_files(tensors: dict[str, torch.Tensor], pixel_rows: list[torch.Tensor], *,
                    metadata: dict[str, str]) -> dict[str, bytes]:
    """The artifact's files: the tensors (with provenance metadata) and the picture of every class."""
    return {TENSORS_FILE: safetensors_bytes({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                                            metadata),
            GRID_FILE: grid_png([row[:GRID_COLUMNS] for row in pixel_rows])}


def load_condensed(ref: str, registry: Registry | None = None) -> CondensedSet:
    """The condensed dataset ``ref`` names: a registry reference or an exported artifact folder."""
    opened = open_artifact(ref, registry=registry, kinds=(KIND,),
                           kind_hint="the condensed protocol takes artifacts made by `mltk condense`")
    tensors, _ = load_safetensors(opened.file(TENSORS_FILE))
    return CondensedSet(opened.card, tensors, opened.source)


def export_condensed(cset: CondensedSet, out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Write the decoded images as ``condensed.npz`` and ``grid.png`` into ``out_dir``.

    The npz holds ``images`` float32 [N, C, H, W] clipped to [0, 1], ``labels``
    int64 [N] and ``class_names``: the single-split layout ``npz:PATH`` reads,
    and plain NumPy for any other tool.
    """
    out = Path(out_dir).expanduser()
    targets = [out / EXPORT_NPZ, out / GRID_FILE]
    clashes = [p.name for p in targets if p.exists()]
    if clashes and not overwrite:
        raise UsageError(f"{out}: would overwrite {', '.join(clashes)}", hint="choose an empty folder")
    out.mkdir(parents=True, exist_ok=True)
    images, labels = cset.pixels()
    clipped = images.clamp(0, 1)
    np.savez_compressed(targets[0], images=clipped.numpy().astype(np.float32), labels=labels.numpy(),
                        class_names=np.array(cset.class_names, dtype=str))
    rows = [clipped[labels == c] for c in range(len(cset.class_names))]
    targets[1].write_bytes(grid_png([row[:GRID_COLUMNS] for row in rows]))
    return targets
