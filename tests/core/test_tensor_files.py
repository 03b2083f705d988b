"""safetensors checks, pickle-free state trees, and the weights_only gate for foreign files."""

from __future__ import annotations

import os
import pickle

import pytest
import torch

from mltk.core.errors import ArtifactError
from mltk.core.tensor_files import (
    load_foreign_state_dict,
    load_safetensors,
    load_state_tree,
    save_safetensors,
    save_state_tree,
)


def test_safetensors_round_trip_with_shared_storage(tmp_path):
    weight = torch.randn(4, 3)
    tensors = {"a": weight, "tied": weight, "view": weight[:, 1]}  # aliases safetensors would refuse
    save_safetensors(tmp_path / "m.safetensors", tensors, {"engine": "test"})
    loaded, meta = load_safetensors(tmp_path / "m.safetensors")
    assert meta == {"engine": "test"}
    for key, value in tensors.items():
        assert torch.equal(loaded[key], value)


@pytest.mark.parametrize("damage", ["truncate", "html", "empty", "header"])
def test_damaged_safetensors_is_one_clear_error(tmp_path, damage):
    path = tmp_path / "m.safetensors"
    save_safetensors(path, {"w": torch.randn(64, 64)})
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "html":
        path.write_bytes(b"<!DOCTYPE html><html>Virus scan warning</html>")
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        path.write_bytes(data[:8] + b"\xff" * 20 + data[28:])
    with pytest.raises(ArtifactError) as info:
        load_safetensors(path)
    assert str(path) in info.value.message
    assert info.value.exit_code == 3


def test_state_tree_round_trip_keeps_int_keys_and_values(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    tree = {"step": 7, "optimizer": optimizer.state_dict(), "nested": [1.5, None, "x", {"t": torch.ones(2)}]}
    save_state_tree(tmp_path / "state.safetensors", tree)
    back = load_state_tree(tmp_path / "state.safetensors")
    assert back["step"] == 7 and back["nested"][:3] == [1.5, None, "x"]
    assert torch.equal(back["nested"][3]["t"], torch.ones(2))
    fresh = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    fresh.load_state_dict(back["optimizer"])
    assert set(back["optimizer"]["state"]) == {0, 1}  # int keys survive
    assert torch.equal(fresh.state_dict()["state"][0]["momentum_buffer"],
                       optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert fresh.param_groups[0]["lr"] == 0.1


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_pickle_that_would_run_code_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"state_dict": {"w": torch.zeros(1)}, "payload": _RunsCode()}, handle)
    with pytest.raises(ArtifactError) as info:
        load_foreign_state_dict(path)
    assert "refused" in info.value.message and info.value.exit_code == 3
    assert not (tmp_path / "PWNED").exists()


def test_foreign_state_dict_unwrapped_and_prefix_stripped(tmp_path):
    path = tmp_path / "ckpt.th"
    torch.save({"epoch": 3, "state_dict": {"module.fc.weight": torch.ones(2, 2)}}, path)
    assert list(load_foreign_state_dict(path)) == ["fc.weight"]
