"""Exact IoU of rotated boxes and of DOTA quadrilaterals, batched, in torch.

The intersection of two convex polygons is a convex polygon whose vertices
are the corners of each that lie inside the other plus the crossings of
their edges. For two quadrilaterals that is at most 4 + 4 + 16 candidate
points per pair: every pair is computed at once with a validity mask, the
valid points are ordered by angle around their mean (which lies inside the
intersection, so the order is the polygon's), and the shoelace formula gives
the area. No Python loop runs over pairs; big batches are cut into chunks of
``chunk_pairs`` pairs so memory stays bounded.

Hand-labelled DOTA polygons are not always convex. A simple quadrilateral
with a reflex corner splits, along the diagonal from that corner, into two
convex triangles, and the intersection areas of the pieces add up; this is
what DOTA_devkit's ``polyiou`` computes too (by a signed triangle fan), so
the metric's IoU matches it on every simple quadrilateral. Self-intersecting
("bow-tie") quadrilaterals have no area in the usual sense and are not
supported.

Everything runs in float64 whatever the input dtype, on coordinates moved
to the pair's first polygon and scaled to unit size, so pixel coordinates
in the thousands still agree with an exact reference to about 1e-12. The
result has the input's floating dtype. Zero-area boxes have IoU 0 with
everything (and two of them too, where 0/0 would be undefined).
"""

from __future__ import annotations

import torch

from mltk.engines.detect.boxes import box_to_corners

# Inside-tests and edge crossings accept points this far (in unit-scaled coordinates) past an
# edge, so that touching and nested polygons keep their shared points despite rounding.
TOLERANCE = 1e-9
# Edges whose directions differ by less than this sine count as parallel. Missing the crossing of
# two such edges moves the area by at most that sine times the squared size: nothing.
PARALLEL_SINE = 1e-10
# Pairs computed at once: about 10 kB of temporaries each, and measured fastest near this size
# (larger chunks fall out of the CPU caches).
DEFAULT_CHUNK_PAIRS = 1 << 13
# Candidate pairs of a matrix are found in blocks of rows holding about this many pairs (bytes).
MASK_BLOCK_PAIRS = 1 << 22
# A pair is left out of a thresholded search only when its IoU bound is this far below the
# threshold: the bound is exact arithmetic on the same corners, rounding moves it by ~1e-15.
BOUND_SLACK = 1e-9


def signed_area(polygons: torch.Tensor) -> torch.Tensor:
    """Shoelace area of ``(..., K, 2)`` polygons: positive when the vertices run with increasing angle."""
    x, y = polygons[..., 0], polygons[..., 1]
    return 0.5 * (x * y.roll(-1, -1) - x.roll(-1, -1) * y).sum(-1)


def polygon_area(polygons: torch.Tensor) -> torch.Tensor:
    """Area of ``(..., K, 2)`` simple polygons, whichever way their vertices run."""
    return signed_area(polygons).abs()


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _positively_oriented(polygons: torch.Tensor) -> torch.Tensor:
    """Reverse the vertex order of polygons with negative signed area (DOTA labels run clockwise)."""
    negative = (signed_area(polygons) < 0)[..., None, None]
    return torch.where(negative, polygons.flip(-2), polygons)


def _convex_intersection_area(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intersection area of positively oriented convex polygons ``(P, K, 2)`` and ``(P, L, 2)`` -> ``(P,)``.

    Repeated vertices (zero-length edges) are allowed: a triangle may come as
    four points. The x and y coordinates are kept apart: elementwise kernels
    over a trailing dimension of 2 under broadcasting run several times slower.
    """
    ax, ay = a[..., 0], a[..., 1]  # (P, K)
    bx, by = b[..., 0], b[..., 1]  # (P, L)
    edge_ax, edge_ay = ax.roll(-1, 1) - ax, ay.roll(-1, 1) - ay
    edge_bx, edge_by = bx.roll(-1, 1) - bx, by.roll(-1, 1) - by

    def inside(px, py, polygon_x, polygon_y, edge_x, edge_y) -> torch.Tensor:
        # points (P, Q) against every edge (P, E) -> (P, Q): on the left of (or on) all edges, by
        # signed distance. A polygon without area has no inside: the edges of a point all have zero
        # length and would let everything through.
        cross = (edge_x[:, None, :] * (py[:, :, None] - polygon_y[:, None, :])
                 - edge_y[:, None, :] * (px[:, :, None] - polygon_x[:, None, :]))
        lengths = torch.hypot(edge_x, edge_y)[:, None, :]
        on_left = (cross >= -TOLERANCE * lengths).all(-1)
        area = 0.5 * (polygon_x * polygon_y.roll(-1, 1) - polygon_x.roll(-1, 1) * polygon_y).sum(1)
        return on_left & (area > TOLERANCE * TOLERANCE)[:, None]

    corners_a_in_b = inside(ax, ay, bx, by, edge_bx, edge_by)
    corners_b_in_a = inside(bx, by, ax, ay, edge_ax, edge_ay)

    # Every edge of a against every edge of b, (P, K, L): a_i + t * r_i meets b_j + s * q_j.
    rx, ry = edge_ax[:, :, None], edge_ay[:, :, None]
    qx, qy = edge_bx[:, None, :], edge_by[:, None, :]
    ox, oy = bx[:, None, :] - ax[:, :, None], by[:, None, :] - ay[:, :, None]
    denominator = rx * qy - ry * qx
    # Parallel (and zero-length) edges have no single crossing; the test is relative, since two
    # parallel edges still give a rounding-noise denominator and with it a spurious point.
    # Where they overlap, their end points are found by the inside tests instead.
    parallel = denominator.abs() <= PARALLEL_SINE * torch.hypot(rx, ry) * torch.hypot(qx, qy)
    safe = torch.where(parallel, torch.ones_like(denominator), denominator)
    t = (ox * qy - oy * qx) / safe
    s = (ox * ry - oy * rx) / safe
    crossing = ~parallel & (t >= -TOLERANCE) & (t <= 1 + TOLERANCE) & (s >= -TOLERANCE) & (s <= 1 + TOLERANCE)

    x = torch.cat([ax, bx, (ax[:, :, None] + t * rx).flatten(1)], dim=1)  # (P, Q)
    y = torch.cat([ay, by, (ay[:, :, None] + t * ry).flatten(1)], dim=1)
    valid = torch.cat([corners_a_in_b, corners_b_in_a, crossing.flatten(1)], dim=1)
    count = valid.sum(1)
    weight = valid.to(x.dtype)
    center_x = (x * weight).sum(1, keepdim=True) / count.clamp_min(1)[:, None]
    center_y = (y * weight).sum(1, keepdim=True) / count.clamp_min(1)[:, None]
    x, y = x - center_x, y - center_y
    # Invalid points sort last and then stand in for the first valid one: the repeated point
    # adds nothing to the shoelace sum, and the polygon closes on itself.
    angle = torch.where(valid, torch.atan2(y, x), torch.full_like(x, 4.0))
    order = angle.argsort(1)
    x, y, valid = x.gather(1, order), y.gather(1, order), valid.gather(1, order)
    x = torch.where(valid, x, x[:, :1])
    y = torch.where(valid, y, y[:, :1])
    area = 0.5 * (x * y.roll(-1, 1) - x.roll(-1, 1) * y).sum(1)
    return torch.where(count >= 3, area, torch.zeros_like(area)).clamp_min(0)


def _convex_pieces(quads: torch.Tensor) -> torch.Tensor:
    """Positively oriented quadrilaterals ``(P, 4, 2)`` -> two convex triangles each, ``(P, 2, 4, 2)``.

    The cut runs along the diagonal from the most reflex corner (any corner
    of a convex quadrilateral); each triangle repeats its last vertex so it
    has four points like the quadrilaterals.
    """
    turns = _cross(quads - quads.roll(1, -2), quads.roll(-1, -2) - quads)  # (P, 4), one per corner
    first = turns.argmin(1)
    rolled_index = (first[:, None] + torch.arange(4, device=quads.device)) % 4
    p = quads.gather(1, rolled_index[..., None].expand(-1, -1, 2))
    triangle_1 = torch.stack([p[:, 0], p[:, 1], p[:, 2], p[:, 2]], dim=1)
    triangle_2 = torch.stack([p[:, 0], p[:, 2], p[:, 3], p[:, 3]], dim=1)
    return torch.stack([triangle_1, triangle_2], dim=1)


def _is_convex(quads: torch.Tensor) -> torch.Tensor:
    turns = _cross(quads - quads.roll(1, -2), quads.roll(-1, -2) - quads)
    return (turns >= -TOLERANCE).all(-1)


def _intersection_area_unit(a: torch.Tensor, b: torch.Tensor, *, convex: bool) -> torch.Tensor:
    """Intersection area of positively oriented quadrilaterals ``(P, 4, 2)``, in unit-scaled coordinates."""
    area = _convex_intersection_area(a, b)
    if convex:
        return area
    concave = ~(_is_convex(a) & _is_convex(b))
    if concave.any():
        pieces_a = _convex_pieces(a[concave])  # (C, 2, 4, 2)
        pieces_b = _convex_pieces(b[concave])
        piece_pairs_a = pieces_a[:, :, None].expand(-1, 2, 2, 4, 2).reshape(-1, 4, 2)
        piece_pairs_b = pieces_b[:, None, :].expand(-1, 2, 2, 4, 2).reshape(-1, 4, 2)
        area = area.clone()
        area[concave] = _convex_intersection_area(piece_pairs_a, piece_pairs_b).view(-1, 4).sum(1)
    return area


def _unit_scaled(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matching quadrilaterals -> float64, moved to ``a``'s mean, scaled to unit size, positively oriented.

    Returns the two sets and each pair's scale ``(P,)``: areas scale back by its square.
    """
    a, b = a.to(torch.float64), b.to(torch.float64)
    corners = torch.cat([a, b], dim=1) - a.mean(1, keepdim=True)
    scale = corners.abs().flatten(1).amax(1).clamp_min(torch.finfo(torch.float64).tiny)
    corners = corners / scale[:, None, None]
    return _positively_oriented(corners[:, :4]), _positively_oriented(corners[:, 4:]), scale


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor, *, convex: bool, chunk_pairs: int) -> torch.Tensor:
    """IoU of matching quadrilaterals ``(P, 4, 2)`` -> ``(P,)`` float64, chunked."""
    results = [a.new_zeros(0, dtype=torch.float64)]
    for start in range(0, a.shape[0], chunk_pairs):
        unit_a, unit_b, _ = _unit_scaled(a[start:start + chunk_pairs], b[start:start + chunk_pairs])
        intersection = _intersection_area_unit(unit_a, unit_b, convex=convex)
        union = polygon_area(unit_a) + polygon_area(unit_b) - intersection
        # Zero-area polygons: the union vanishes with the intersection, and their IoU is 0. A pair
        # whose union is below TOLERANCE of its squared size counts as that: its area is rounding noise.
        iou = torch.where(union > TOLERANCE, intersection / union.clamp_min(TOLERANCE), torch.zeros_like(union))
        results.append(iou.clamp(0, 1))
    return torch.cat(results)


def _as_quads(polygons: torch.Tensor) -> torch.Tensor:
    if polygons.shape[-1] == 8:
        polygons = polygons.reshape(*polygons.shape[:-1], 4, 2)
    if polygons.shape[-2:] != (4, 2):
        raise ValueError(f"polygons must be (N, 8) or (N, 4, 2), got {tuple(polygons.shape)}")
    return polygons


def _result_dtype(*tensors: torch.Tensor) -> torch.dtype:
    dtype = torch.promote_types(tensors[0].dtype, tensors[1].dtype)
    return dtype if dtype.is_floating_point else torch.get_default_dtype()


def _elementwise(a: torch.Tensor, b: torch.Tensor, *, convex: bool, chunk_pairs: int) -> torch.Tensor:
    if a.shape != b.shape:
        raise ValueError(f"elementwise IoU needs two sets of one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    return _pairwise_iou(a, b, convex=convex, chunk_pairs=chunk_pairs).to(_result_dtype(a, b))


def _iou_upper_bound(rows: torch.Tensor, cols: torch.Tensor, low_a, high_a, area_a, low_b, high_b,
                     area_b) -> torch.Tensor:
    """An upper bound of the IoU of the pairs ``(rows, cols)``, from their areas and bounding rectangles.

    The intersection ``I`` is at most ``m = min(area of the rectangles' overlap, A, B)`` and the IoU
    ``I / (A + B - I)`` grows with ``I``, so it is at most ``m / (A + B - m)``.
    """
    overlap = (torch.minimum(high_a[rows], high_b[cols]) - torch.maximum(low_a[rows], low_b[cols])).clamp_min(0)
    most = torch.minimum(overlap.prod(1), torch.minimum(area_a[rows], area_b[cols]))
    union = area_a[rows] + area_b[cols] - most
    return torch.where(union > 0, most / union.clamp_min(torch.finfo(union.dtype).tiny), torch.zeros_like(union))


def _candidate_blocks(a: torch.Tensor, b: torch.Tensor, *, convex: bool, chunk_pairs: int, later_only: bool = False,
                      above: float | None = None):
    """Yield ``(rows, cols, iou)`` for the pairs of ``(N, 4, 2)`` x ``(M, 4, 2)`` whose bounding rectangles meet.

    Other pairs cannot overlap, and in aerial scenes they are nearly all
    pairs. ``later_only`` keeps ``col > row`` (one set against itself).
    With ``above``, pairs whose IoU cannot exceed it (``_iou_upper_bound``)
    are left out too: a caller keeping only IoUs above a threshold (NMS)
    gets the same pairs and the same values, computed for fewer pairs.
    """
    if a.shape[0] == 0 or b.shape[0] == 0:
        return
    low_a, high_a = a.amin(1), a.amax(1)
    low_b, high_b = b.amin(1), b.amax(1)
    if above is not None:  # the bound in float64, on the corners the exact IoU is computed from
        low_a64, high_a64, low_b64, high_b64 = (v.to(torch.float64) for v in (low_a, high_a, low_b, high_b))
        area_a, area_b = polygon_area(a.to(torch.float64)), polygon_area(b.to(torch.float64))
    # Rows in blocks, so the mask of candidate pairs stays bounded like the pairs themselves.
    rows_per_block = max(1, MASK_BLOCK_PAIRS // b.shape[0])
    for start in range(0, a.shape[0], rows_per_block):
        stop = min(start + rows_per_block, a.shape[0])
        meet = ((low_a[start:stop, None] <= high_b[None]) & (low_b[None] <= high_a[start:stop, None])).all(-1)
        if later_only:
            meet &= torch.arange(start, stop, device=a.device)[:, None] < torch.arange(b.shape[0], device=a.device)
        rows, cols = meet.nonzero(as_tuple=True)
        rows = rows + start
        if above is not None:
            possible = _iou_upper_bound(rows, cols, low_a64, high_a64, area_a, low_b64, high_b64,
                                        area_b) > above - BOUND_SLACK
            rows, cols = rows[possible], cols[possible]
        yield rows, cols, _pairwise_iou(a[rows], b[cols], convex=convex, chunk_pairs=chunk_pairs)


def _matrix(a: torch.Tensor, b: torch.Tensor, *, convex: bool, chunk_pairs: int) -> torch.Tensor:
    """``(N, 4, 2)`` x ``(M, 4, 2)`` -> ``(N, M)``."""
    result = torch.zeros(a.shape[0], b.shape[0], dtype=_result_dtype(a, b), device=a.device)
    for rows, cols, values in _candidate_blocks(a, b, convex=convex, chunk_pairs=chunk_pairs):
        result[rows, cols] = values.to(result.dtype)
    return result


def rotated_overlaps(boxes: torch.Tensor, *, above: float, chunk_pairs: int = DEFAULT_CHUNK_PAIRS,
                     prefilter: bool = True) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The pairs ``i < j`` of boxes ``(N, 5)`` whose IoU is above ``above``: ``(rows, cols, iou)``.

    Sorted by row, then column. A sparse IoU matrix of a set with itself (what NMS needs): its memory
    grows with the overlapping pairs, not with ``N * N``. ``prefilter=False`` computes the exact IoU
    of every pair whose bounding rectangles meet, not only of those whose IoU bound is above
    ``above`` (the same result, slower: kept to test that).
    """
    corners = box_to_corners(boxes)
    no_index = torch.zeros(0, dtype=torch.long, device=boxes.device)
    rows, cols, values = [no_index], [no_index], [torch.zeros(0, dtype=torch.float64, device=boxes.device)]
    for block_rows, block_cols, block_values in _candidate_blocks(
            corners, corners, convex=True, chunk_pairs=chunk_pairs, later_only=True,
            above=above if prefilter else None):
        keep = block_values > above
        rows.append(block_rows[keep])
        cols.append(block_cols[keep])
        values.append(block_values[keep])
    return torch.cat(rows), torch.cat(cols), torch.cat(values).to(_result_dtype(boxes, boxes))


def rotated_iou(boxes1: torch.Tensor, boxes2: torch.Tensor, *, chunk_pairs: int = DEFAULT_CHUNK_PAIRS) -> torch.Tensor:
    """IoU of ``boxes1[i]`` and ``boxes2[i]``: ``(N, 5)``, ``(N, 5)`` -> ``(N,)``."""
    return _elementwise(box_to_corners(boxes1), box_to_corners(boxes2), convex=True, chunk_pairs=chunk_pairs)


def rotated_iou_matrix(boxes1: torch.Tensor, boxes2: torch.Tensor, *,
                       chunk_pairs: int = DEFAULT_CHUNK_PAIRS) -> torch.Tensor:
    """IoU of every pair: ``(N, 5)``, ``(M, 5)`` -> ``(N, M)``."""
    return _matrix(box_to_corners(boxes1), box_to_corners(boxes2), convex=True, chunk_pairs=chunk_pairs)


def polygon_iou(polygons1: torch.Tensor, polygons2: torch.Tensor, *,
                chunk_pairs: int = DEFAULT_CHUNK_PAIRS) -> torch.Tensor:
    """IoU of matching simple quadrilaterals ``(N, 8)`` or ``(N, 4, 2)`` -> ``(N,)``, either vertex order."""
    return _elementwise(_as_quads(polygons1), _as_quads(polygons2), convex=False, chunk_pairs=chunk_pairs)


def polygon_iou_matrix(polygons1: torch.Tensor, polygons2: torch.Tensor, *,
                       chunk_pairs: int = DEFAULT_CHUNK_PAIRS) -> torch.Tensor:
    """IoU of every pair of simple quadrilaterals: ``(N, 8)``, ``(M, 8)`` -> ``(N, M)``."""
    return _matrix(_as_quads(polygons1), _as_quads(polygons2), convex=False, chunk_pairs=chunk_pairs)


def polygon_intersection_area(polygons1: torch.Tensor, polygons2: torch.Tensor, *,
                              chunk_pairs: int = DEFAULT_CHUNK_PAIRS) -> torch.Tensor:
    """Intersection area of matching simple quadrilaterals ``(N, 8)`` or ``(N, 4, 2)`` -> ``(N,)``."""
    a, b = _as_quads(polygons1), _as_quads(polygons2)
    if a.shape != b.shape:
        raise ValueError(f"needs two sets of one size, got {tuple(a.shape)} and {tuple(b.shape)}")
    areas = [a.new_zeros(0, dtype=torch.float64)]
    for start in range(0, a.shape[0], chunk_pairs):
        unit_a, unit_b, scale = _unit_scaled(a[start:start + chunk_pairs], b[start:start + chunk_pairs])
        areas.append(_intersection_area_unit(unit_a, unit_b, convex=False) * scale**2)
    return torch.cat(areas).to(_result_dtype(a, b))
