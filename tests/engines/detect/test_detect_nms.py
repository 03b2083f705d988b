"""Rotated NMS on cases worked out by hand, and against a plain greedy loop over the IoU matrix."""

from __future__ import annotations

import math

import torch

from mltk.engines.detect.iou import rotated_iou_matrix, rotated_overlaps
from mltk.engines.detect.nms import batched_rotated_nms, rotated_nms


def test_a_turned_copy_is_suppressed_only_when_it_overlaps_enough():
    boxes = torch.tensor([
        [0.0, 0.0, 10.0, 10.0, 0.0],          # kept: the best score
        [0.0, 0.0, 10.0, 10.0, math.pi / 4],  # the same square turned by 45 degrees: IoU 0.707
        [1.0, 0.0, 10.0, 10.0, 0.0],          # shifted by 1: IoU 9/11 = 0.818
        [30.0, 0.0, 10.0, 10.0, 0.0],         # far away: kept
    ])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    assert rotated_nms(boxes, scores, 0.75).tolist() == [0, 1, 3]
    assert rotated_nms(boxes, scores, 0.5).tolist() == [0, 3]
    assert rotated_nms(boxes, scores, 0.9).tolist() == [0, 1, 2, 3]


def test_a_box_exactly_at_the_threshold_survives():
    # Two 10x10 squares shifted by 10/3: intersection 20/3 x 10, union 400/3, IoU exactly 0.5.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0], [10 / 3, 0.0, 10.0, 10.0, 0.0]], dtype=torch.float64)
    iou = float(rotated_iou_matrix(boxes[:1], boxes[1:])[0, 0])
    assert abs(iou - 0.5) < 1e-12
    assert rotated_nms(boxes, torch.tensor([0.9, 0.8]), iou).tolist() == [0, 1]
    assert rotated_nms(boxes, torch.tensor([0.9, 0.8]), iou - 1e-9).tolist() == [0]


def test_suppressed_boxes_do_not_suppress_others():
    # A overlaps B, B overlaps C, A does not overlap C: greedy keeps A and C.
    boxes = torch.tensor([[0.0, 0.0, 10.0, 4.0, 0.0], [6.0, 0.0, 10.0, 4.0, 0.0], [12.0, 0.0, 10.0, 4.0, 0.0]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert rotated_nms(boxes, scores, 0.2).tolist() == [0, 2]


def test_result_is_sorted_by_score_and_ties_keep_input_order():
    boxes = torch.tensor([[x * 20.0, 0.0, 10.0, 5.0, 0.3] for x in range(5)])
    scores = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert rotated_nms(boxes, scores, 0.5).tolist() == [1, 3, 2, 0, 4]
    assert rotated_nms(boxes[:0], scores[:0], 0.5).tolist() == []


def test_batched_nms_keeps_overlapping_boxes_of_different_classes():
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0, 0.0]] * 3 + [[0.5, 0.0, 10.0, 10.0, 0.1]])
    scores = torch.tensor([0.5, 0.9, 0.7, 0.8])
    labels = torch.tensor([0, 1, 0, 1])
    assert batched_rotated_nms(boxes, scores, labels, 0.5).tolist() == [1, 2]


def test_rotated_nms_equals_a_plain_greedy_loop():
    generator = torch.Generator().manual_seed(0)
    count = 300
    boxes = torch.cat([
        torch.rand(count, 2, generator=generator) * 200,
        torch.rand(count, 2, generator=generator) * 40 + 5,
        (torch.rand(count, 1, generator=generator) - 0.5) * math.pi,
    ], dim=1)
    scores = torch.rand(count, generator=generator)
    labels = torch.randint(0, 3, (count,), generator=generator)
    iou, same_class = rotated_iou_matrix(boxes, boxes).tolist(), (labels[:, None] == labels[None]).tolist()
    for threshold in (0.1, 0.3, 0.7):
        expected, removed = [], set()
        for index in sorted(range(count), key=lambda i: -float(scores[i])):
            if index in removed:
                continue
            expected.append(index)
            removed |= {j for j in range(count) if same_class[index][j] and iou[index][j] > threshold}
        assert batched_rotated_nms(boxes, scores, labels, threshold).tolist() == expected


def test_iou_bound_prefilter_leaves_the_overlaps_bit_identical():
    # Clustered boxes of all sizes and angles (as an untrained detector's proposals), zero-area ones and
    # exact copies (IoU 1, and a pair at the bound itself) included: with or without the bound, the same
    # pairs with the same IoU values, bit for bit, at NMS's thresholds.
    generator = torch.Generator().manual_seed(0)
    centres = (torch.rand(15, 2, generator=generator) * 200).repeat_interleave(20, 0)
    boxes = torch.cat([centres + torch.randn(300, 2, generator=generator) * 5,
                       torch.rand(300, 2, generator=generator) * 40 + 2,
                       (torch.rand(300, 1, generator=generator) - 0.5) * math.pi], 1)
    boxes[::37, 3] = 0.0
    boxes[1::50] = boxes[::50]
    for threshold in (0.0, 0.1, 0.3, 0.8):
        fast = rotated_overlaps(boxes, above=threshold)
        full = rotated_overlaps(boxes, above=threshold, prefilter=False)
        assert fast[0].numel() > 0
        for ours, reference in zip(fast, full, strict=True):
            assert torch.equal(ours, reference)
