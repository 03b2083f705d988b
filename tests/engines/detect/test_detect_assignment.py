"""Target assignment on hand cases: anchors by horizontal IoU, RoIs by rotated IoU; sampling; the schedule,
flips and the data split that training rests on."""

from __future__ import annotations

import math

import torch

from mltk.engines.detect.boxes import box_to_polygon
from mltk.engines.detect.data import labels_in_window, training_patches
from mltk.engines.detect.dota import DotaLabels
from mltk.engines.detect.patches import PatchWindow
from mltk.engines.detect.proposals import (
    ProposalSettings,
    anchors_as_boxes,
    assign_anchors,
    level_anchors,
    sample_balanced,
)
from mltk.engines.detect.roi_head import ROI_CODER, RoiSettings, assign_rois
from mltk.engines.detect.training import flip_horizontally, learning_rate


def test_anchors_sit_at_cell_centres_with_the_asked_ratios():
    anchors = level_anchors(2, 3, 8, ProposalSettings(anchor_scale=2.0, anchor_ratios=(0.25, 1.0)), torch.device("cpu"))
    assert anchors.shape == (2 * 3 * 2, 4)
    assert anchors[:2, :2].tolist() == [[4.0, 4.0], [4.0, 4.0]]
    assert anchors[0, 2:].tolist() == [32.0, 8.0] and anchors[1, 2:].tolist() == [16.0, 16.0]
    tall = anchors_as_boxes(torch.tensor([[0.0, 0.0, 4.0, 8.0]]))  # le90: the long side is w
    assert torch.allclose(tall, torch.tensor([[0.0, 0.0, 8.0, 4.0, -math.pi / 2]]))


def test_anchor_assignment_by_horizontal_iou():
    anchors = torch.tensor([[10.0, 10.0, 20.0, 20.0],   # identical to the object's bounds: positive
                            [14.0, 10.0, 20.0, 20.0],   # IoU 16/24 = 0.667: neither
                            [100.0, 100.0, 20.0, 20.0]])  # no overlap: negative
    objects = torch.tensor([[10.0, 10.0, 20.0, 20.0, 0.0]])
    labels, matched = assign_anchors(anchors, objects)
    assert labels.tolist() == [1, -1, 0] and matched[0] == 0
    # A rotated object is matched by its enclosing horizontal box.
    turned = torch.tensor([[10.0, 10.0, 20.0 / math.sqrt(2), 20.0 / math.sqrt(2), math.pi / 4]])
    assert assign_anchors(anchors[:1], turned)[0].tolist() == [1]


def test_each_object_keeps_its_best_anchor_even_below_the_positive_threshold():
    anchors = torch.tensor([[10.0, 10.0, 40.0, 40.0], [200.0, 200.0, 10.0, 10.0]])
    objects = torch.tensor([[10.0, 10.0, 20.0, 20.0, 0.0]])  # IoU 0.25 with the first
    assert assign_anchors(anchors, objects)[0].tolist() == [0, 0]
    objects = torch.tensor([[10.0, 10.0, 24.0, 24.0, 0.0]])  # IoU 0.36: at least 0.3, so positive
    assert assign_anchors(anchors, objects)[0].tolist() == [1, 0]


def test_roi_assignment_by_rotated_iou():
    torch.manual_seed(0)
    objects = {"boxes": torch.tensor([[50.0, 50.0, 40.0, 10.0, 0.3]]), "labels": torch.tensor([4])}
    proposals = torch.tensor([[50.0, 50.0, 40.0, 10.0, 0.3 + math.pi / 2 - 0.01],  # nearly crosswise: IoU < 0.5
                              [51.0, 50.0, 40.0, 10.0, 0.3],  # shifted one pixel: IoU > 0.5
                              [150.0, 150.0, 40.0, 10.0, 0.3]])  # far: background
    targets = assign_rois([proposals], [objects], num_classes=15, settings=RoiSettings(sampled_rois=100))
    by_box = {tuple(box.tolist()): (int(label), bool(positive), delta)
              for box, label, positive, delta in zip(targets.rois[:, 1:], targets.labels, targets.positive,
                                                      targets.deltas, strict=True)}
    assert len(by_box) == 4 and (targets.rois[:, 0] == 0).all()  # three proposals and the object itself
    assert by_box[tuple(proposals[0].tolist())][:2] == (15, False)
    assert by_box[tuple(proposals[1].tolist())][:2] == (4, True)
    assert by_box[tuple(proposals[2].tolist())][:2] == (15, False)
    label, positive, delta = by_box[tuple(objects["boxes"][0].tolist())]
    assert (label, positive) == (4, True) and torch.allclose(delta, torch.zeros(5), atol=1e-6)
    # The target deltas decode back to the object.
    shifted = proposals[1:2]
    decoded = ROI_CODER.decode(shifted, by_box[tuple(shifted[0].tolist())][2][None])
    assert torch.allclose(decoded, objects["boxes"], atol=1e-4)


def test_balanced_sampling_caps_positives_and_fills_with_negatives():
    torch.manual_seed(0)
    labels = torch.tensor([1] * 10 + [0] * 100 + [-1] * 5)
    chosen = sample_balanced(labels, 16, 0.25)
    assert chosen.numel() == 16 and (labels[chosen] == 1).sum() == 4 and (labels[chosen] >= 0).all()
    few = torch.tensor([1, 0, 0])
    assert sorted(sample_balanced(few, 16, 0.5).tolist()) == [0, 1, 2]


def test_learning_rate_warms_up_then_drops_tenfold_at_each_point():
    schedule = dict(total_steps=120, base_lr=0.01, warmup_steps=10, warmup_ratio=1 / 3, decay_at=(8 / 12, 11 / 12))
    assert abs(learning_rate(0, **schedule) - 0.01 / 3) < 1e-12
    assert learning_rate(10, **schedule) == 0.01 and learning_rate(79, **schedule) == 0.01
    assert abs(learning_rate(80, **schedule) - 0.001) < 1e-12
    assert abs(learning_rate(110, **schedule) - 0.0001) < 1e-12


def test_a_flip_mirrors_boxes_with_the_image_and_twice_is_the_identity():
    image = torch.zeros(3, 20, 30, dtype=torch.uint8)
    image[:, 5, 2] = 255
    boxes = torch.tensor([[2.5, 5.5, 6.0, 2.0, 0.4]])
    flipped_image, flipped = flip_horizontally(image, boxes)
    assert flipped_image[0, 5, 27] == 255
    assert torch.allclose(flipped, torch.tensor([[27.5, 5.5, 6.0, 2.0, -0.4]]))
    _, back = flip_horizontally(flipped_image, flipped)
    assert torch.allclose(back, boxes)


def test_patch_labels_keep_objects_mostly_inside_and_mark_cut_ones_difficult():
    boxes = torch.tensor([[20.0, 20.0, 10.0, 10.0, 0.0],    # inside
                          [63.0, 20.0, 10.0, 10.0, 0.0],    # 30 % inside: cut
                          [200.0, 200.0, 10.0, 10.0, 0.0]], dtype=torch.float64)  # outside
    labels = DotaLabels(box_to_polygon(boxes), torch.tensor([4, 5, 4]), torch.zeros(3, dtype=torch.long))
    window = PatchWindow(10, 0, 50, 64)
    training = labels_in_window(labels, window, 0.7, keep_cut_as_difficult=False)
    assert training.labels.tolist() == [4]
    assert torch.allclose(training.polygons[0][:2], torch.tensor([5.0, 15.0], dtype=torch.float64))
    held_out = labels_in_window(labels, window, 0.7, keep_cut_as_difficult=True)
    assert held_out.labels.tolist() == [4, 5] and held_out.difficult.tolist() == [0, 2]


def test_training_patches_skip_empty_windows():
    from mltk.engines.detect.data import Region

    boxes = torch.tensor([[20.0, 20.0, 10.0, 6.0, 0.2]], dtype=torch.float64)
    labels = DotaLabels(box_to_polygon(boxes), torch.tensor([4]), torch.zeros(1, dtype=torch.long))
    region = Region("r", torch.zeros(3, 64, 160, dtype=torch.uint8), labels)
    patches = training_patches([region], patch_size=64, overlap=0, min_inside=0.7, keep_empty=False)
    assert [patch.window.left for patch in patches] == [0]
    assert torch.allclose(patches[0].boxes, boxes.float(), atol=1e-4)
    assert len(training_patches([region], patch_size=64, overlap=0, min_inside=0.7, keep_empty=True)) == 3
