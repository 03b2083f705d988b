"""Oriented object detection in aerial images (DOTA): the geometry, file and metric layer.

This package holds what the UAGDet detector (arXiv 2208.10781) stands on:
le90 oriented boxes and DOTA polygons (``boxes``), exact rotated IoU
(``iou``), rotated NMS (``nms``), rotated RoIAlign (``roi_align``), DOTA
label, detection and submission files (``dota``), the devkit's task-1 mAP
(``evaluation``) and patch splitting and merging (``patches``). It registers
no recipe or protocol yet, and is not listed in ``mltk.engines``: the
detector, its recipes and ``mltk detect`` come next. See docs/detect.md.
"""

from mltk.engines.detect.boxes import (
    RotatedDeltaCoder,
    box_to_corners,
    box_to_polygon,
    horizontal_bounds,
    normalize_angle,
    normalize_le90,
    polygon_to_box,
)
from mltk.engines.detect.dota import (
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DotaDetections,
    DotaItem,
    DotaLabels,
    list_dota_folder,
    read_ground_truth,
    read_label_file,
    read_task1_submission,
    write_detection_file,
    write_label_file,
    write_task1_submission,
)
from mltk.engines.detect.evaluation import (
    ClassResult,
    DotaEvaluation,
    average_precision,
    evaluate_task1,
)
from mltk.engines.detect.iou import (
    polygon_area,
    polygon_intersection_area,
    polygon_iou,
    polygon_iou_matrix,
    rotated_iou,
    rotated_iou_matrix,
    rotated_overlaps,
)
from mltk.engines.detect.nms import batched_rotated_nms, rotated_nms
from mltk.engines.detect.patches import (
    PatchWindow,
    boxes_to_image,
    image_patches,
    inside_fraction,
    merge_patch_detections,
    patch_windows,
)
from mltk.engines.detect.roi_align import rotated_roi_align

__all__ = [
    "DOTA_V1_0_CLASSES",
    "DOTA_V1_5_CLASSES",
    "ClassResult",
    "DotaDetections",
    "DotaEvaluation",
    "DotaItem",
    "DotaLabels",
    "PatchWindow",
    "RotatedDeltaCoder",
    "average_precision",
    "batched_rotated_nms",
    "box_to_corners",
    "box_to_polygon",
    "boxes_to_image",
    "evaluate_task1",
    "horizontal_bounds",
    "image_patches",
    "inside_fraction",
    "list_dota_folder",
    "merge_patch_detections",
    "normalize_angle",
    "normalize_le90",
    "patch_windows",
    "polygon_area",
    "polygon_intersection_area",
    "polygon_iou",
    "polygon_iou_matrix",
    "polygon_to_box",
    "read_ground_truth",
    "read_label_file",
    "read_task1_submission",
    "rotated_iou",
    "rotated_iou_matrix",
    "rotated_nms",
    "rotated_overlaps",
    "rotated_roi_align",
    "write_detection_file",
    "write_label_file",
    "write_task1_submission",
]
