"""le90 boxes: normalisation, polygons to boxes and back, and the regression deltas as exact inverses."""

from __future__ import annotations

import math

import pytest
import torch

from mltk.engines.detect.boxes import (
    RotatedDeltaCoder,
    box_to_corners,
    box_to_polygon,
    horizontal_bounds,
    normalize_le90,
    polygon_to_box,
)
from mltk.engines.detect.iou import polygon_iou


def random_le90_boxes(count: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    centers = torch.rand(count, 2, generator=generator, dtype=torch.float64) * 1000
    short = torch.rand(count, generator=generator, dtype=torch.float64) * 50 + 2
    long = short * (1.05 + torch.rand(count, generator=generator, dtype=torch.float64) * 3)
    theta = (torch.rand(count, generator=generator, dtype=torch.float64) - 0.5) * math.pi
    return torch.cat([centers, long[:, None], short[:, None], theta[:, None]], dim=1)


def test_normalize_le90_swaps_sides_and_wraps_angles():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 4.0, 0.3],             # already le90
        [0.0, 0.0, 4.0, 10.0, 0.3],             # short side along theta: swap, turn by pi/2
        [0.0, 0.0, 10.0, 4.0, 0.3 + math.pi],   # turned by pi: the same rectangle
        [0.0, 0.0, 10.0, 4.0, math.pi / 2],     # +pi/2 is outside [-pi/2, pi/2): becomes -pi/2
    ], dtype=torch.float64)
    expected = torch.tensor([
        [0.0, 0.0, 10.0, 4.0, 0.3],
        [0.0, 0.0, 10.0, 4.0, 0.3 + math.pi / 2 - math.pi],
        [0.0, 0.0, 10.0, 4.0, 0.3],
        [0.0, 0.0, 10.0, 4.0, -math.pi / 2],
    ], dtype=torch.float64)
    torch.testing.assert_close(normalize_le90(boxes), expected)


def test_normalize_le90_keeps_the_rectangle():
    generator = torch.Generator().manual_seed(1)
    boxes = torch.rand(500, 5, generator=generator, dtype=torch.float64) * torch.tensor([100, 100, 40, 40, 20.0])
    boxes[:, 4] -= 10  # angles far outside any range
    normalized = normalize_le90(boxes)
    assert (normalized[:, 2] >= normalized[:, 3]).all()
    assert ((normalized[:, 4] >= -math.pi / 2) & (normalized[:, 4] < math.pi / 2)).all()
    assert torch.allclose(polygon_iou(box_to_polygon(boxes), box_to_polygon(normalized)),
                          torch.ones(500, dtype=torch.float64))


def test_corners_run_from_the_top_left_clockwise_on_screen():
    corners = box_to_corners(torch.tensor([[10.0, 20.0, 8.0, 4.0, 0.0]]))
    torch.testing.assert_close(corners[0], torch.tensor([[6.0, 18.0], [14.0, 18.0], [14.0, 22.0], [6.0, 22.0]]))
    # A quarter turn clockwise on screen (y down) points the w side downwards.
    turned = box_to_corners(torch.tensor([[0.0, 0.0, 8.0, 4.0, math.pi / 2]], dtype=torch.float64))[0]
    torch.testing.assert_close(turned[1] - turned[0], torch.tensor([0.0, 8.0], dtype=torch.float64))


def test_box_to_polygon_to_box_round_trip():
    boxes = random_le90_boxes(1000)
    recovered = polygon_to_box(box_to_polygon(boxes))
    torch.testing.assert_close(recovered, boxes, atol=1e-9, rtol=0)


def test_polygon_to_box_accepts_any_vertex_order_and_direction():
    boxes = random_le90_boxes(200, seed=2)
    corners = box_to_corners(boxes)
    for shift in range(4):
        for reverse in (False, True):
            order = corners.roll(shift, dims=1)
            order = order.flip(1) if reverse else order
            torch.testing.assert_close(polygon_to_box(order), boxes, atol=1e-9, rtol=0)


def test_polygon_to_box_is_the_minimum_area_rectangle_of_a_quadrilateral():
    # A hand-labelled, not quite rectangular quadrilateral (a DOTA plane).
    polygon = torch.tensor([[1464.0, 1133.0, 1440.0, 1230.0, 1321.0, 1200.0, 1348.0, 1098.0]], dtype=torch.float64)
    box = polygon_to_box(polygon)
    points = polygon.view(4, 2)
    # It contains all four points ...
    cx, cy, w, h, theta = box[0].tolist()
    u = torch.tensor([math.cos(theta), math.sin(theta)], dtype=torch.float64)
    v = torch.tensor([-math.sin(theta), math.cos(theta)], dtype=torch.float64)
    offsets = points - torch.tensor([cx, cy], dtype=torch.float64)
    assert ((offsets @ u).abs() <= w / 2 + 1e-9).all() and ((offsets @ v).abs() <= h / 2 + 1e-9).all()
    # ... and no rectangle at another angle around them is smaller (a fine scan of angles).
    angles = torch.linspace(-math.pi / 2, math.pi / 2, 20001, dtype=torch.float64)
    axes = torch.stack([angles.cos(), angles.sin()], 1)
    normals = torch.stack([-angles.sin(), angles.cos()], 1)
    along, across = points @ axes.T, points @ normals.T
    areas = (along.amax(0) - along.amin(0)) * (across.amax(0) - across.amin(0))
    assert w * h <= areas.min() + 1e-9


def test_polygon_to_box_of_degenerate_polygons():
    line = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0, 0.0, 0.0, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(polygon_to_box(line), torch.tensor([[5.0, 0.0, 10.0, 0.0, 0.0]], dtype=torch.float64))
    point = torch.tensor([[3.0, 4.0] * 4], dtype=torch.float64)
    torch.testing.assert_close(polygon_to_box(point), torch.tensor([[3.0, 4.0, 0.0, 0.0, 0.0]], dtype=torch.float64))


def test_box_to_corners_is_differentiable():
    boxes = random_le90_boxes(4).requires_grad_(True)
    assert torch.autograd.gradcheck(box_to_corners, (boxes,))


def test_horizontal_bounds():
    bounds = horizontal_bounds(torch.tensor([[0.0, 0.0, 2.0, 2.0, math.pi / 4]], dtype=torch.float64))
    torch.testing.assert_close(bounds, torch.tensor([[-math.sqrt(2), -math.sqrt(2), math.sqrt(2), math.sqrt(2)]],
                                                    dtype=torch.float64))


def test_delta_coder_encode_then_decode_is_the_identity():
    coder = RotatedDeltaCoder()
    targets = random_le90_boxes(2000, seed=3)
    proposals = random_le90_boxes(2000, seed=4)
    # Proposals near their targets, as in training: sizes within the clip, any angle.
    proposals[:, :2] = targets[:, :2] + (proposals[:, :2] / 1000 - 0.5) * 20
    proposals[:, 2:4] = targets[:, 2:4] * (0.5 + proposals[:, 2:4] / proposals[:, 2:4].amax())
    deltas = coder.encode(proposals, targets)
    torch.testing.assert_close(coder.decode(proposals, deltas), targets, atol=1e-9, rtol=1e-9)


def test_delta_coder_swaps_sides_rather_than_turning_far():
    coder = RotatedDeltaCoder(stds=(1.0, 1.0, 1.0, 1.0, 1.0))
    proposal = torch.tensor([[0.0, 0.0, 10.0, 9.0, 0.0]], dtype=torch.float64)
    # The same near-square turned by almost a quarter: read with sides swapped it is a small turn.
    target = torch.tensor([[0.0, 0.0, 10.0, 9.0, -math.pi / 2 + 0.1]], dtype=torch.float64)
    deltas = coder.encode(proposal, target)
    assert abs(float(deltas[0, 4]) - 0.1) < 1e-12
    torch.testing.assert_close(deltas[0, 2:4], torch.tensor([math.log(9 / 10), math.log(10 / 9)], dtype=torch.float64))
    torch.testing.assert_close(coder.decode(proposal, deltas), target)


def test_delta_coder_standardises_and_clips():
    coder = RotatedDeltaCoder(means=(0.1, 0.0, 0.0, 0.0, 0.0), stds=(0.5, 0.5, 0.5, 0.5, 0.5))
    proposal = torch.tensor([[0.0, 0.0, 10.0, 5.0, 0.0]])
    target = torch.tensor([[3.0, 0.0, 10.0, 5.0, 0.0]])
    torch.testing.assert_close(coder.encode(proposal, target), torch.tensor([[(0.3 - 0.1) / 0.5, 0.0, 0.0, 0.0, 0.0]]))
    huge = coder.decode(proposal, torch.tensor([[0.0, 0.0, 1e3, 1e3, 0.0]]))
    assert torch.isfinite(huge).all()
    assert float(huge[0, 2]) == pytest.approx(10.0 * 1000 / 16, rel=1e-5)
