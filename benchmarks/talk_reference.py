"""The minimal reference for the talk engine's fidelity: is the generator the limit, or the data?

    MLTK_DATA=/work/shared/data OMP_NUM_THREADS=2 python benchmarks/talk_reference.py [--cache DIR] [--steps 400]

Trains two auto-encoders on the training speakers' aligned 64 px frames at the
CPU preset's generator budget (batch 8, Adam 1e-3, L1, grad-clip 1.0, the
preset's channels) and scores PSNR on the held-out speaker's clip and on every
7th training frame:

* ``style``: the engine's own ``ImageEncoder`` -> W+ -> ``StyleGenerator``
  (what the generator stage's auto-encoding term trains);
* ``plain``: the same encoder, then a plain upsampling conv decoder of the same
  widths (no modulation, no W+): the simplest independent implementation.

If the plain decoder reached the held-out face and the style one did not, the
generator would be the defect. Prints one line per model.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from mltk.engines.talk import data as talk_data
from mltk.engines.talk.encoders import ImageEncoder, to_unit_range
from mltk.engines.talk.generator import StyleGenerator, level_channels, num_latents

RESOLUTION, W_DIM, BASE, MAXIMUM = 64, 64, 8, 32  # mltk/presets/styletalker/cpu.yaml


def psnr(images: torch.Tensor, target: torch.Tensor) -> float:
    """Mean per-frame PSNR of images in [-1, 1] (range 2)."""
    mse = (images - target).pow(2).mean(dim=(1, 2, 3))
    return float((10 * torch.log10(4 / mse)).mean())


class PlainDecoder(nn.Module):
    """latent [B, num_ws, w_dim] -> images: linear to 4x4, then (bilinear x2, conv3x3, conv3x3) per level."""

    def __init__(self, latent: int):
        super().__init__()
        channels = level_channels(RESOLUTION, BASE, MAXIMUM)
        self.first = channels[0]
        self.project = nn.Linear(latent, channels[0] * 16)
        layers, previous = [], channels[0]
        for level, width in enumerate(channels):
            if level > 0:
                layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
            layers += [nn.Conv2d(previous, width, 3, padding=1), nn.LeakyReLU(0.2),
                       nn.Conv2d(width, width, 3, padding=1), nn.LeakyReLU(0.2)]
            previous = width
        layers.append(nn.Conv2d(previous, 3, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(self.project(latent.flatten(1)).view(-1, self.first, 4, 4))


def run(kind: str, train: torch.Tensor, held: torch.Tensor, steps: int, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    num_ws = num_latents(RESOLUTION)
    encoder = ImageEncoder(RESOLUTION, num_ws, w_dim=W_DIM, base_channels=BASE, max_channels=MAXIMUM)
    decoder = (StyleGenerator(RESOLUTION, w_dim=W_DIM, base_channels=BASE, max_channels=MAXIMUM) if kind == "style"
               else PlainDecoder(num_ws * W_DIM))
    parameters = [*encoder.parameters(), *decoder.parameters()]
    optimizer = torch.optim.Adam(parameters, lr=1e-3)
    draws = torch.Generator().manual_seed(seed)
    started = time.perf_counter()
    for _ in range(steps):
        frames = train[torch.randint(len(train), (8,), generator=draws)]
        loss = F.l1_loss(decoder(encoder(frames)), frames)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        optimizer.step()
    seconds = time.perf_counter() - started
    with torch.no_grad():
        return {"model": kind, "steps": steps, "held_out_psnr": round(psnr(decoder(encoder(held)), held), 2),
                "train_psnr": round(psnr(decoder(encoder(train[::7])), train[::7]), 2),
                "seconds": round(seconds, 1), "parameters": sum(p.numel() for p in parameters)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", default="", help="the talk data cache (default: the data loader's)")
    parser.add_argument("--steps", type=int, default=400, help="the cpu preset's generator steps")
    args = parser.parse_args()
    loaded = talk_data.load_talking_data("talking-head", size=RESOLUTION, cache_dir=args.cache or None)
    train = torch.cat([to_unit_range(clip.faces) for clip in loaded.train])
    held = torch.cat([to_unit_range(clip.faces) for clip in loaded.held_out])
    mean_face = held.mean(0, keepdim=True).expand_as(held)
    print({"held_out_frames": len(held), "held_out_first_frame_psnr": round(psnr(held[:1].expand_as(held[1:]),
                                                                                   held[1:]), 2),
           "held_out_own_mean_face_psnr": round(psnr(mean_face, held), 2)})
    for kind in ("style", "plain"):
        print(run(kind, train, held, args.steps))


if __name__ == "__main__":
    main()
