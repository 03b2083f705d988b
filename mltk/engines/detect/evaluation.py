"""DOTA task-1 mAP, computed as DOTA_devkit's ``dota_evaluation_task1.py`` does.

For each class, the detections of every image are sorted by score, highest
first, and walked in that order. A detection takes the ground-truth object
of its class and image that it overlaps most (polygon IoU of the labelled
quadrilateral, ``iou.polygon_iou_matrix``); it is

* a true positive if that IoU is above ``iou_threshold`` (strictly, as the
  devkit's ``ovmax > ovthresh``) and the object is not difficult and not yet
  taken; the object is then taken;
* ignored, neither true nor false, if the object is difficult;
* a false positive otherwise (below the threshold, or the object already taken).

Recall is over the objects that are not difficult; precision is
``tp / max(tp + fp, eps)``. AP is VOC07's 11-point interpolation by default
(``use_07_metric``, as the devkit's ``main`` runs it), or the area under the
precision envelope. The devkit checks horizontal-box overlap before its
polygon IoU only to skip work: pairs it skips have polygon IoU 0, so using
the exact IoU for all pairs gives the same result.

Where we differ, on purpose:

* a class with no (non-difficult) ground truth has no AP (``None``) and is
  left out of the mean; the devkit divides by zero there, which gives 0 with
  the 11-point metric and NaN with the area metric, and averages that in;
* equal scores keep their input order (a stable sort); the devkit's numpy
  quicksort leaves their order to the sorting algorithm.

To compare with the devkit, give it only the classes that have ground truth.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from mltk.core.errors import UsageError
from mltk.engines.detect.dota import DotaDetections, DotaLabels
from mltk.engines.detect.iou import polygon_iou_matrix

# The devkit's recall points, np.arange(0, 1.1, 0.1), with their float rounding kept on purpose:
# 3 * 0.1 is 0.30000000000000004, so a recall of exactly 0.3 does not reach that point there either.
VOC07_RECALL_POINTS = np.arange(0.0, 1.1, 0.1)


@dataclasses.dataclass(frozen=True)
class ClassResult:
    """One class: its AP (``None`` without ground truth) and the counts behind it."""

    class_name: str
    ap: float | None
    num_ground_truth: int  # objects that are not difficult
    num_detections: int
    true_positives: int
    false_positives: int


@dataclasses.dataclass(frozen=True)
class DotaEvaluation:
    per_class: dict[str, ClassResult]
    mean_ap: float | None  # over the classes with ground truth; None when no class has any
    iou_threshold: float
    use_07_metric: bool

    def to_dict(self) -> dict:
        """JSON-safe: AP per class (``null`` for a class without ground truth, with the reason)."""
        return {
            "mAP": self.mean_ap,
            "AP": {name: result.ap for name, result in self.per_class.items()},
            "ground_truth": {name: result.num_ground_truth for name, result in self.per_class.items()},
            "classes_without_ground_truth": [name for name, result in self.per_class.items() if result.ap is None],
            "iou_threshold": self.iou_threshold,
            "metric": "voc07-11-point" if self.use_07_metric else "area",
        }


def average_precision(recall: np.ndarray, precision: np.ndarray, *, use_07_metric: bool = True) -> float:
    """AP from the recall and precision after each detection, in score order."""
    if use_07_metric:
        total = 0.0
        for point in VOC07_RECALL_POINTS:
            reached = recall >= point
            total += (float(np.max(precision[reached])) if reached.any() else 0.0) / 11.0
        return total
    padded_recall = np.concatenate(([0.0], recall, [1.0]))
    envelope = np.concatenate(([0.0], precision, [0.0]))
    envelope = np.maximum.accumulate(envelope[::-1])[::-1]
    steps = np.nonzero(padded_recall[1:] != padded_recall[:-1])[0]
    return float(np.sum((padded_recall[steps + 1] - padded_recall[steps]) * envelope[steps + 1]))


def evaluate_task1(
    ground_truth: Mapping[str, DotaLabels],
    detections: Mapping[str, DotaDetections],
    *,
    classes: tuple[str, ...] | None = None,
    iou_threshold: float = 0.5,
    use_07_metric: bool = True,
) -> DotaEvaluation:
    """AP per class and mAP of ``detections`` against ``ground_truth``, both by image id.

    ``classes`` defaults to the ground truth's class list. Images without
    detections count their objects as missed; detections of an image
    without ground truth are an error (the devkit fails there too).
    """
    unknown = sorted(detections.keys() - ground_truth.keys())
    if unknown:
        raise UsageError(f"detections for {len(unknown)} image(s) without ground truth: {', '.join(unknown[:5])}",
                         "evaluate the images that have label files, or add theirs")
    if classes is None:
        classes = next(iter(ground_truth.values())).classes if ground_truth else ()
    per_class = {name: _evaluate_class(name, ground_truth, detections, iou_threshold, use_07_metric)
                 for name in classes}
    scored = [result.ap for result in per_class.values() if result.ap is not None]
    mean_ap = float(np.mean(scored)) if scored else None
    return DotaEvaluation(per_class, mean_ap, iou_threshold, use_07_metric)


def _evaluate_class(name: str, ground_truth: Mapping[str, DotaLabels], detections: Mapping[str, DotaDetections],
                    iou_threshold: float, use_07_metric: bool) -> ClassResult:
    scores, best_iou, best_object, image_of = [], [], [], []
    objects_difficult: dict[str, np.ndarray] = {}
    num_ground_truth = 0
    for image_id, truth in ground_truth.items():
        of_class = np.array([class_name == name for class_name in truth.class_names()], dtype=bool)
        difficult = truth.difficult.cpu().numpy()[of_class] != 0
        objects_difficult[image_id] = difficult
        num_ground_truth += int((~difficult).sum())
        found = detections.get(image_id)
        if found is None or len(found) == 0:
            continue
        mine = np.array([found.classes[int(label)] == name for label in found.labels], dtype=bool)
        if not mine.any():
            continue
        iou = polygon_iou_matrix(found.polygons[mine].to(truth.polygons),
                                 truth.polygons[of_class]).cpu().numpy()
        scores.append(found.scores.cpu().numpy()[mine].astype(np.float64))
        if iou.shape[1]:
            best_iou.append(iou.max(1))
            best_object.append(iou.argmax(1))  # the first of equal overlaps, as np.argmax in the devkit
        else:
            best_iou.append(np.full(iou.shape[0], -np.inf))
            best_object.append(np.zeros(iou.shape[0], dtype=np.int64))
        image_of.extend([image_id] * iou.shape[0])

    if not scores:
        tp = fp = np.zeros(0)
    else:
        scores_all = np.concatenate(scores)
        order = np.argsort(-scores_all, kind="stable")
        best_iou_all, best_object_all = np.concatenate(best_iou)[order], np.concatenate(best_object)[order]
        images_in_order = [image_of[index] for index in order]
        taken = {image_id: np.zeros(len(difficult), dtype=bool) for image_id, difficult in objects_difficult.items()}
        tp = np.zeros(len(order))
        fp = np.zeros(len(order))
        for rank, (image_id, overlap, target) in enumerate(zip(images_in_order, best_iou_all, best_object_all,
                                                             strict=True)):
            if overlap > iou_threshold:
                if objects_difficult[image_id][target]:
                    continue
                if not taken[image_id][target]:
                    tp[rank] = 1.0
                    taken[image_id][target] = True
                else:
                    fp[rank] = 1.0
            else:
                fp[rank] = 1.0

    ap = None
    if num_ground_truth > 0:
        tp_cumulative, fp_cumulative = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cumulative / float(num_ground_truth)
        precision = tp_cumulative / np.maximum(tp_cumulative + fp_cumulative, np.finfo(np.float64).eps)
        ap = average_precision(recall, precision, use_07_metric=use_07_metric)
    return ClassResult(name, ap, num_ground_truth, len(tp), int(tp.sum()), int(fp.sum()))
