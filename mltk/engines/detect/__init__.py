"""Oriented object detection in aerial images (DOTA) with UAGDet (arXiv 2208.10781).

The geometry, file and metric layer: le90 oriented boxes and DOTA polygons
(``boxes``), exact rotated IoU (``iou``), rotated NMS (``nms``), rotated
RoIAlign (``roi_align``), DOTA label, detection and submission files
(``dota``), the devkit's task-1 mAP (``evaluation``) and patch splitting and
merging (``patches``).

The detector on it: a ResNet or MobileNetV3 + FPN (``backbone``), oriented proposals
(``proposals``), the RoI head (``roi_head``), UAGDet's uncertainty and graph
refinement (``uagdet``), assembled in ``model``; trained by the
``oriented-rcnn`` and ``uagdet`` recipes (``training``), stored as
``oriented-detector`` artifacts (``artifact``) and run on images of any size
by ``detect_images`` (``api``). See docs/detect.md.
"""

from mltk.engines.detect import oriented_rcnn_recipe, protocols, uagdet_recipe  # noqa: F401  (registers them)
from mltk.engines.detect.api import DetectionRun, detect_images, write_outputs
from mltk.engines.detect.artifact import LoadedDetector, latest_detector, load_detector
from mltk.engines.detect.boxes import (
    RotatedDeltaCoder,
    box_to_corners,
    box_to_polygon,
    horizontal_bounds,
    normalize_angle,
    normalize_le90,
    polygon_to_box,
)
from mltk.engines.detect.config import OrientedRcnnConfig, UagdetConfig
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
from mltk.engines.detect.model import DetectorSpec, OrientedDetector
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
    "DetectionRun",
    "DetectorSpec",
    "LoadedDetector",
    "OrientedDetector",
    "OrientedRcnnConfig",
    "UagdetConfig",
    "PatchWindow",
    "RotatedDeltaCoder",
    "average_precision",
    "batched_rotated_nms",
    "box_to_corners",
    "box_to_polygon",
    "boxes_to_image",
    "detect_images",
    "evaluate_task1",
    "horizontal_bounds",
    "image_patches",
    "inside_fraction",
    "latest_detector",
    "load_detector",
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
    "write_outputs",
    "write_task1_submission",
]
