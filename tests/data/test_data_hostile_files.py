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
