"""Set data: OFF meshes (tiny files in the format, and the shared real ModelNet meshes when present), uniform
surface sampling, the npz / voxel layouts, the mixture generator and its likelihood, element dropout."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from mltk.engines.sets.data import (
    MeshFormatError,
    load_point_clouds,
    mixture_nll,
    parse_off,
    read_off,
    sample_mixtures,
    sample_surface,
)
from mltk.engines.sets.inputs import drop_elements, random_partition

SHARED = Path("/work/shared/data/modelnet")
SQUARE = "OFF\n# a unit square as one quad\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n"


def test_off_quads_are_fanned_and_glued_headers_are_read():
    vertices, triangles = parse_off(SQUARE)
    assert vertices.shape == (4, 3) and triangles.tolist() == [[0, 1, 2], [0, 2, 3]]
    glued = parse_off("OFF4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")  # ModelNet's known defect
    assert np.array_equal(glued[1], triangles)


@pytest.mark.parametrize("text, line", [("OFF\n4 1 0\n0 0 0\n1 0 x\n1 1 0\n0 1 0\n4 0 1 2 3\n", 4),
                                        ("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 9\n", 7),
                                        ("OFF\n4 1 0\n0 0 0\n1 0 0\n", 4),
                                        ("PLY\n", 1)])
def test_malformed_off_names_the_line(text, line):
    with pytest.raises(MeshFormatError, match=f"line {line}:"):
        parse_off(text, "bad.off")


def test_surface_samples_are_uniform_on_the_surface():
    # two triangles of area 1 and 3 (a 1x2 and a 3x2 right triangle... laid side by side in z = 0)
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 0, 0], [13, 0, 0], [10, 2, 0]], dtype=float)
    points = sample_surface(vertices, np.array([[0, 1, 2], [3, 4, 5]]), 20000, np.random.default_rng(0))
    share_big = (points[:, 0] >= 10).mean()
    assert abs(share_big - 0.75) < 0.02 and np.all(points[:, 2] == 0)
    small = points[points[:, 0] < 10]
    assert np.all(small[:, 0] / 1 + small[:, 1] / 2 <= 1 + 1e-9)  # inside the triangle


def test_modelnet_folder_and_zip_layouts(tmp_path):
    for split in ("train", "test"):
        for name in ("cube", "plane"):
            folder = tmp_path / "ModelNet2" / name / split
            folder.mkdir(parents=True)
            (folder / f"{name}_0001.off").write_text(SQUARE)
    (tmp_path / "ModelNet2" / "plane" / "train" / "plane_0002.off.gz").write_bytes(gzip.compress(SQUARE.encode()))
    data = load_point_clouds(f"modelnet:{tmp_path / 'ModelNet2'}", points=32, test_fraction=0.5, seed=0)
    assert data.class_names == ["cube", "plane"] and data.train_points.shape == (3, 32, 3)
    assert data.test_labels.tolist() == [0, 1]
    assert torch.allclose(data.train_points.norm(dim=-1).amax(1), torch.ones(3))
    with zipfile.ZipFile(tmp_path / "m.zip", "w") as archive:
        for path in (tmp_path / "ModelNet2").rglob("*.off*"):
            archive.write(path, path.relative_to(tmp_path))
    zipped = load_point_clouds(f"modelnet:{tmp_path / 'm.zip'}", points=32, test_fraction=0.5, seed=0)
    assert zipped.train_labels.tolist() == data.train_labels.tolist()


def test_npz_split_keeps_every_class_in_training(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "c.npz", points=rng.normal(size=(9, 50, 3)).astype(np.float32),
             labels=np.array([0, 0, 0, 0, 1, 1, 1, 1, 2]), shape_names=np.array(["a", "b", "c"]))
    data = load_point_clouds(f"npz:{tmp_path / 'c.npz'}", points=20, test_fraction=0.25, seed=0)
    assert data.train_points.shape[1] == 20 and sorted(set(data.train_labels.tolist())) == [0, 1, 2]
    assert data.test_labels.tolist() == [0, 1] and data.class_names == ["a", "b", "c"]


@pytest.mark.skipif(not SHARED.is_dir(), reason="the shared ModelNet data is not on this machine")
def test_shared_modelnet_meshes_parse_and_sample():
    archive = zipfile.ZipFile(SHARED / "flux3d_test_assets" / "ModelNet10.zip")
    name = "ModelNet10/sofa/test/sofa_0681.off"
    vertices, triangles = read_off(name, archive.read(name))
    assert len(vertices) > 100 and triangles.max() < len(vertices)
    vertices, triangles = read_off(SHARED / "modelnet40_airplane_off_rsong" / "airplane_0001.off.gz")
    assert vertices.shape == (27817, 3) and len(triangles) >= 54303
    cloud = sample_surface(vertices, triangles, 1024, np.random.default_rng(0))
    assert np.all(cloud.min(0) >= vertices.min(0) - 1e-9) and np.all(cloud.max(0) <= vertices.max(0) + 1e-9)
    subset = load_point_clouds(f"npz:{SHARED / 'modelnet40_nrs3d_subset' / 'modelnet40_nrs3d_subset_1024pts.npz'}",
                               points=1024, test_fraction=0.25, seed=0)
    assert len(subset.class_names) == 40 and len(subset.train_labels) + len(subset.test_labels) == 156


def test_mixture_nll_is_lowest_near_the_true_mixture():
    x, _ = sample_mixtures(1, 4000, torch.Generator().manual_seed(0), components=1, dims=2)
    mean, std = x[0].mean(0), x[0].std(0)
    raw = torch.log(torch.expm1(std))  # softplus^-1
    truth = torch.cat([torch.zeros(1), mean, raw])[None, None]
    shifted = torch.cat([torch.zeros(1), mean + 1, raw])[None, None]
    exact = 0.5 * (((x[0] - mean) / std) ** 2).sum(1).mean() + std.log().sum() + np.log(2 * np.pi)
    assert abs(float(mixture_nll(truth, x)) - float(exact)) < 1e-4
    assert float(mixture_nll(shifted, x)) > float(mixture_nll(truth, x)) + 0.5


def test_element_dropout_keeps_at_least_one_and_partitions_cover():
    mask = torch.ones(50, 3, dtype=torch.bool)
    kept = drop_elements(mask, 0.99, torch.Generator().manual_seed(0))
    assert kept.sum(1).min() >= 1 and kept.float().mean() < 0.5
    sizes = random_partition(17, 5, torch.Generator().manual_seed(1))
    assert sum(sizes) == 17 and len(sizes) == 5 and min(sizes) >= 1
