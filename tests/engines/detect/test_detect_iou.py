"""Rotated and polygon IoU: its defining properties, and shapely's polygon IoU as the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from mltk.engines.detect.boxes import box_to_corners, box_to_polygon
from mltk.engines.detect.iou import (
    polygon_intersection_area,
    polygon_iou,
    polygon_iou_matrix,
    rotated_iou,
    rotated_iou_matrix,
)

shapely = pytest.importorskip("shapely", reason="shapely is the reference polygon IoU (pip install -e '.[test]')")
from shapely.geometry import Polygon  # noqa: E402


def shapely_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Reference IoU of matching polygons ``(N, 4, 2)``; 0 where the union is empty."""
    values = []
    for first, second in zip(a, b, strict=True):
        p, q = Polygon(first), Polygon(second)
        inter = p.intersection(q).area
        union = p.area + q.area - inter
        values.append(inter / union if union > 0 else 0.0)
    return np.array(values)


def random_boxes(count: int, generator: torch.Generator) -> torch.Tensor:
    centers = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 100
    sizes = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 60
    angles = (torch.rand(count, 1, generator=generator, dtype=torch.float64) - 0.5) * 2 * math.pi
    return torch.cat([centers, sizes, angles], dim=1)


def hard_pairs(count: int = 2000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random pairs, a fifth each of them generic, nested, touching, degenerate and edge-sharing."""
    generator = torch.Generator().manual_seed(seed)
    a, b = random_boxes(count, generator), random_boxes(count, generator)
    part = count // 5
    nested = slice(0, part)
    b[nested] = a[nested]
    b[nested, 2:4] *= torch.rand(part, 2, generator=generator, dtype=torch.float64)  # inside a, same angle
    touching = slice(part, 2 * part)  # b shifted by a's full width along a's w axis: corners on a's edge
    b[touching] = a[touching]
    b[touching, 0] += torch.cos(a[touching, 4]) * a[touching, 2]
    b[touching, 1] += torch.sin(a[touching, 4]) * a[touching, 2]
    degenerate = slice(2 * part, 3 * part)  # zero height or zero width
    a[degenerate, 3] = 0.0
    b[degenerate.start:degenerate.start + part // 2, 2] = 0.0
    axis_aligned = slice(3 * part, 4 * part)  # shared edges and corners of upright boxes
    a[axis_aligned, 4] = 0.0
    b[axis_aligned, 4] = 0.0
    b[axis_aligned, 0] = a[axis_aligned, 0] + (a[axis_aligned, 2] + b[axis_aligned, 2]) / 2
    return a, b


def test_identical_boxes_have_iou_one():
    a, _ = hard_pairs()
    nonzero = (a[:, 2] > 0) & (a[:, 3] > 0)
    torch.testing.assert_close(rotated_iou(a[nonzero], a[nonzero]),
                               torch.ones(int(nonzero.sum()), dtype=torch.float64))


def test_disjoint_boxes_have_iou_zero():
    generator = torch.Generator().manual_seed(1)
    a = random_boxes(300, generator)
    b = a.clone()
    b[:, 0] += 200  # far beyond any box size
    assert (rotated_iou(a, b) == 0).all()
    assert (rotated_iou_matrix(a[:50], b[:70]) == 0).all()


def test_iou_is_symmetric():
    a, b = hard_pairs(seed=2)
    torch.testing.assert_close(rotated_iou(a, b), rotated_iou(b, a), atol=1e-12, rtol=0)


def test_rotated_iou_matches_shapely_on_hard_pairs():
    a, b = hard_pairs(count=5000, seed=3)
    ours = rotated_iou(a, b).numpy()
    reference = shapely_iou(box_to_corners(a).numpy(), box_to_corners(b).numpy())
    assert np.abs(ours - reference).max() < 1e-5
    # the nested fifth is exactly the area ratio, the touching fifth exactly zero
    part = 1000
    nested_ratio = (b[:part, 2] * b[:part, 3] / (a[:part, 2] * a[:part, 3])).numpy()
    assert np.abs(ours[:part] - nested_ratio).max() < 1e-9
    assert np.abs(ours[part:2 * part]).max() < 1e-9


def test_rotated_iou_in_float32_pixel_coordinates():
    generator = torch.Generator().manual_seed(4)
    a = random_boxes(500, generator)
    b = a + torch.randn(500, 5, generator=generator, dtype=torch.float64) * torch.tensor([3, 3, 2, 2, 0.1])
    a[:, :2] += 4000  # far from the origin, where float32 has few digits to spare
    b[:, :2] += 4000
    a32, b32 = a.float(), b.float()
    ours = rotated_iou(a32, b32)
    assert ours.dtype == torch.float32
    reference = shapely_iou(box_to_corners(a32).double().numpy(), box_to_corners(b32).double().numpy())
    assert np.abs(ours.double().numpy() - reference).max() < 1e-5


def test_matrix_equals_elementwise_and_chunking_changes_nothing():
    generator = torch.Generator().manual_seed(5)
    a, b = random_boxes(40, generator), random_boxes(30, generator)
    matrix = rotated_iou_matrix(a, b)
    pairs = rotated_iou(a.repeat_interleave(30, 0), b.repeat(40, 1)).view(40, 30)
    torch.testing.assert_close(matrix, pairs, atol=1e-12, rtol=0)
    torch.testing.assert_close(rotated_iou_matrix(a, b, chunk_pairs=7), matrix, atol=1e-12, rtol=0)
    assert rotated_iou_matrix(a[:0], b).shape == (0, 30)


def star_quadrilaterals(count: int, rng: np.random.Generator) -> np.ndarray:
    """Random simple quadrilaterals, many of them concave, in both vertex orders."""
    centers = rng.uniform(0, 50, (count, 1, 2))
    gaps = rng.uniform(0.3, 1.0, (count, 4))
    angles = np.cumsum(gaps / gaps.sum(1, keepdims=True) * 2 * np.pi, axis=1) + rng.uniform(0, 6.3, (count, 1))
    radii = rng.uniform(2, 30, (count, 4))
    points = centers + np.stack([radii * np.cos(angles), radii * np.sin(angles)], -1)
    flip = rng.random(count) < 0.5
    points[flip] = points[flip][:, ::-1]
    return points


def test_polygon_iou_of_concave_quadrilaterals_matches_shapely():
    rng = np.random.default_rng(6)
    a, b = star_quadrilaterals(3000, rng), star_quadrilaterals(3000, rng)
    concave = sum(Polygon(p).convex_hull.area - Polygon(p).area > 1e-6 for p in a)
    assert concave > 200  # the case this test is for
    ours = polygon_iou(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert np.abs(ours - shapely_iou(a, b)).max() < 1e-5
    areas = polygon_intersection_area(torch.from_numpy(a).flatten(1), torch.from_numpy(b).flatten(1)).numpy()
    reference_areas = np.array([Polygon(p).intersection(Polygon(q)).area for p, q in zip(a, b, strict=True)])
    assert np.abs(areas - reference_areas).max() < 1e-5 * max(1.0, reference_areas.max())


def test_polygon_iou_matrix_of_rectangles_equals_rotated_iou_matrix():
    generator = torch.Generator().manual_seed(7)
    a, b = random_boxes(25, generator), random_boxes(35, generator)
    torch.testing.assert_close(polygon_iou_matrix(box_to_polygon(a), box_to_polygon(b)), rotated_iou_matrix(a, b),
                               atol=1e-12, rtol=0)


def test_zero_area_boxes_have_iou_zero_even_with_themselves():
    flat = torch.tensor([[5.0, 5.0, 10.0, 0.0, 0.3], [5.0, 5.0, 0.0, 0.0, 0.0]])
    assert (rotated_iou(flat, flat) == 0).all()
    assert (rotated_iou(flat, torch.tensor([[5.0, 5.0, 20.0, 20.0, 0.0]] * 2)) == 0).all()
