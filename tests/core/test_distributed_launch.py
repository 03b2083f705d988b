"""How mltk's train flags become torchrun's, and the process-group helpers outside torchrun."""

from __future__ import annotations

import torch

from mltk.core import distributed
from mltk.core.distributed import DistInfo, LaunchOptions


def test_single_node_is_standalone():
    args = LaunchOptions(nproc_per_node=4).torchrun_args()
    assert args[0] == "--standalone" and "--nproc-per-node=4" in args
    assert LaunchOptions(nproc_per_node=4).wanted and not LaunchOptions().wanted


def test_multi_node_flags_are_forwarded():
    options = LaunchOptions(nproc_per_node=8, nnodes="2", node_rank=1, rdzv_endpoint="host:29400",
                            rdzv_id="job7", max_restarts=3)
    args = options.torchrun_args()
    assert "--standalone" not in args
    for flag in ("--nproc-per-node=8", "--nnodes=2", "--node-rank=1", "--rdzv-backend=c10d",
                 "--rdzv-endpoint=host:29400", "--rdzv-id=job7", "--max-restarts=3"):
        assert flag in args
    assert options.wanted
    static = LaunchOptions(nproc_per_node=2, nnodes="2", master_addr="10.0.0.1", master_port=29500).torchrun_args()
    assert "--master-addr=10.0.0.1" in static and "--master-port=29500" in static


def test_helpers_are_identities_in_one_process(monkeypatch):
    for var in ("LOCAL_RANK", "WORLD_SIZE", "RANK"):
        monkeypatch.delenv(var, raising=False)
    info = distributed.init("cpu")
    assert info == DistInfo() and info.is_main and not info.enabled
    assert distributed.broadcast_object({"a": 1}, info) == {"a": 1}
    tensor = torch.ones(2)
    assert distributed.all_reduce_sum(tensor, info) is tensor
    assert distributed.any_rank(True, info, torch.device("cpu")) is True
