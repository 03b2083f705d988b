"""imagefolder:PATH from class folders, as a folder or a zip, with or without split folders."""

from __future__ import annotations

import numpy as np
import pytest

from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.data import load_dataset


def png_tree(formats, rng, layout: dict[str, int], shape=(6, 5, 3)) -> tuple[dict, dict]:
    """layout: "<folder>/<class>" -> image count. Returns (files, pixels by file name)."""
    files, pixels = {}, {}
    for folder, count in layout.items():
        for number in range(count):
            name = f"{folder}/img{number}.png"
            pixels[name] = rng.integers(0, 256, shape, dtype=np.uint8)
            files[name] = formats.encode_image(pixels[name], "PNG")
    return files, pixels


def expected_order(pixels: dict, prefix: str) -> list[str]:
    return sorted(name for name in pixels if name.startswith(prefix))


@pytest.mark.parametrize("packaging", ["folder", "zip"])
def test_class_folders_round_trip_exactly(tmp_path, formats, packaging):
    files, pixels = png_tree(formats, np.random.default_rng(5), {"cat": 2, "ant": 3, "dog": 1})
    root = tmp_path / ("images.zip" if packaging == "zip" else "images")
    formats.write_tree(root, files)
    dataset = load_dataset(f"imagefolder:{root}")
    assert dataset.class_names == ["ant", "cat", "dog"]  # sorted by name
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1, 2]
    assert dataset.images.shape == (6, 3, 6, 5)  # [N, C, H, W] of 5 wide, 6 high images
    for image, name in zip(dataset.images.numpy(), expected_order(pixels, ""), strict=True):
        assert np.array_equal(image, pixels[name].transpose(2, 0, 1))
    assert dataset.name == f"imagefolder:{root}" and dataset.split == "train"


def test_zip_with_one_wrapping_folder_and_train_test_splits(tmp_path, formats):
    layout = {"data/train/a": 2, "data/train/b": 2, "data/test/a": 1, "data/test/b": 1}
    files, pixels = png_tree(formats, np.random.default_rng(6), layout)
    formats.write_tree(tmp_path / "x.zip", files)
    train = load_dataset(f"imagefolder:{tmp_path / 'x.zip'}", "train")
    test = load_dataset(f"imagefolder:{tmp_path / 'x.zip'}", "test")
    assert (len(train), len(test)) == (4, 2)
    assert test.class_names == train.class_names == ["a", "b"]
    assert test.labels.tolist() == [0, 1]
    for image, name in zip(test.images.numpy(), expected_order(pixels, "data/test/"), strict=True):
        assert np.array_equal(image, pixels[name].transpose(2, 0, 1))


def test_val_folder_serves_as_test_and_labels_agree_across_splits(tmp_path, formats):
    layout = {"train/b": 1, "train/c": 1, "val/a": 1, "val/c": 2}
    files, _ = png_tree(formats, np.random.default_rng(7), layout)
    root = formats.write_tree(tmp_path / "folder", files)
    test = load_dataset(f"imagefolder:{root}", "test")
    assert test.split == "val"
    assert test.class_names == ["a", "b", "c"]  # the union of both splits' class folders
    assert test.labels.tolist() == [0, 2, 2]
    assert load_dataset(f"imagefolder:{root}", "train").labels.tolist() == [1, 2]


def test_single_split_folder_has_no_test_split_and_says_how_to_hold_one_out(tmp_path, formats):
    files, _ = png_tree(formats, np.random.default_rng(8), {"train/a": 1, "train/b": 1})
    root = formats.write_tree(tmp_path / "only_train", files)
    assert load_dataset(f"imagefolder:{root}").class_names == ["a", "b"]
    with pytest.raises(UsageError, match="no 'test' split") as caught:
        load_dataset(f"imagefolder:{root}", "test")
    assert "data.test_holdout" in caught.value.hint and caught.value.exit_code == 2


def test_grayscale_stays_one_channel_only_when_every_image_is_gray(tmp_path, formats):
    rng = np.random.default_rng(9)
    gray = {f"g/{i}.png": rng.integers(0, 256, (4, 4), dtype=np.uint8) for i in range(2)}
    files = {name: formats.encode_image(p, "PNG") for name, p in gray.items()}
    formats.write_tree(tmp_path / "gray", files)
    dataset = load_dataset(f"imagefolder:{tmp_path / 'gray'}")
    assert dataset.image_shape == (1, 4, 4)
    assert np.array_equal(dataset.images[0, 0].numpy(), gray["g/0.png"])

    color = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    files["h/0.png"] = formats.encode_image(color, "PNG")
    formats.write_tree(tmp_path / "mixed", files)
    mixed = load_dataset(f"imagefolder:{tmp_path / 'mixed'}")
    assert mixed.image_shape == (3, 4, 4)
    assert all(np.array_equal(mixed.images[0, c].numpy(), gray["g/0.png"]) for c in range(3))
    assert np.array_equal(mixed.images[2].numpy(), color.transpose(2, 0, 1))


def test_an_image_of_another_size_is_named_with_both_sizes(tmp_path, formats):
    rng = np.random.default_rng(10)
    files = {
        "a/0.png": formats.encode_image(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), "PNG"),
        "b/0.jpg": formats.encode_image(rng.integers(0, 256, (8, 9, 3), dtype=np.uint8), "JPEG"),
    }
    formats.write_tree(tmp_path / "sizes.zip", files)
    with pytest.raises(ArtifactError, match=r"sizes.zip:b/0.jpg is 9x8 but .*a/0.png is 8x8"):
        load_dataset(f"imagefolder:{tmp_path / 'sizes.zip'}")


def test_other_files_are_ignored_and_a_corrupt_image_is_named(tmp_path, formats):
    image = formats.encode_image(np.zeros((2, 2, 3), np.uint8), "BMP")
    files = {"a/0.bmp": image, "a/notes.txt": b"x", "__MACOSX/a/._0.bmp": b"junk", "b/0.bmp": image}
    formats.write_tree(tmp_path / "ok.zip", files)
    assert len(load_dataset(f"imagefolder:{tmp_path / 'ok.zip'}")) == 2
    formats.write_tree(tmp_path / "bad", {**files, "b/1.png": b"not a png"})
    with pytest.raises(ArtifactError, match=r"b/1.png: cannot decode"):
        load_dataset(f"imagefolder:{tmp_path / 'bad'}")


def test_path_errors(tmp_path, formats, monkeypatch):
    with pytest.raises(DataMissingError, match="does not exist"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")
    with pytest.raises(UsageError, match="needs a path"):
        load_dataset("imagefolder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="no images"):
        load_dataset(f"imagefolder:{tmp_path / 'empty'}")
    # A relative PATH is also looked up below the data dir.
    files, _ = png_tree(formats, np.random.default_rng(11), {"a": 1, "b": 1})
    formats.write_tree(tmp_path / "data" / "pets", files)
    monkeypatch.chdir(tmp_path / "empty")
    assert len(load_dataset("imagefolder:pets", data_dir=tmp_path / "data")) == 2


def test_a_folder_of_class_folders_serves_any_split_but_training_refuses_to_test_on_it(tmp_path, formats):
    from mltk.data import DataSpec, load_splits

    files, _ = png_tree(formats, np.random.default_rng(2), {"cat": 3, "dog": 3})
    formats.write_tree(tmp_path / "mine", files)
    spec = f"imagefolder:{tmp_path / 'mine'}"
    assert len(load_dataset(spec, "test")) == 6 and len(load_dataset(spec, "val")) == 6
    with pytest.raises(UsageError, match="no test split of its own.*data.test_holdout"):
        load_splits(DataSpec(name=spec))
    held = load_splits(DataSpec(name=spec, test_holdout=2))
    assert len(held.train) == 4 and len(held.test) == 2
