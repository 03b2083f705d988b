"""Finding a dataset's files under the data dir, and saying exactly what is missing.

For dataset ``X`` under data dir ``D`` the folders searched are, in order:
``D/X``, torchvision's layout below it and below ``D`` (``MNIST/raw`` ...),
then ``D`` itself, so that pointing mltk at an existing torchvision root, or
at a folder that holds the files directly, just works. The specific folders
come before ``D`` itself because MNIST and Fashion-MNIST share file names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mltk.core.errors import DataMissingError
from mltk.core.paths import data_root


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """An explicit ``data_dir`` wins over ``$MLTK_DATA`` (``mltk.core.paths.data_root``)."""
    return Path(data_dir).expanduser() if data_dir is not None else data_root()


def search_folders(
    data_dir: Path, folder: str, torchvision_subdirs: tuple[str, ...] = ()
) -> list[Path]:
    own = data_dir / folder
    candidates = [own, *(own / sub for sub in torchvision_subdirs)]
    candidates += [data_dir / sub for sub in torchvision_subdirs] + [data_dir]
    return list(dict.fromkeys(candidates))


@dataclass(frozen=True)
class FileNeed:
    """One thing a split needs, satisfied by any of ``names`` (tried in order).

    A trailing "/" marks a folder, e.g. ("cifar-10-python.tar.gz", "cifar-10-batches-py/").
    """

    names: tuple[str, ...]

    @property
    def label(self) -> str:
        others = f" (or {' or '.join(self.names[1:])})" if len(self.names) > 1 else ""
        return self.names[0] + others


def find(need: FileNeed, folders: list[Path]) -> Path | None:
    """The first folder (in search order) holding any alternative of ``need``."""
    for folder in folders:
        for name in need.names:
            path = folder / name.rstrip("/")
            if path.is_dir() if name.endswith("/") else path.is_file():
                return path
    return None


def missing_data_error(
    dataset: str,
    split: str,
    missing: list[FileNeed],
    folders: list[Path],
    *,
    downloadable: bool,
) -> DataMissingError:
    wanted = " and ".join(need.label for need in missing)
    searched = ", ".join(
        f"{folder}" + ("" if folder.is_dir() else " (does not exist)") for folder in folders
    )
    files = " and ".join(need.names[0] for need in missing)
    hint = (
        f"put {files} in {folders[0]}/, or pass --data-dir / set MLTK_DATA to the folder "
        "that holds them"
    )
    if downloadable:
        hint += ", or pass --download where a network exists"
    return DataMissingError(
        f"{dataset} {split!r} split: cannot find {wanted}; searched {searched}", hint
    )
