"""Hostile image folders and zips are refused (exit-3 errors naming the file) before they cost memory,
or read without the parts that do not belong to them."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from mltk.core.errors import ArtifactError
from mltk.data import load_dataset
from mltk.data.filetree import MAX_FILE_BYTES


def _png(size=(5, 6), value=7) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((size[1], size[0]), value, dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_zip_member_larger_than_any_image_is_refused_before_it_is_inflated(tmp_path):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("cat/a.png", _png())
        # a valid PNG header followed by 80 MiB of zeros: a few hundred KiB compressed
        archive.writestr("dog/b.png", _png() + bytes(MAX_FILE_BYTES + (16 << 20)))
    assert path.stat().st_size < 2 << 20
    with pytest.raises(ArtifactError, match=r"bomb\.zip:dog/b\.png: \d+ bytes, more than"):
        load_dataset(f"imagefolder:{path}")


def test_an_image_larger_than_a_classifier_reads_is_refused_from_its_header(tmp_path):
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "small.png").write_bytes(_png())
    Image.new("L", (5000, 20)).save(tmp_path / "cat" / "wide.png")
    with pytest.raises(ArtifactError, match=r"wide\.png is 5000x20, larger than 4096 pixels a side"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_a_decompression_bomb_is_a_data_error_naming_the_file(tmp_path, monkeypatch):
    (tmp_path / "cat").mkdir()
    Image.new("L", (300, 300)).save(tmp_path / "cat" / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 90,000 pixels: over twice the limit
    with pytest.raises(ArtifactError, match=r"bomb\.png: cannot decode the image"):
        load_dataset(f"imagefolder:{tmp_path}")


def test_a_folder_link_back_into_the_tree_is_refused_not_followed(tmp_path):
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / "a.png").write_bytes(_png())
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)
    with pytest.raises(ArtifactError, match=r"loop: a folder link that leads back into"):
        load_dataset(f"imagefolder:{root}")


def test_a_folder_link_out_of_the_tree_is_followed_once(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(_png(value=9))
    root = tmp_path / "images"
    (root / "cat").mkdir(parents=True)
    (root / "cat" / "a.png").write_bytes(_png())
    (root / "dog").symlink_to(elsewhere, target_is_directory=True)
    dataset = load_dataset(f"imagefolder:{root}")
    assert dataset.class_names == ["cat", "dog"] and dataset.labels.tolist() == [0, 1]


def test_absolute_and_dotdot_zip_members_are_ignored_with_a_warning(tmp_path, capsys):
    path = tmp_path / "images.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for label in ("cat", "dog"):
            archive.writestr(f"{label}/a.png", _png())
        archive.writestr("/abs/evil.png", _png())
        archive.writestr("../up/evil.png", _png())
    dataset = load_dataset(f"imagefolder:{path}")
    assert dataset.class_names == ["cat", "dog"] and len(dataset) == 2
    assert "ignoring 2 member(s) with absolute or '..' paths" in capsys.readouterr().err


# ---------------------------------------------------------------- the same inputs at full size, under a memory limit
# Each runs in a child allowed 1 GiB beyond a started mltk (the ``memory_limited`` fixture): a reader
# that inflates, decodes or walks what it should refuse then fails with MemoryError or a timeout.


def _load_in_limited_child(memory_limited, reference: str, **kwargs):
    return memory_limited(f"""
        import sys
        from mltk.core.errors import ArtifactError
        from mltk.data import load_dataset
        try:
            load_dataset({reference!r}, **{kwargs!r})
        except ArtifactError as exc:
            print(exc.message)
            sys.exit(exc.exit_code)
        print("loaded")
    """, timeout=60)


def _zeros_into(handle, count: int) -> None:
    chunk = bytes(16 << 20)
    for start in range(0, count, len(chunk)):
        handle.write(chunk[: min(len(chunk), count - start)])


def test_a_one_gib_zip_member_costs_no_memory(tmp_path, memory_limited):
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        archive.writestr("cat/a.png", _png())
        with archive.open("dog/b.png", "w", force_zip64=True) as member:
            member.write(_png())  # a valid PNG header, then 1 GiB of zeros
            _zeros_into(member, 1 << 30)
    assert path.stat().st_size < 8 << 20
    result = _load_in_limited_child(memory_limited, f"imagefolder:{path}")
    assert result.code == 3, result.stderr
    assert "dog/b.png" in result.stdout and "more than" in result.stdout


def test_huge_images_are_refused_from_their_headers_before_any_is_decoded(tmp_path, memory_limited):
    buffer = io.BytesIO()
    Image.new("L", (12000, 12000)).save(buffer, "PNG", compress_level=1)  # 144 MB each when decoded
    path = tmp_path / "big.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat/small.png", _png())
        for index in range(8):
            archive.writestr(f"dog/{index}.png", buffer.getvalue())
    result = _load_in_limited_child(memory_limited, f"imagefolder:{path}")
    assert result.code == 3, result.stderr
    assert "is 12000x12000, larger than 4096 pixels a side" in result.stdout


def test_a_one_gib_cifar_tarball_member_is_refused_unread(tmp_path, memory_limited):
    import tarfile

    class Zeros(io.RawIOBase):
        def __init__(self, count: int):
            self.left = count

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            count = min(len(buffer), self.left)
            buffer[:count] = bytes(count)
            self.left -= count
            return count

    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = 1 << 30
        tar.addfile(info, io.BufferedReader(Zeros(info.size), 1 << 20))
    result = _load_in_limited_child(memory_limited, "cifar10", data_dir=str(tmp_path))
    assert result.code == 3, result.stderr
    assert "data_batch_1: 1073741824 bytes, more than any CIFAR batch" in result.stdout


def test_two_folder_loops_end_quickly_in_an_error(tmp_path, memory_limited):
    root = tmp_path / "images"
    for label in ("cat", "dog"):
        (root / label).mkdir(parents=True)
        (root / label / "a.png").write_bytes(_png())
    (root / "cat" / "loop").symlink_to(root, target_is_directory=True)
    (root / "dog" / "loop").symlink_to(root / "cat", target_is_directory=True)
    result = _load_in_limited_child(memory_limited, f"imagefolder:{root}")
    assert result.code == 3, result.stderr
    assert "a folder link that leads back into" in result.stdout
