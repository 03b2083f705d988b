"""The real DOTA label files in ../shared/data/dota: every polygon parses, and boxes keep rectangles."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mltk.engines.detect.boxes import box_to_polygon, polygon_to_box
from mltk.engines.detect.dota import (
    DotaDetections,
    list_dota_folder,
    read_ground_truth,
    read_label_file,
)
from mltk.engines.detect.evaluation import evaluate_task1
from mltk.engines.detect.iou import polygon_area, polygon_intersection_area, polygon_iou

DOTA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "dota"
LABEL_FOLDERS = ["dota_devkit_example/labelTxt", "dota_devkit_example/labelTxt_no_image", "dotadevkit_ashnair1/labelTxt"]

pytestmark = pytest.mark.skipif(not DOTA.is_dir(), reason=f"shared DOTA data not found at {DOTA}")


@pytest.fixture(scope="module")
def all_labels():
    files = sorted(file for folder in LABEL_FOLDERS for file in (DOTA / folder).glob("*.txt"))
    return {file: read_label_file(file) for file in files}


def test_every_polygon_of_every_file_parses(all_labels):
    for file, labels in all_labels.items():
        lines = [line for line in file.read_text().splitlines() if len(line.split()) >= 9]
        assert len(labels) == len(lines), file  # none skipped: the real files have no zero-area polygon
        assert "imagesource" in labels.header and "gsd" in labels.header
    assert sum(len(labels) for labels in all_labels.values()) == 508
    p1888 = all_labels[DOTA / "dota_devkit_example/labelTxt/P1888.txt"]
    assert set(p1888.class_names()) == {"small-vehicle", "large-vehicle"} and len(p1888) == 64


def test_polygon_to_box_contains_the_polygon_and_keeps_rectangles(all_labels):
    polygons = torch.cat([labels.polygons for labels in all_labels.values()])
    rebuilt = box_to_polygon(polygon_to_box(polygons))
    # The box contains the labelled quadrilateral, so its IoU with it is the area ratio.
    area = polygon_area(polygons.view(-1, 4, 2))
    torch.testing.assert_close(polygon_intersection_area(polygons, rebuilt), area, atol=1e-6, rtol=1e-9)
    iou = polygon_iou(polygons, rebuilt)
    torch.testing.assert_close(iou, area / polygon_area(rebuilt.view(-1, 4, 2)), atol=1e-9, rtol=0)
    # Rectangles up to the labellers' whole-pixel rounding: diagonals that halve each other and
    # have one length, within 0.5% of it. Their boxes are the rectangles themselves.
    corners = polygons.view(-1, 4, 2)
    diagonal_1, diagonal_2 = corners[:, 2] - corners[:, 0], corners[:, 3] - corners[:, 1]
    middle_gap = ((corners[:, 0] + corners[:, 2]) - (corners[:, 1] + corners[:, 3])).norm(dim=1) / 2
    length = diagonal_1.norm(dim=1)
    rectangles = (middle_gap <= 0.005 * length) & ((length - diagonal_2.norm(dim=1)).abs() <= 0.005 * length)
    assert rectangles.sum() > 200
    assert iou[rectangles].min() >= 0.99
    # Exact right angles (many labels are upright boxes): the box gives them back exactly.
    edges = corners.roll(-1, 1) - corners
    right_angled = ((edges * edges.roll(1, 1)).sum(-1) == 0).all(1)
    assert right_angled.sum() > 100
    torch.testing.assert_close(iou[right_angled], torch.ones(int(right_angled.sum()), dtype=torch.float64))


def test_the_real_folder_layouts():
    items = list_dota_folder(f"dota:{DOTA / 'dotadevkit_ashnair1'}")
    assert [(item.image_id, item.image_path.suffix, item.label_path.name) for item in items] == [
        ("P0075", ".png", "P0075.txt"), ("P0168", ".png", "P0168.txt"), ("P0770", ".png", "P0770.txt")]
    label_only = read_ground_truth(DOTA / "dota_devkit_example" / "labelTxt_no_image")
    assert sorted(label_only) == ["P0770", "P1088", "P1234", "P2598", "P2709"]
    assert sum(len(labels) for labels in label_only.values()) == 384


def test_ground_truth_as_detections_scores_map_one(all_labels):
    ground_truth = read_ground_truth(DOTA / "dota_devkit_example" / "labelTxt_no_image")
    detections = {image_id: DotaDetections(labels.polygons, labels.labels, torch.linspace(1, 0.5, len(labels),
                                                                                           dtype=torch.float64))
                  for image_id, labels in ground_truth.items()}
    result = evaluate_task1(ground_truth, detections)
    assert result.mean_ap == pytest.approx(1.0, abs=1e-12)
    assert sorted(result.to_dict()["classes_without_ground_truth"]) == ["basketball-court", "helicopter", "roundabout"]
