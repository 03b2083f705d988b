"""Fuzzing the tensor-file readers: every truncation, bit flip or header mutation of a real file either
loads correctly or fails with one ArtifactError (exit 3), never another exception."""

from __future__ import annotations

import json
import random
import struct

import pytest
import torch

from mltk.core.errors import ArtifactError
from mltk.core.tensor_files import (
    load_safetensors,
    load_state_tree,
    save_safetensors,
    save_state_tree,
)


def _mutations(data: bytes, rng: random.Random):
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + header_len])
    for _ in range(100):  # truncations
        yield data[:rng.randrange(len(data))]
    for _ in range(150):  # bit flips anywhere
        flipped = bytearray(data)
        at = rng.randrange(len(data))
        flipped[at] ^= 1 << rng.randrange(8)
        yield bytes(flipped)
    keys = [k for k in header if k != "__metadata__"]
    mutators = [
        lambda h, k: h[k].pop("data_offsets"),
        lambda h, k: h[k].__setitem__("data_offsets", ["0", "8"]),
        lambda h, k: h[k].__setitem__("data_offsets", [8, 0]),
        lambda h, k: h[k].__setitem__("shape", [10 ** 9, 10 ** 9]),
        lambda h, k: h[k].__setitem__("shape", "big"),
        lambda h, k: h[k].__setitem__("dtype", "Q128"),
        lambda h, k: h.__setitem__(k, "a string"),
        lambda h, k: h.__setitem__("__metadata__", [1, 2]),
        lambda h, k: h.__setitem__("__metadata__", {"mltk_state": "{not json"}),
    ]
    for mutate in mutators:
        for key in keys[:3]:
            mutated = json.loads(json.dumps(header))
            mutate(mutated, key)
            raw = json.dumps(mutated).encode()
            yield struct.pack("<Q", len(raw)) + raw + data[8 + header_len:]
    raw = json.dumps(list(header)).encode()
    yield struct.pack("<Q", len(raw)) + raw + data[8 + header_len:]


@pytest.mark.parametrize("kind", ["weights", "state"])
def test_mutated_files_load_or_raise_artifact_error(tmp_path, kind):
    source = tmp_path / "source.safetensors"
    torch.manual_seed(0)
    if kind == "weights":
        save_safetensors(source, {"conv.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(10)},
                         {"arch": json.dumps({"name": "convnet"})})
        load = load_safetensors
    else:
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.randn(5, 2))], lr=0.1, momentum=0.9)
        optimizer.param_groups[0]["params"][0].grad = torch.ones(5, 2)
        optimizer.step()
        save_state_tree(source, {"step": 3, "optimizer": optimizer.state_dict()})
        load = load_state_tree
    rng = random.Random(0)
    target = tmp_path / "mutated.safetensors"
    outcomes = {"loaded": 0, "refused": 0}
    for data in _mutations(source.read_bytes(), rng):
        target.write_bytes(data)
        try:
            load(target)
            outcomes["loaded"] += 1
        except ArtifactError as error:
            assert "\n" not in str(error)
            outcomes["refused"] += 1
    assert outcomes["refused"] > 100 and sum(outcomes.values()) > 250
