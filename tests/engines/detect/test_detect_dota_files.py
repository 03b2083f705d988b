"""DOTA label, detection and task-1 files: parsing, the errors on bad input, writing and reading back."""

from __future__ import annotations

import pytest
import torch

from mltk.core.errors import ArtifactError, DataMissingError, UsageError
from mltk.engines.detect.dota import (
    DOTA_V1_0_CLASSES,
    DOTA_V1_5_CLASSES,
    DotaDetections,
    list_dota_folder,
    read_ground_truth,
    read_label_file,
    read_task1_submission,
    write_detection_file,
    write_label_file,
    write_task1_submission,
)

LABELS = (
    "imagesource:GoogleEarth\r\n"
    "gsd:0.146343590398\r\n"
    "2753 2408 2861 2385 2888 2468 2805 2502 plane 0\r\n"
    "\r\n"
    "3445 3391 3484 3409 3478 3422 3437 3402.5 large-vehicle 1\r\n"
    "10.5 20 30 20 30 40 10.5 40 small-vehicle\r\n"
)


def write(path, text: str):
    path.write_bytes(text.encode())
    return path


def test_a_label_file_with_header_crlf_and_optional_difficult(tmp_path):
    labels = read_label_file(write(tmp_path / "P0001.txt", LABELS))
    assert labels.header == {"imagesource": "GoogleEarth", "gsd": "0.146343590398"}
    assert labels.class_names() == ["plane", "large-vehicle", "small-vehicle"]
    assert labels.difficult.tolist() == [0, 1, 0]
    assert labels.polygons.dtype == torch.float64 and labels.polygons.shape == (3, 8)
    assert labels.polygons[1, 7] == 3402.5 and labels.polygons[2].tolist() == [10.5, 20, 30, 20, 30, 40, 10.5, 40]
    assert labels.labels.tolist() == [DOTA_V1_0_CLASSES.index(name) for name in labels.class_names()]


def test_an_empty_label_file_has_no_objects(tmp_path):
    labels = read_label_file(write(tmp_path / "empty.txt", "imagesource:GF\ngsd:null\n"))
    assert len(labels) == 0 and labels.polygons.shape == (0, 8) and labels.header["gsd"] == "null"


@pytest.mark.parametrize(("line", "message"), [
    ("1 2 3 4 5 6 7 plane 0", "7 coordinates before 'plane', 8 expected"),
    ("1 2 3 4 5 6", "6 coordinates before 'the end', 8 expected"),
    ("1 2 3 4 5 6 7 8", "8 coordinates but no class name"),
    ("1 2 3 4 5 6 7 8 airship 0", "unknown class 'airship'"),
    ("1 2 3 4 5 6 7 8 container-crane 0", "unknown class 'container-crane'"),
    ("1 2 3 4 5 nan 7 8 plane 0", "coordinate 'nan' is not a finite number"),
    ("1 2 3 4 5 6 7 8 plane hard", "difficult flag 'hard'"),
    ("1 2 3 4 5 6 7 8 plane 0 extra", "11 fields, at most 10 expected"),
])
def test_bad_lines_name_the_file_and_line(tmp_path, line, message):
    path = write(tmp_path / "P0002.txt", f"imagesource:GoogleEarth\n0 0 9 0 9 9 0 9 ship 0\n{line}\n")
    with pytest.raises(ArtifactError) as caught:
        read_label_file(path)
    assert f"{path}:3: " in str(caught.value) and message in str(caught.value)
    assert caught.value.exit_code == 3


def test_dota_v1_5_classes_are_accepted_when_asked_for(tmp_path):
    path = write(tmp_path / "P0003.txt", "0 0 9 0 9 9 0 9 container-crane 0\n")
    assert read_label_file(path, DOTA_V1_5_CLASSES).class_names() == ["container-crane"]
    assert len(DOTA_V1_0_CLASSES) == 15 and len(DOTA_V1_5_CLASSES) == 16


def test_a_zero_area_polygon_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    path = write(tmp_path / "P0004.txt", "0 0 9 0 9 9 0 9 ship 0\n5 5 10 10 15 15 20 20 ship 0\n3 3 3 3 3 3 3 3 plane 1\n")
    labels = read_label_file(path)
    assert len(labels) == 1
    stderr = capsys.readouterr().err
    assert f"{path}:2: ship has a zero-area polygon; skipped" in stderr
    assert f"{path}:3: plane has a zero-area polygon; skipped" in stderr


def test_missing_and_binary_label_files(tmp_path):
    with pytest.raises(DataMissingError, match="no such label file"):
        read_label_file(tmp_path / "absent.txt")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(ArtifactError, match="not a text file"):
        read_label_file(binary)


def test_ground_truth_written_and_read_back_is_the_same(tmp_path):
    labels = read_label_file(write(tmp_path / "in.txt", LABELS))
    again = read_label_file(write_label_file(tmp_path / "out" / "P0001.txt", labels))
    assert again.header == labels.header
    assert torch.equal(again.polygons, labels.polygons) and torch.equal(again.labels, labels.labels)
    assert torch.equal(again.difficult, labels.difficult)
    assert (tmp_path / "out" / "P0001.txt").read_text().splitlines()[2] == "2753 2408 2861 2385 2888 2468 2805 2502 plane 0"


def detections() -> DotaDetections:
    boxes = torch.tensor([[50.0, 40.0, 20.0, 10.0, 0.3], [10.0, 10.0, 8.0, 4.0, -1.2], [70.0, 70.0, 6.0, 6.0, 0.0]])
    return DotaDetections.from_boxes(boxes, torch.tensor([0, 4, 0]), torch.tensor([0.5, 0.93, 0.8]))


def test_detection_file_holds_class_and_score_highest_first(tmp_path):
    path = write_detection_file(tmp_path / "labelTxt" / "P0001.txt", detections(), header={"imagesource": "GoogleEarth"})
    lines = path.read_text().splitlines()
    assert lines[0] == "imagesource:GoogleEarth"
    assert [line.split()[8:] for line in lines[1:]] == [["small-vehicle", "0.93"], ["plane", "0.8"], ["plane", "0.5"]]
    assert [len(line.split()) for line in lines[1:]] == [10, 10, 10]


def test_task1_submission_has_a_file_per_class_and_reads_back(tmp_path):
    found = {"P0001": detections(), "P0002": DotaDetections.from_boxes(torch.zeros(0, 5), torch.zeros(0), torch.zeros(0))}
    files = write_task1_submission(tmp_path / "submission", found)
    assert sorted(file.name for file in files) == sorted(f"Task1_{name}.txt" for name in DOTA_V1_0_CLASSES)
    plane_lines = (tmp_path / "submission" / "Task1_plane.txt").read_text().splitlines()
    assert len(plane_lines) == 2 and plane_lines[0].split()[:2] == ["P0001", "0.5"]
    assert (tmp_path / "submission" / "Task1_ship.txt").read_text() == ""
    back = read_task1_submission(tmp_path / "submission")
    assert set(back) == {"P0001"}
    original = found["P0001"]
    order = torch.argsort(back["P0001"].scores)
    assert torch.equal(back["P0001"].scores[order].float(), torch.sort(original.scores).values)
    assert sorted(back["P0001"].labels.tolist()) == sorted(original.labels.tolist())
    torch.testing.assert_close(back["P0001"].polygons[order], original.polygons[torch.argsort(original.scores)],
                               atol=1e-6, rtol=0)


def test_a_bad_task1_line_names_its_file_and_line(tmp_path):
    (tmp_path / "Task1_plane.txt").write_text("P0001 0.9 1 2 3 4 5 6 7 8\nP0001 0.8 1 2 3\n")
    with pytest.raises(ArtifactError, match=r"Task1_plane.txt:2: 5 fields, 10 expected"):
        read_task1_submission(tmp_path)
    (tmp_path / "Task1_plane.txt").write_text("P0001 high 1 2 3 4 5 6 7 8\n")
    with pytest.raises(ArtifactError, match=r"Task1_plane.txt:1: "):
        read_task1_submission(tmp_path)
    (tmp_path / "Task1_plane.txt").unlink()
    (tmp_path / "Task1_zeppelin.txt").write_text("")
    with pytest.raises(ArtifactError, match="unknown class 'zeppelin'"):
        read_task1_submission(tmp_path)


def test_task1_image_ids_with_spaces_are_refused(tmp_path):
    with pytest.raises(UsageError, match="white space"):
        write_task1_submission(tmp_path, {"my image": detections()})


def test_an_output_folder_that_cannot_be_written(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(UsageError, match="cannot write"):
        write_detection_file(blocker / "labelTxt" / "P0001.txt", detections())


def test_folder_layout_pairs_images_and_labels(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labelTxt").mkdir()
    for name in ("P0001.png", "P0002.png", "notes.md"):
        (tmp_path / "images" / name).write_bytes(b"")
    write(tmp_path / "labelTxt" / "P0001.txt", LABELS)
    write(tmp_path / "labelTxt" / "P0003.txt", LABELS)
    items = list_dota_folder(f"dota:{tmp_path}")
    assert [(item.image_id, item.image_path is not None, item.label_path is not None) for item in items] == [
        ("P0001", True, True), ("P0002", True, False), ("P0003", False, True)]
    assert set(read_ground_truth(tmp_path)) == {"P0001", "P0003"}


def test_a_flat_folder_of_label_files(tmp_path):
    write(tmp_path / "P0007.txt", LABELS)
    assert [item.image_id for item in list_dota_folder(tmp_path)] == ["P0007"]


def test_missing_and_empty_folders_and_duplicate_names(tmp_path):
    with pytest.raises(DataMissingError, match="is not a folder"):
        list_dota_folder(tmp_path / "absent")
    with pytest.raises(DataMissingError, match="no images or label files"):
        list_dota_folder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "P1.png").write_bytes(b"")
    (tmp_path / "images" / "P1.jpg").write_bytes(b"")
    with pytest.raises(ArtifactError, match="name the same image"):
        list_dota_folder(tmp_path)
