"""A Hugging Face LM folder whose pytorch_model.bin would run code is refused in mltk's own words.

The pickle is made here; its payload would create a marker file, which must never appear.
"""

from __future__ import annotations

import os
import shutil

import pytest
import torch
from safetensors.torch import load_file


class _Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture
def poisoned_lm(detox_files, mltk_env):
    """A copy of the tiny LM whose weights are a pytorch_model.bin holding a code-running object."""
    folder = mltk_env / "poisoned-lm"
    shutil.copytree(detox_files["lm"], folder)
    tensors = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    marker = mltk_env / "PWNED"
    torch.save({**tensors, "extra": _Payload(marker)}, folder / "pytorch_model.bin")
    return folder, marker


def _assert_refused_in_one_line(result, marker):
    assert result.code == 3, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "refused: the file holds pickled Python objects that could run code" in lines[0]
    assert "posix.system" in lines[0] or "os.system" in lines[0]
    assert "weights_only=False" not in result.stderr and "internal error" not in result.stderr
    assert not marker.exists()


def test_detox_generate_refuses_a_code_running_pickle(cli, poisoned_lm):
    folder, marker = poisoned_lm
    _assert_refused_in_one_line(cli("detox-generate", str(folder), "--prompt", "hello"), marker)


def test_train_adlm_refuses_a_code_running_pickle(cli, poisoned_lm, detox_files):
    folder, marker = poisoned_lm
    result = cli("train", "adlm", f"lm={folder}", f"data=labelled:{detox_files['labelled']}", "train.steps=1")
    _assert_refused_in_one_line(result, marker)
