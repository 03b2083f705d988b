"""A folder or a .zip seen the same way: relative file names and their bytes.

Image datasets ship both as folders and as zips; reading a zip in place
avoids extracting tens of thousands of small files.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from mltk.core.console import warn
from mltk.core.errors import ArtifactError

# The largest single file a tree hands out: far above any image a classifier
# reads, far below what would exhaust memory when a zip member inflates.
MAX_FILE_BYTES = 64 << 20


def _visible(name: str) -> bool:
    # Skip macOS resource forks and hidden files that zips made on a Mac carry.
    return not any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _escapes(name: str) -> bool:
    """A zip member named by an absolute path or through ``..``: it does not belong to the tree."""
    return name.startswith("/") or (len(name) > 1 and name[1] == ":") or ".." in name.split("/")


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
                members = [info.filename for info in self._zip.infolist() if not info.is_dir()]
            except (zipfile.BadZipFile, OSError) as error:
                raise ArtifactError(
                    f"{root}: not a readable zip ({error})", "the file is truncated or corrupt"
                ) from error
            escaping = [name for name in members if _escapes(name)]
            if escaping:
                warn(f"{root}: ignoring {len(escaping)} member(s) with absolute or '..' paths "
                     f"(first: {escaping[0][:200]!r})")
            self.names = sorted(name for name in members if not _escapes(name))
        self.names = [name for name in self.names if _visible(name)]
        self._name_set = set(self.names)

    @staticmethod
    def _walk(root: Path) -> list[str]:
        """Relative file names below ``root``, following folder links but refusing a link that loops.

        A linked folder is read once: a second way into the same real folder
        (a link back to an ancestor, or two links to one place) would repeat
        its files under another class name, or never end.
        """
        names: list[str] = []
        seen = {os.path.realpath(root)}
        for folder, subfolders, files in os.walk(root, followlinks=True):
            for sub in list(subfolders):
                path = os.path.join(folder, sub)
                if os.path.islink(path):
                    real = os.path.realpath(path)
                    if real in seen or any(real == s or real.startswith(s + os.sep) for s in _ancestors(path, root)):
                        raise ArtifactError(f"{path}: a folder link that leads back into folders already read "
                                            f"(a loop, or a second way to {real})",
                                            "remove the link, or copy the folder it points to")
                    seen.add(real)
            prefix = Path(folder).relative_to(root).as_posix()
            names += [name if prefix == "." else f"{prefix}/{name}" for name in files]
        return names

    def has(self, name: str) -> bool:
        return name in self._name_set

    def read(self, name: str) -> bytes:
        """The bytes of ``name``; a file larger than MAX_FILE_BYTES is refused before it is read."""
        try:
            size = self._zip.getinfo(name).file_size if self._zip is not None else (self.root / name).stat().st_size
            if size > MAX_FILE_BYTES:
                raise ArtifactError(f"{self.where(name)}: {size} bytes, more than the {MAX_FILE_BYTES >> 20} MiB "
                                    "a single image file may have", "remove the file or replace it with the image")
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


def _ancestors(path: str, root: Path) -> list[str]:
    """Real paths of the folders from ``root`` down to the folder holding ``path``."""
    chain, folder = [], os.path.dirname(path)
    root_real = os.path.realpath(root)
    while True:
        chain.append(os.path.realpath(folder))
        if chain[-1] == root_real or os.path.dirname(folder) == folder:
            return chain
        folder = os.path.dirname(folder)
