"""Patches: DOTA's grid, views instead of copies, and a merge that keeps a border-cut object once."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import UsageError
from mltk.engines.detect.boxes import box_to_polygon
from mltk.engines.detect.patches import (
    PatchWindow,
    image_patches,
    inside_fraction,
    merge_patch_detections,
    patch_windows,
)


def starts(windows, axis: str) -> list[int]:
    return sorted({getattr(window, axis) for window in windows})


def test_dota_grid_steps_by_patch_minus_overlap_and_ends_at_the_border():
    windows = patch_windows(2000, 3000)  # 1024 / 200: a step of 824
    assert starts(windows, "left") == [0, 824, 1648, 1976]
    assert starts(windows, "top") == [0, 824, 976]
    assert len(windows) == 12 and all(w.width == 1024 and w.height == 1024 for w in windows)
    assert max(w.left + w.width for w in windows) == 3000 and max(w.top + w.height for w in windows) == 2000


def test_grid_edge_cases():
    assert patch_windows(1024, 1024) == [PatchWindow(0, 0, 1024, 1024)]
    assert patch_windows(1848, 1024) == [PatchWindow(0, 0, 1024, 1024), PatchWindow(0, 824, 1024, 1024)]
    assert patch_windows(300, 500) == [PatchWindow(0, 0, 500, 300)]  # smaller than a patch: the image itself
    assert starts(patch_windows(100, 100, patch_size=40, overlap=10), "left") == [0, 30, 60]
    for size, overlap in ((0, 0), (100, 100), (100, -1)):
        with pytest.raises(UsageError, match="overlap"):
            patch_windows(10, 10, patch_size=size, overlap=overlap)


def test_patches_are_views_of_the_image_not_copies():
    image = torch.arange(3 * 50 * 70, dtype=torch.uint8).view(3, 50, 70)
    seen = torch.zeros(50, 70, dtype=torch.bool)
    for window, patch in image_patches(image, patch_size=32, overlap=8):
        assert patch.untyped_storage().data_ptr() == image.untyped_storage().data_ptr()
        assert torch.equal(patch, image[:, window.top:window.top + 32, window.left:window.left + 32])
        seen[window.top:window.top + window.height, window.left:window.left + window.width] = True
    assert seen.all()


def test_patch_names_follow_the_devkit():
    assert PatchWindow(824, 0, 1024, 1024).name("P0001") == "P0001__1__824___0"
    assert PatchWindow(0, 1648, 1024, 1024).name("P0001", rate=0.5) == "P0001__0.5__0___1648"


def simulated_detector(objects: torch.Tensor, window: PatchWindow):
    """What a perfect detector on one patch sees: each upright object clipped to the patch, scored by
    the share of it that is visible, in the patch's coordinates."""
    boxes, scores = [], []
    for cx, cy, w, h, _ in objects.tolist():
        left, right = max(cx - w / 2, window.left), min(cx + w / 2, window.left + window.width)
        top, bottom = max(cy - h / 2, window.top), min(cy + h / 2, window.top + window.height)
        if right <= left or bottom <= top:
            continue
        visible = (right - left) * (bottom - top) / (w * h)
        boxes.append([(left + right) / 2 - window.left, (top + bottom) / 2 - window.top, right - left, bottom - top, 0])
        scores.append(visible)
    return torch.tensor(boxes).view(-1, 5), torch.tensor(scores), torch.zeros(len(scores), dtype=torch.long)


def test_merge_keeps_an_object_cut_by_a_patch_border_once():
    # Patches of 100 with overlap 30 over 170 x 100: windows at left 0 and 70.
    objects = torch.tensor([
        [85.0, 50.0, 20.0, 10.0, 0.0],   # inside the overlap: whole in both patches
        [95.0, 20.0, 30.0, 12.0, 0.0],   # cut by the first patch's right border, whole in the second
        [20.0, 80.0, 16.0, 8.0, 0.0],    # in the first patch only
    ])
    windows = patch_windows(100, 170, patch_size=100, overlap=30)
    assert [w.left for w in windows] == [0, 70]
    per_patch = [(window, *simulated_detector(objects, window)) for window in windows]
    assert sum(len(scores) for _, _, scores, _ in per_patch) == 5  # two objects seen twice
    boxes, scores, labels = merge_patch_detections(per_patch)
    assert len(boxes) == 3
    # The whole view of each object survives, in image coordinates.
    order = torch.argsort(boxes[:, 0])
    torch.testing.assert_close(boxes[order], objects[torch.argsort(objects[:, 0])])
    assert (scores == 1).all() and (labels == 0).all()


def test_merge_keeps_overlapping_objects_of_different_classes_and_handles_no_patches():
    window = PatchWindow(10, 20, 50, 50)
    boxes = torch.tensor([[5.0, 5.0, 8.0, 4.0, 0.2], [5.0, 5.0, 8.0, 4.0, 0.2]])
    merged, _, labels = merge_patch_detections([(window, boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 3]))])
    assert sorted(labels.tolist()) == [0, 3]
    torch.testing.assert_close(merged[:, :2], torch.tensor([[15.0, 25.0], [15.0, 25.0]]))
    empty_boxes, empty_scores, empty_labels = merge_patch_detections([])
    assert empty_boxes.shape == (0, 5) and empty_scores.shape == (0,) and empty_labels.shape == (0,)


def test_inside_fraction_of_objects_on_a_patch_border():
    window = PatchWindow(0, 0, 100, 100)
    objects = torch.tensor([
        [50.0, 50.0, 20.0, 10.0, 0.3],   # inside
        [100.0, 50.0, 20.0, 10.0, 0.0],  # half outside on the right
        [300.0, 50.0, 20.0, 10.0, 0.0],  # outside
        [0.0, 0.0, 20.0, 20.0, 0.0],     # a quarter inside at the corner
    ], dtype=torch.float64)
    torch.testing.assert_close(inside_fraction(box_to_polygon(objects), window),
                               torch.tensor([1.0, 0.5, 0.0, 0.25], dtype=torch.float64))
