"""Oriented boxes: the le90 convention, DOTA polygons, and regression deltas.

A box is ``(cx, cy, w, h, theta)`` in image pixels, x to the right and y
down, as in mmrotate's ``le90`` convention (the one its Oriented R-CNN DOTA
models use):

* ``theta`` is in ``[-pi/2, pi/2)``, in radians;
* ``w`` is the side along the direction ``(cos theta, sin theta)`` and is the
  longer side (``w >= h``); ``h`` is along ``(-sin theta, cos theta)``;
* with y pointing down, a positive ``theta`` turns the ``w`` side clockwise on
  screen.

Every ``(w, h, theta)`` names the same rectangle as exactly one le90 triple
(squares excepted: ``theta`` and ``theta + pi/2`` both describe them and
either is le90), so ``normalize_le90`` lets every other part of the engine
compare boxes by their numbers.

A DOTA polygon is four corners ``(x1, y1, ..., x4, y4)`` as labelled by hand:
not always a rectangle. ``polygon_to_box`` takes the minimum-area rectangle
around the four points, as mmrotate's ``poly2obb_np_le90`` does through
OpenCV's ``minAreaRect``; ``box_to_corners`` goes back to the four corners.

``RotatedDeltaCoder`` turns a target box into the regression deltas of a
proposal and back, as Oriented R-CNN's RoI head does (mmrotate's
``DeltaXYWHAOBBoxCoder`` with ``edge_swap`` and ``proj_xy`` on).
"""

from __future__ import annotations

import dataclasses
import math

import torch

HALF_PI = math.pi / 2


def normalize_angle(theta: torch.Tensor) -> torch.Tensor:
    """Wrap angles into ``[-pi/2, pi/2)``: a rectangle turned by pi is itself."""
    return torch.remainder(theta + HALF_PI, math.pi) - HALF_PI


def normalize_le90(boxes: torch.Tensor) -> torch.Tensor:
    """Any ``(..., 5)`` boxes -> the same rectangles in le90: ``w >= h``, theta in ``[-pi/2, pi/2)``."""
    cx, cy, w, h, theta = boxes.unbind(-1)
    swap = w < h
    long_side = torch.where(swap, h, w)
    short_side = torch.where(swap, w, h)
    theta = normalize_angle(torch.where(swap, theta + HALF_PI, theta))
    return torch.stack([cx, cy, long_side, short_side, theta], dim=-1)


def box_to_corners(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``(..., 5)`` -> corners ``(..., 4, 2)``, differentiable.

    The corners run ``c - u - v, c + u - v, c + u + v, c - u + v`` with ``u``
    half the ``w`` side and ``v`` half the ``h`` side: for ``theta = 0`` that
    is top-left, top-right, bottom-right, bottom-left, clockwise on screen
    like DOTA's labels (and mmrotate's ``obb2poly_le90``).
    """
    cx, cy, w, h, theta = boxes.unbind(-1)
    cos, sin = torch.cos(theta), torch.sin(theta)
    u = torch.stack([cos, sin], dim=-1) * (w / 2).unsqueeze(-1)
    v = torch.stack([-sin, cos], dim=-1) * (h / 2).unsqueeze(-1)
    center = torch.stack([cx, cy], dim=-1)
    return torch.stack([center - u - v, center + u - v, center + u + v, center - u + v], dim=-2)


def box_to_polygon(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``(..., 5)`` -> DOTA polygons ``(..., 8)``: ``x1 y1 x2 y2 x3 y3 x4 y4``."""
    return box_to_corners(boxes).flatten(-2)


def polygon_to_box(polygons: torch.Tensor) -> torch.Tensor:
    """DOTA polygons ``(..., 8)`` or corners ``(..., 4, 2)`` -> le90 boxes ``(..., 5)``.

    The box is the minimum-area rectangle around the four points. One side of
    that rectangle lies along an edge of their convex hull, and each hull edge
    joins two of the four points, so trying the six directions between pairs
    of points finds it (rotating calipers, unrolled). Collinear or coincident
    points give a box with zero ``h`` (or zero ``w`` and ``h``).
    """
    points = polygons.reshape(*polygons.shape[:-1], 4, 2) if polygons.shape[-1] == 8 else polygons
    if points.shape[-2:] != (4, 2):
        raise ValueError(f"polygons must be (..., 8) or (..., 4, 2), got {tuple(polygons.shape)}")
    first, second = torch.triu_indices(4, 4, offset=1, device=points.device)
    directions = points[..., second, :] - points[..., first, :]  # (..., 6, 2)
    lengths = directions.norm(dim=-1, keepdim=True)
    # A pair of coincident points gives no direction; the x axis stands in so that a polygon
    # of four equal points still gets its centre right (its area is masked out below).
    x_axis = torch.zeros_like(directions)
    x_axis[..., 0] = 1
    unit_u = torch.where(lengths > 0, directions / lengths.clamp_min(torch.finfo(points.dtype).tiny), x_axis)
    unit_v = torch.stack([-unit_u[..., 1], unit_u[..., 0]], dim=-1)
    # (..., 6 directions, 4 points): each point's coordinate along each candidate axis.
    along_u = torch.einsum("...pk,...dk->...dp", points, unit_u)
    along_v = torch.einsum("...pk,...dk->...dp", points, unit_v)
    extent_u = along_u.amax(-1) - along_u.amin(-1)
    extent_v = along_v.amax(-1) - along_v.amin(-1)
    area = torch.where(lengths.squeeze(-1) > 0, extent_u * extent_v, torch.full_like(extent_u, math.inf))
    best = area.argmin(-1, keepdim=True)

    def pick(values: torch.Tensor) -> torch.Tensor:
        return values.gather(-1, best).squeeze(-1)

    u_axis = unit_u.gather(-2, best.unsqueeze(-1).expand(*best.shape, 2)).squeeze(-2)
    v_axis = unit_v.gather(-2, best.unsqueeze(-1).expand(*best.shape, 2)).squeeze(-2)
    mid_u = (pick(along_u.amax(-1)) + pick(along_u.amin(-1))) / 2
    mid_v = (pick(along_v.amax(-1)) + pick(along_v.amin(-1))) / 2
    center = u_axis * mid_u.unsqueeze(-1) + v_axis * mid_v.unsqueeze(-1)
    theta = torch.atan2(u_axis[..., 1], u_axis[..., 0])
    boxes = torch.stack([center[..., 0], center[..., 1], pick(extent_u), pick(extent_v), theta], dim=-1)
    return normalize_le90(boxes)


def horizontal_bounds(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes ``(..., 5)`` -> enclosing axis-aligned ``(x1, y1, x2, y2)``, ``(..., 4)``."""
    corners = box_to_corners(boxes)
    return torch.cat([corners.amin(-2), corners.amax(-2)], dim=-1)


@dataclasses.dataclass(frozen=True)
class RotatedDeltaCoder:
    """Target boxes <-> deltas ``(dx, dy, dw, dh, dtheta)`` relative to proposals.

    ``dx, dy`` are the centre offset in the proposal's own frame (turned by
    its theta), in units of its ``w`` and ``h``; ``dw, dh`` are log size
    ratios; ``dtheta`` the le90 angle difference. When the target is closer
    to the proposal with its sides swapped (``theta + pi/2``), it is encoded
    swapped, so a near-square target never asks for a turn of nearly pi/2
    (mmrotate's ``edge_swap``). Deltas are standardised by ``means`` and
    ``stds``; the defaults are Oriented R-CNN's RoI head.

    ``decode(proposals, encode(proposals, targets))`` gives ``targets`` back
    for le90 targets with ``w > h`` and ``|dw|, |dh|`` below ``max_log_ratio``.
    """

    means: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)
    stds: tuple[float, ...] = (0.1, 0.1, 0.2, 0.2, 0.1)
    # Decoded sizes are clipped to 1000/16 times the proposal's, as mmdet's coders do, so
    # an untrained head cannot produce inf-sized boxes that break the IoU and NMS after it.
    max_log_ratio: float = abs(math.log(16 / 1000))

    def encode(self, proposals: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Proposals and targets ``(N, 5)`` -> standardised deltas ``(N, 5)``."""
        px, py, pw, ph, ptheta = proposals.unbind(-1)
        gx, gy, gw, gh, gtheta = targets.unbind(-1)
        cos, sin = torch.cos(ptheta), torch.sin(ptheta)
        dx = (cos * (gx - px) + sin * (gy - py)) / pw
        dy = (-sin * (gx - px) + cos * (gy - py)) / ph
        turn = normalize_angle(gtheta - ptheta)
        turn_swapped = normalize_angle(gtheta - ptheta + HALF_PI)
        keep_sides = turn.abs() < turn_swapped.abs()
        dw = torch.log(torch.where(keep_sides, gw, gh) / pw)
        dh = torch.log(torch.where(keep_sides, gh, gw) / ph)
        dtheta = torch.where(keep_sides, turn, turn_swapped)
        deltas = torch.stack([dx, dy, dw, dh, dtheta], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, proposals: torch.Tensor, deltas: torch.Tensor) -> torch.Tensor:
        """Proposals ``(N, 5)`` and standardised deltas ``(N, 5)`` -> le90 boxes ``(N, 5)``."""
        deltas = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        dx, dy, dw, dh, dtheta = deltas.unbind(-1)
        px, py, pw, ph, ptheta = proposals.unbind(-1)
        cos, sin = torch.cos(ptheta), torch.sin(ptheta)
        gw = pw * dw.clamp(-self.max_log_ratio, self.max_log_ratio).exp()
        gh = ph * dh.clamp(-self.max_log_ratio, self.max_log_ratio).exp()
        gx = px + dx * pw * cos - dy * ph * sin
        gy = py + dx * pw * sin + dy * ph * cos
        return normalize_le90(torch.stack([gx, gy, gw, gh, ptheta + dtheta], dim=-1))
