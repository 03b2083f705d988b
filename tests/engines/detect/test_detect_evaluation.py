"""DOTA task-1 mAP on cases computed by hand, and the devkit's rules one at a time."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mltk.core.errors import UsageError
from mltk.engines.detect.dota import DOTA_V1_0_CLASSES, DotaDetections, DotaLabels
from mltk.engines.detect.evaluation import average_precision, evaluate_task1

PLANE, SHIP = DOTA_V1_0_CLASSES.index("plane"), DOTA_V1_0_CLASSES.index("ship")


def square(x: float, y: float, size: float = 10.0) -> list[float]:
    return [x, y, x + size, y, x + size, y + size, x, y + size]


def truth(polygons, labels, difficult=None) -> DotaLabels:
    return DotaLabels(polygons=torch.tensor(polygons, dtype=torch.float64).view(-1, 8),
                      labels=torch.tensor(labels, dtype=torch.long),
                      difficult=torch.tensor(difficult or [0] * len(labels), dtype=torch.long))


def found(polygons, labels, scores) -> DotaDetections:
    return DotaDetections(polygons=torch.tensor(polygons, dtype=torch.float64).view(-1, 8),
                          labels=torch.tensor(labels, dtype=torch.long),
                          scores=torch.tensor(scores, dtype=torch.float64))


def hand_case():
    """Planes A and B, and C marked difficult; five detections, worked through in the comments.

    score 0.9 on A          -> true positive, A taken
    score 0.8 on A (IoU .8) -> false positive, A already taken
    score 0.7 on C          -> ignored: C is difficult
    score 0.6 on nothing    -> false positive
    score 0.5 on B          -> true positive
    Two objects count (C does not): recall 1/2 1/2 1/2 1/2 1, precision 1 1/2 1/2 1/3 1/2.
    """
    ground_truth = {"P1": truth([square(0, 0), square(100, 0), square(200, 0)], [PLANE] * 3, [0, 0, 1])}
    detections = {"P1": found([square(0, 0), square(1, 0), square(200, 0), square(300, 300), square(100, 0)],
                              [PLANE] * 5, [0.9, 0.8, 0.7, 0.6, 0.5])}
    return ground_truth, detections


def test_hand_computed_voc07_eleven_point_ap():
    result = evaluate_task1(*hand_case())
    plane = result.per_class["plane"]
    assert (plane.num_ground_truth, plane.num_detections, plane.true_positives, plane.false_positives) == (2, 5, 2, 2)
    # Recall points 0 .. 0.5 (six of them) see precision 1, the five from 0.6 see 1/2.
    assert plane.ap == pytest.approx((6 * 1.0 + 5 * 0.5) / 11, abs=1e-12)
    assert result.mean_ap == pytest.approx(plane.ap, abs=1e-12)  # the only class with ground truth


def test_hand_computed_area_ap():
    result = evaluate_task1(*hand_case(), use_07_metric=False)
    # Precision envelope 1 up to recall 1/2, then 1/2 up to recall 1: 0.5 * 1 + 0.5 * 0.5.
    assert result.per_class["plane"].ap == pytest.approx(0.75, abs=1e-12)


def test_classes_without_ground_truth_have_no_ap_and_stay_out_of_the_mean():
    ground_truth, detections = hand_case()
    detections["P1"] = found(detections["P1"].polygons.tolist() + [square(50, 50)],
                             detections["P1"].labels.tolist() + [SHIP], detections["P1"].scores.tolist() + [0.99])
    result = evaluate_task1(ground_truth, detections)
    assert result.per_class["ship"].ap is None and result.per_class["ship"].false_positives == 1
    assert result.mean_ap == pytest.approx(8.5 / 11, abs=1e-12)
    summary = result.to_dict()
    assert summary["AP"]["ship"] is None and "ship" in summary["classes_without_ground_truth"]
    assert summary["metric"] == "voc07-11-point" and summary["iou_threshold"] == 0.5


def test_the_match_needs_iou_strictly_above_the_threshold():
    ground_truth = {"P1": truth([square(0, 0)], [PLANE])}
    # 10x20 over a 10x10 square: IoU exactly 0.5, not above it, as the devkit's `ovmax > ovthresh`.
    half = {"P1": found([[0, 0, 10, 0, 10, 20, 0, 20]], [PLANE], [0.9])}
    assert evaluate_task1(ground_truth, half).per_class["plane"].true_positives == 0
    assert evaluate_task1(ground_truth, half, iou_threshold=0.49).per_class["plane"].true_positives == 1


def test_a_detection_takes_the_object_it_overlaps_most_even_if_taken():
    # Two objects side by side; the second detection overlaps the taken one more than the free one.
    ground_truth = {"P1": truth([square(0, 0), square(8, 0)], [PLANE, PLANE])}
    detections = {"P1": found([square(0, 0), square(2, 0)], [PLANE, PLANE], [0.9, 0.8])}
    plane = evaluate_task1(ground_truth, detections).per_class["plane"]
    assert (plane.true_positives, plane.false_positives) == (1, 1)


def test_detections_across_images_are_ranked_together():
    ground_truth = {"P1": truth([square(0, 0)], [PLANE]), "P2": truth([square(0, 0)], [PLANE])}
    # The false positive in P2 outranks P1's true positive: precision 0 then 1/2, recall 0 then 1/2.
    detections = {"P1": found([square(0, 0)], [PLANE], [0.5]), "P2": found([square(50, 50)], [PLANE], [0.9])}
    result = evaluate_task1(ground_truth, detections)
    assert result.per_class["plane"].ap == pytest.approx(6 * 0.5 / 11, abs=1e-12)


def test_no_detections_score_zero_and_unknown_images_are_an_error():
    ground_truth, _ = hand_case()
    assert evaluate_task1(ground_truth, {}).per_class["plane"].ap == 0.0
    with pytest.raises(UsageError, match="without ground truth: P9"):
        evaluate_task1(ground_truth, {"P9": found([square(0, 0)], [PLANE], [0.5])})


def test_eleven_point_recall_thresholds_keep_the_devkits_float_rounding():
    # np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004: a recall of exactly 0.3 does not reach it.
    recall, precision = np.array([0.3]), np.array([1.0])
    assert average_precision(recall, precision) == pytest.approx(3 / 11, abs=1e-12)
    assert average_precision(np.array([0.4]), precision) == pytest.approx(5 / 11, abs=1e-12)


def test_equal_scores_keep_input_order():
    ground_truth = {"P1": truth([square(0, 0)], [PLANE])}
    first_wrong = {"P1": found([square(60, 60), square(0, 0)], [PLANE, PLANE], [0.5, 0.5])}
    first_right = {"P1": found([square(0, 0), square(60, 60)], [PLANE, PLANE], [0.5, 0.5])}
    assert evaluate_task1(ground_truth, first_wrong).per_class["plane"].ap == pytest.approx(0.5, abs=1e-12)
    assert evaluate_task1(ground_truth, first_right).per_class["plane"].ap == pytest.approx(1.0, abs=1e-12)
