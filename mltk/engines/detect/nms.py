"""Greedy non-maximum suppression of rotated boxes.

The highest-scoring box is kept and every remaining box whose rotated IoU
with it is above ``iou_threshold`` is dropped; then the next survivor, and
so on. A box exactly at the threshold survives, as in torchvision's ``nms``
and DOTA_devkit's ``py_cpu_nms_poly``. Equal scores keep their input order
(a stable sort), so the result does not depend on the sorting algorithm.

The overlapping pairs are computed once, sparsely (``rotated_overlaps``:
only boxes whose bounding rectangles meet are compared); the greedy pass
then walks the boxes once in plain numpy, which for thousands of boxes is
far cheaper than a tensor operation per box.
"""

from __future__ import annotations

import numpy as np
import torch

from mltk.engines.detect.iou import rotated_overlaps


def rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes ``(N, 5)`` kept, highest score first -> ``(K,)`` int64."""
    if boxes.shape[0] != scores.shape[0]:
        raise ValueError(f"{boxes.shape[0]} boxes but {scores.shape[0]} scores")
    order = torch.sort(scores, descending=True, stable=True).indices
    count = order.numel()
    if count == 0:
        return order
    # Pairs (i, j), i < j in score order: i suppresses j if i is kept. Rows come sorted.
    rows, cols, _ = rotated_overlaps(boxes[order], above=iou_threshold)
    rows, cols = rows.cpu().numpy(), cols.cpu().numpy()
    row_starts = np.searchsorted(rows, np.arange(count + 1))
    suppressed = np.zeros(count, dtype=bool)
    kept = []
    for position in range(count):
        if suppressed[position]:
            continue
        kept.append(position)
        suppressed[cols[row_starts[position]:row_starts[position + 1]]] = True
    return order[torch.tensor(kept, dtype=torch.long, device=order.device)]


def batched_rotated_nms(boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor,
                        iou_threshold: float) -> torch.Tensor:
    """NMS within each class: boxes of different ``labels`` never suppress each other.

    Returns the kept indices ``(K,)``, highest score first across classes.
    One NMS per class keeps each comparison to the boxes of one class
    (rather than offsetting classes apart in one big set).
    """
    if not (boxes.shape[0] == scores.shape[0] == labels.shape[0]):
        raise ValueError(f"{boxes.shape[0]} boxes, {scores.shape[0]} scores, {labels.shape[0]} labels")
    kept = [torch.zeros(0, dtype=torch.long, device=boxes.device)]
    for label in labels.unique():
        members = (labels == label).nonzero().squeeze(1)
        kept.append(members[rotated_nms(boxes[members], scores[members], iou_threshold)])
    kept = torch.cat(kept)
    return kept[torch.sort(scores[kept], descending=True, stable=True).indices]
