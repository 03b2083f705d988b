"""How a run ends on bad input and on a full disk: no "failed" folder for input that was never usable,
and a run that failed is recorded as failed, never left "running"."""

from __future__ import annotations

import errno
import json

from mltk.core import runs as runs_mod
from mltk.core.runs import RunDir


def _run_folders(mltk_env):
    root = mltk_env / "runs"
    return sorted(p for p in root.glob("*/*") if p.is_dir()) if root.exists() else []


def test_a_full_disk_at_a_checkpoint_marks_the_run_failed(cli, tiny, mltk_env, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    def checkpoint_on_a_full_disk(path, tree):
        # From here on the disk stays full: even run.json's usual write-and-rename fails.
        monkeypatch.setattr(RunDir, "_write_json", disk_full)
        disk_full()

    monkeypatch.setattr(runs_mod, "save_state_tree", checkpoint_on_a_full_disk)
    result = cli("train", "supervised", *tiny, "train.ckpt_every=5")
    assert result.code == 1, result.stderr
    assert "could not save the checkpoint of step 5: No space left on device" in result.stderr
    assert "nothing was stored" in result.stderr and "internal error" not in result.stderr
    (run,) = _run_folders(mltk_env)
    info = json.loads((run / "run.json").read_text())
    assert info["status"] == "failed" and "No space left" in info["error"]
    assert list((run / "ckpt").iterdir()) == []  # no half checkpoint, hidden or not


def test_bad_data_leaves_no_run_folder(cli, tiny, mltk_env):
    result = cli("train", "supervised", *tiny, f"data=imagefolder:{mltk_env / 'nowhere'}")
    assert result.code == 3, result.stderr
    assert _run_folders(mltk_env) == []


def test_a_bad_model_option_for_the_data_leaves_no_run_folder(cli, tiny, mltk_env):
    # depth 6 halves the 8-pixel digits six times: known only once the data is read, still before the run
    result = cli("train", "supervised", *tiny, "model.options.depth=6")
    assert result.code == 2, result.stderr
    assert "image_size must be at least 64" in result.stderr
    assert _run_folders(mltk_env) == []
