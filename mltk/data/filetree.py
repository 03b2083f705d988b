"""A folder or a .zip seen the same way: relative file names and their bytes.

Image datasets ship both as folders and as zips; reading a zip in place
avoids extracting tens of thousands of small files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mltk.core.errors import ArtifactError


def _visible(name: str) -> bool:
    # Skip macOS resource forks and hidden files that zips made on a Mac carry.
    return not any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


class FileTree:
    """Files below ``root`` (a folder or a .zip), named by relative POSIX paths."""

    def __init__(self, root: Path):
        self.root = root
        self._zip: zipfile.ZipFile | None = None
        if root.is_dir():
            self.names = sorted(self._walk(root))
        else:
            try:
                self._zip = zipfile.ZipFile(root)
                self.names = sorted(
                    info.filename for info in self._zip.infolist() if not info.is_dir()
                )
            except (zipfile.BadZipFile, OSError) as error:
                raise ArtifactError(
                    f"{root}: not a readable zip ({error})", "the file is truncated or corrupt"
                ) from error
        self.names = [name for name in self.names if _visible(name)]
        self._name_set = set(self.names)

    @staticmethod
    def _walk(root: Path) -> list[str]:
        names = []
        for folder, _, files in os.walk(root, followlinks=True):
            prefix = Path(folder).relative_to(root).as_posix()
            names += [name if prefix == "." else f"{prefix}/{name}" for name in files]
        return names

    def has(self, name: str) -> bool:
        return name in self._name_set

    def read(self, name: str) -> bytes:
        try:
            if self._zip is not None:
                return self._zip.read(name)
            return (self.root / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as error:
            raise ArtifactError(f"{self.where(name)}: cannot read ({error})") from error

    def where(self, name: str) -> str:
        """How error messages name a file: ``folder/a/b.png`` or ``x.zip:a/b.png``."""
        return f"{self.root}:{name}" if self._zip is not None else str(self.root / name)

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()

    def __enter__(self) -> FileTree:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
