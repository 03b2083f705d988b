"""Learning-rate and EMA-momentum schedules: pure functions of the step, so nothing needs saving."""

from __future__ import annotations

import math


def learning_rate(step: int, *, total_steps: int, warmup_steps: int, peak: float, minimum: float,
                  schedule: str) -> float:
    """Linear warm-up to ``peak``, then cosine / linear decay to ``minimum`` (or constant) at ``total_steps``.

    MAE's per-iteration half-cycle cosine; the self-distillation scripts' linear decay.
    """
    if step < warmup_steps:
        return peak * (step + 1) / warmup_steps
    if schedule == "constant":
        return peak
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "linear":
        return minimum + (peak - minimum) * (1.0 - progress)
    return minimum + (peak - minimum) * 0.5 * (1.0 + math.cos(math.pi * progress))


def ema_momentum(step: int, *, total_steps: int, start: float, end: float, schedule: str) -> float:
    """The teacher's EMA momentum at global ``step`` (0-based) of ``total_steps``.

    cosine: ``end - (end - start) * (1 + cos(pi * step / total_steps)) / 2``, indexed by
    the global step (DINO's schedule, which RC-MAE intends). The official RC-MAE
    code indexes it with the step *within the epoch*, so its momentum never leaves
    the first epoch's slice (0.996 to within 1e-8 over 1600 epochs):
    ``constant`` reproduces that behaviour.
    """
    if schedule == "constant":
        return start
    return end - (end - start) * 0.5 * (1.0 + math.cos(math.pi * step / max(1, total_steps)))
