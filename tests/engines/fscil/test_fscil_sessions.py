"""Session plans: the CEC/TOPIC lists (real files when the shared data is here, tiny ones in the same
format otherwise), generated plans, and the bad inputs each names."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mltk.engines.fscil.sessions import SessionDataError, generate_plan, read_index_lists

CEC = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "fscil_index_lists_CEC" / "cifar100"


def _write_lists(folder: Path, sessions: list[list[int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for number, indices in enumerate(sessions, 1):
        (folder / f"session_{number}.txt").write_text("".join(f"{i}\n" for i in indices))
    return folder


def test_index_lists_give_the_classes_and_images_of_each_session(tmp_path):
    labels = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    plan = read_index_lists(_write_lists(tmp_path, [[0, 1, 2, 3], [4, 6], [9, 8]]), labels)
    assert plan.counts() == [(2, 4), (2, 2), (1, 2)]
    assert plan.class_order == (0, 1, 2, 3, 4)
    assert plan.seen_after(1) == (0, 1, 2, 3)


@pytest.mark.skipif(not CEC.is_dir(), reason="the CEC index lists of ../shared/data are not here")
def test_official_cifar100_lists_have_60_base_classes_then_eight_5_way_5_shot_sessions():
    # CIFAR-100's train labels are not available offline; these labels stand in with the official class
    # sizes: 500 per class, every list index mapped by the lists themselves (session 1 = 60 x 500).
    lists = [[int(v) for v in (CEC / f"session_{i}.txt").read_text().split()] for i in range(1, 10)]
    assert [len(x) for x in lists] == [30000] + [25] * 8
    flat = [i for x in lists for i in x]
    assert len(set(flat)) == len(flat) and max(flat) < 50000 and min(flat) >= 0
    labels = torch.full((50000,), -1, dtype=torch.int64)
    for i, index in enumerate(lists[0]):
        labels[index] = i % 60
    for session, indices in enumerate(lists[1:]):
        for k, index in enumerate(indices):
            labels[index] = 60 + 5 * session + k // 5
    labels[labels < 0] = 99
    plan = read_index_lists(CEC, labels)
    assert plan.counts() == [(60, 30000)] + [(5, 25)] * 8


def test_index_outside_the_dataset_names_file_and_line(tmp_path):
    folder = _write_lists(tmp_path, [[0, 1], [2, 99]])
    with pytest.raises(SessionDataError, match=r"session_2.txt:2: index 99 lies outside"):
        read_index_lists(folder, torch.tensor([0, 0, 1, 1]))


def test_path_lists_and_repeated_classes_are_refused(tmp_path):
    folder = tmp_path / "paths"
    folder.mkdir()
    (folder / "session_1.txt").write_text("CUB_200_2011/images/001.Black_footed_Albatross/x.jpg\n")
    with pytest.raises(SessionDataError, match="session_1.txt:1"):
        read_index_lists(folder, torch.zeros(4, dtype=torch.int64))
    with pytest.raises(SessionDataError, match="already taught"):
        read_index_lists(_write_lists(tmp_path / "again", [[0, 1], [1]]), torch.tensor([0, 0, 1, 1]))


def test_generated_plan_counts_and_errors():
    labels = torch.arange(10).repeat_interleave(20)
    names = [f"c{i}" for i in range(10)]
    plan = generate_plan(labels, names, base_classes=6, ways=2, shots=5, sessions=2, seed=0,
                         base_images_per_class=7)
    assert plan.counts() == [(6, 42), (2, 10), (2, 10)]
    assert torch.equal(
        generate_plan(labels, names, base_classes=6, ways=2, shots=5, sessions=2, seed=0,
                      base_images_per_class=7).sessions[1][1], plan.sessions[1][1])
    with pytest.raises(SessionDataError, match="needs 12 classes"):
        generate_plan(labels, names, base_classes=6, ways=2, shots=5, sessions=3, seed=0)
    with pytest.raises(SessionDataError, match="'c6' has 20 training images, fewer than 25 shots"):
        generate_plan(labels, names, base_classes=6, ways=2, shots=25, sessions=2, seed=0)
