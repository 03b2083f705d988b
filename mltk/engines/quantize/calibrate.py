"""Measuring what a layer is about to see: the statistics its quantizers are set from.

Called by the schedule when layers start being quantized, after their input
quantizers are on and the layers below are already quantized, so that each
layer's transform describes the inputs it really gets in the quantized
network (BiTAT's bottom-up order). For every layer in ``layers``:

* binary weights under a PCA or learned transform: the second moment
  E[q(x) q(x)^T] of its quantized inputs, in the layer's row layout;
* uniform input quantizers: mean and largest |x| of the raw inputs, which
  set the quantizer's step (LSQ's initial value, or the full range for
  8-bit post-training).

The model runs in eval mode on a fixed set of training images. Under data
parallelism every rank measures its share and the sums are added.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mltk.core.distributed import DistInfo, all_reduce_sum
from mltk.engines.quantize.layers import QuantizedLayer
from mltk.engines.quantize.quantizers import UniformActivationQuantizer
from mltk.engines.quantize.transforms import BinaryWeightQuantizer, input_second_moment


def _needs_moment(layer: QuantizedLayer) -> bool:
    quantizer = layer.weight_quantizer
    return isinstance(quantizer, BinaryWeightQuantizer) and quantizer.transform.kind != "identity"


def _needs_range(layer: QuantizedLayer) -> bool:
    return isinstance(layer.act_quantizer, UniformActivationQuantizer)


@torch.no_grad()
def calibrate_layers(model: torch.nn.Module, layers: list[QuantizedLayer], images: Tensor, *, batch_size: int,
                     device: torch.device, dist: DistInfo | None = None, learn_step: bool = True) -> None:
    """Set the transforms and activation steps of ``layers`` from ``images`` (uint8 [N, C, H, W])."""
    dist = dist or DistInfo()
    wanted = [layer for layer in layers if _needs_moment(layer) or _needs_range(layer)]
    if not wanted:
        return
    moments: dict[int, list] = {}
    ranges: dict[int, Tensor] = {}

    def hook(layer: QuantizedLayer, args):
        x = args[0]
        key = id(layer)
        if _needs_range(layer):
            stats = torch.stack([x.abs().sum().double(), torch.tensor(float(x.numel()), dtype=torch.float64,
                                                                        device=x.device),
                                 x.abs().max().double()])
            previous = ranges.get(key)
            ranges[key] = stats if previous is None else torch.stack(
                [previous[0] + stats[0], previous[1] + stats[1], torch.maximum(previous[2], stats[2])])
        if _needs_moment(layer):
            quantized = layer.quantize_input(x)
            total, count = input_second_moment(quantized, layer.layer, layer.weight_quantizer.layout)
            if key in moments:
                moments[key][0] += total
                moments[key][1] += count
            else:
                moments[key] = [total, count]

    handles = [layer.register_forward_pre_hook(hook) for layer in wanted]
    was_training = model.training
    model.eval()
    try:
        shard = -(-len(images) // dist.world_size)
        mine = images[dist.rank * shard:(dist.rank + 1) * shard]
        for begin in range(0, len(mine), batch_size):
            model(mine[begin:begin + batch_size].to(device).float().div_(255))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)

    for layer in wanted:
        key = id(layer)
        if _needs_range(layer):
            stats = ranges.get(key, torch.zeros(3, dtype=torch.float64, device=device))
            sums = all_reduce_sum(stats[:2].clone(), dist)
            peak = stats[2:].clone()
            if dist.enabled:
                torch.distributed.all_reduce(peak, op=torch.distributed.ReduceOp.MAX)
            layer.act_quantizer.calibrate(mean_abs=float(sums[0] / sums[1].clamp_min(1)),
                                          max_abs=float(peak[0]), learn_step=learn_step)
        if _needs_moment(layer):
            total, count = moments.get(key, [None, 0])
            transform = layer.weight_quantizer.transform
            if total is None:
                G, d = transform.basis.shape[0], transform.basis.shape[1]
                total = torch.zeros(G, d, d, dtype=torch.float64, device=device)
            count_t = torch.tensor(float(count), dtype=torch.float64, device=device)
            all_reduce_sum(total, dist)
            all_reduce_sum(count_t, dist)
            transform.set_statistics(total / count_t.clamp_min(1))
