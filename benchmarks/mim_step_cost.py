"""One training-step variant, timed in this (fresh) process: prints one JSON line.

Variants (ViT-Tiny 192 x 12, patch 4 on 32 px images = 64 patches, decoder 128 x 2, mask 0.75,
norm-pix loss, AdamW; the same random images every step):

* ``mae``:          mltk's MAE step (mltk.nn.encoders.mae): forward on the 16 visible patches, decoder, loss.
* ``rc-mae``:       + the EMA teacher's forward on the SAME visible patches (no gradient), the
                    consistency loss, and the EMA update of every teacher parameter.
* ``full-teacher``: self-distillation whose teacher encodes EVERY patch, as iBOT / data2vec-style
                    methods do: the EMA teacher encodes all 64 patches (+[CLS]); a linear head on the
                    student's decoder regresses the teacher's token features at the masked positions
                    (data2vec's target, final layer only), on top of the MAE loss; EMA update.
* ``hf-vitmae``:    Hugging Face transformers' ViTMAEForPreTraining at the same width, depth, heads,
                    patch size, decoder and mask ratio, built from a config (no download), SDPA
                    attention, its own random masking, loss and AdamW step.

Time: median of ``--steps`` steps after 2 warm-up steps. Memory: peak RSS of the process (VmHWM),
the growth of RSS over the timed steps' starting point, and the bytes autograd saved for backward
in one step (activation memory, independent of the allocator).

``--interleave A,B,...`` times several variants side by side in ONE process instead: after two
warm-up steps each, every round times one step of each variant (the order rotating from round to
round), so a change in the machine's load hits all of them alike; it reports each variant's median
and the median over rounds of each variant's time divided by the first one's. Its memory figures
are not per variant (one process holds them all): take those from the single-variant runs.

    python benchmarks/mim_step_cost.py --variant rc-mae --batch 256 --steps 10
    python benchmarks/mim_step_cost.py --interleave mae,hf-vitmae --batch 64 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from mltk.nn.encoders.mae import (
    build_mae,
    ema_copy,
    ema_update,
    masked_patch_mse,
    random_permutation,
    visible_patches,
)

WIDTH, DEPTH, HEADS, PATCH, SIZE = 192, 12, 3, 4, 32
DECODER = {"width": 128, "depth": 2, "heads": 4}
MASK_RATIO, LR, MOMENTUM = 0.75, 1e-3, 0.996


def rss_mib(field: str) -> float:
    """VmRSS (now) or VmHWM (peak) of this process in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


class SavedBytes:
    """Sum of the distinct activation tensors autograd saves for backward inside the context (weights excluded)."""

    def __init__(self, parameters):
        self.weights = {p.untyped_storage().data_ptr() for p in parameters}
        self.seen: dict[int, int] = {}

    def pack(self, tensor: torch.Tensor):
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in self.weights:
            self.seen[pointer] = tensor.untyped_storage().nbytes()
        return tensor

    def __enter__(self):
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc):
        self.hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.seen.values()) / 2**20


def mltk_model():
    return build_mae({"encoder": {"arch": "vit", "args": {"in_channels": 3, "image_size": SIZE, "patch_size": PATCH,
                                                          "width": WIDTH, "depth": DEPTH, "heads": HEADS}},
                      "decoder": DECODER, "mask_ratio": MASK_RATIO, "norm_pix_loss": True, "mean": None,
                      "std": None})


def make_step(variant: str, batch: int):
    """(step function, trained parameter count, every parameter) of ``variant``; the step returns the loss."""
    images = torch.rand(batch, 3, SIZE, SIZE)
    if variant == "hf-vitmae":
        from transformers import ViTMAEConfig, ViTMAEForPreTraining

        config = ViTMAEConfig(image_size=SIZE, patch_size=PATCH, num_channels=3, hidden_size=WIDTH,
                              num_hidden_layers=DEPTH, num_attention_heads=HEADS, intermediate_size=4 * WIDTH,
                              decoder_hidden_size=DECODER["width"], decoder_num_hidden_layers=DECODER["depth"],
                              decoder_num_attention_heads=DECODER["heads"],
                              decoder_intermediate_size=4 * DECODER["width"], mask_ratio=MASK_RATIO,
                              norm_pix_loss=True, attn_implementation="sdpa")
        model = ViTMAEForPreTraining(config).train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR, betas=(0.9, 0.95))

        def step():
            loss = model(pixel_values=images).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            return loss

        return step, sum(p.numel() for p in model.parameters() if p.requires_grad), list(model.parameters())

    student = mltk_model().train()
    trained = [student]
    teacher = ema_copy(student) if variant != "mae" else None
    head = None
    if variant == "full-teacher":
        head = torch.nn.Linear(DECODER["width"], WIDTH)
        trained.append(head)
    params = [p for module in trained for p in module.parameters()]
    optimizer = torch.optim.AdamW(params, lr=LR, betas=(0.9, 0.95))
    num_patches = student.num_patches

    def step():
        ids = random_permutation(batch, num_patches)
        if variant == "mae":
            loss = student(images, ids).loss
        elif variant == "rc-mae":
            out = student(images, ids)
            with torch.no_grad():
                teacher_pred = teacher.predict(images, ids)
            loss = out.loss + masked_patch_mse(out.pred, teacher_pred, out.mask)
        else:
            normalized = student.normalize(images)
            view = visible_patches(ids, MASK_RATIO)
            latent = student.encoder.encode(normalized, view.keep)
            decoded = _decoder_tokens(student.decoder, latent, view.restore)
            mae_loss = masked_patch_mse(student.decoder.pred(decoded), student.target(normalized), view.mask)
            with torch.no_grad():
                target = teacher.encoder.encode(normalized)[:, 1:]  # every patch: [B, L, D]
            per_patch = F.mse_loss(head(decoded), target, reduction="none").mean(-1)
            loss = mae_loss + (per_patch * view.mask).sum() / view.mask.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if teacher is not None:
            ema_update(teacher, student, MOMENTUM)
        return loss

    every = params + (list(teacher.parameters()) if teacher is not None else [])
    return step, sum(p.numel() for p in params), every


def _decoder_tokens(decoder, latent: torch.Tensor, restore: torch.Tensor) -> torch.Tensor:
    """The MAE decoder up to its final norm: [B, L, decoder width] (the full-teacher variant's head reads these)."""
    x = decoder.embed(latent)
    batch, visible, width = x.shape
    fill = decoder.mask_token.expand(batch, restore.shape[1] + 1 - visible, -1)
    patches = torch.cat([x[:, 1:], fill], dim=1).gather(1, restore[..., None].expand(-1, -1, width))
    x = torch.cat([x[:, :1], patches], dim=1) + decoder.pos_embed
    for block in decoder.blocks:
        x = block(x)
    return decoder.norm(x)[:, 1:]


VARIANTS = ("mae", "rc-mae", "full-teacher", "hf-vitmae")


def interleaved(variants: list[str], batch: int, rounds: int) -> dict:
    """Seconds per step of each variant, timed in alternation within one process."""
    steps = {name: make_step(name, batch)[0] for name in variants}
    for _ in range(2):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_index in range(rounds):
        shift = round_index % len(variants)
        for name in variants[shift:] + variants[:shift]:
            started = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - started)
    first = variants[0]
    return {"interleaved": variants, "batch": batch, "rounds": rounds,
            "median_step_s": {name: statistics.median(t) for name, t in times.items()},
            "step_s": {name: [round(x, 4) for x in t] for name, t in times.items()},
            f"ratio_to_{first}": {name: round(statistics.median(a / b for a, b in zip(t, times[first], strict=True)), 4)
                                 for name, t in times.items()},
            "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--variant", choices=VARIANTS)
    parser.add_argument("--interleave", help="comma-separated variants timed side by side in this process")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (rounds, with --interleave)")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.interleave:
        variants = args.interleave.split(",")
        unknown = [v for v in variants if v not in VARIANTS]
        if unknown or len(set(variants)) != len(variants):
            parser.error(f"--interleave: distinct variants out of {', '.join(VARIANTS)}, got {args.interleave}")
        print(json.dumps(interleaved(variants, args.batch, args.steps)))
        return
    if not args.variant:
        parser.error("one of --variant or --interleave is required")
    step, trained_params, parameters = make_step(args.variant, args.batch)
    rss_before = rss_mib("VmRSS")
    with SavedBytes(parameters) as saved:
        step()
    step()  # second warm-up step: the optimizer state exists from here on
    times = []
    for _ in range(args.steps):
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    print(json.dumps({"variant": args.variant, "batch": args.batch, "trained_parameters": trained_params,
                      "median_step_s": statistics.median(times), "step_s": [round(t, 4) for t in times],
                      "saved_for_backward_mib": round(saved.mib, 1), "peak_rss_mib": round(rss_mib("VmHWM"), 1),
                      "rss_growth_mib": round(rss_mib("VmHWM") - rss_before, 1),
                      "threads": torch.get_num_threads(), "load_average": [round(x, 2) for x in os.getloadavg()]}))


if __name__ == "__main__":
    main()
