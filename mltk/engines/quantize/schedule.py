"""When each layer's inputs and weights become quantized: the methods' training schedules.

A schedule is a list of phases covering steps [0, total). A phase names the
layers (indices into the plan's bottom-up order) whose inputs and whose
weights are quantized from its first step on; sets only grow. Every method
trains for the same total number of steps; the learning rate follows a
cosine within each phase (ReActNet restarts it for its second step, BiTAT
for each stage).

* ``all-at-once`` (XNOR-Net, uniform QAT): one phase, everything quantized.
* ``two-step`` (ReActNet): inputs binarized with float weights for
  ``step1_fraction`` of the steps, then weights too.
* ``progressive`` (BiTAT): the layers split into ``stages`` contiguous groups
  from the bottom; stage k quantizes groups 0..k (inputs and weights) for an
  equal share of ``progressive_fraction`` of the steps; a final phase trains
  the whole quantized network for the rest.

Any of them may start with a float adaptation phase (``train.adapt_epochs``,
``with_adaptation``): the float shortcuts of every binary-input layer on and
every quantizer off, so the float network learns to compute with its
shortcuts before the method's own phases (shifted after it) quantize it.
The shortcuts then stay on.

Everything is a pure function of the config and the step, so a resumed run
knows its phase without saved state.
"""

from __future__ import annotations

import dataclasses
import math

SCHEDULES = ("all-at-once", "two-step", "progressive")
ADAPT_LABEL = "adapting to float shortcuts"


@dataclasses.dataclass(frozen=True)
class Phase:
    start: int  # first step
    end: int  # one past the last step
    act_layers: tuple[int, ...]  # layers with quantized inputs during this phase
    weight_layers: tuple[int, ...]  # layers with quantized weights during this phase
    label: str
    adapt: bool = False  # the float adaptation phase: shortcuts on, no quantizer

    @property
    def steps(self) -> int:
        return self.end - self.start


def layer_groups(num_layers: int, stages: int) -> list[tuple[int, ...]]:
    """``num_layers`` indices split bottom-up into ``stages`` contiguous groups (0 = one per layer)."""
    stages = num_layers if stages <= 0 else min(stages, num_layers)
    bounds = [round(i * num_layers / stages) for i in range(stages + 1)]
    return [tuple(range(bounds[i], bounds[i + 1])) for i in range(stages)]


def build_phases(kind: str, *, num_layers: int, total_steps: int, stages: int = 0,
                 progressive_fraction: float = 0.5, step1_fraction: float = 0.5,
                 binary_inputs: bool = True) -> list[Phase]:
    """The phases of schedule ``kind`` over ``total_steps`` (phases may be 0 steps long)."""
    everything = tuple(range(num_layers))
    if kind == "all-at-once" or (kind == "two-step" and not binary_inputs):
        return [Phase(0, total_steps, everything, everything, "all layers quantized")]
    if kind == "two-step":
        switch = int(round(step1_fraction * total_steps))
        return [Phase(0, switch, everything, (), "step 1: binary activations, float weights"),
                Phase(switch, total_steps, everything, everything, "step 2: binary activations and weights")]
    if kind != "progressive":
        raise ValueError(f"unknown schedule {kind!r}; expected one of {SCHEDULES}")
    groups = layer_groups(num_layers, stages)
    progressive_steps = int(math.floor(progressive_fraction * total_steps))
    phases, done = [], ()
    for index, group in enumerate(groups):
        start = index * progressive_steps // len(groups)
        end = (index + 1) * progressive_steps // len(groups)
        done = done + group
        phases.append(Phase(start, end, done, done, f"stage {index + 1}/{len(groups)}"))
    phases.append(Phase(progressive_steps, total_steps, everything, everything, "all layers quantized"))
    return phases


def with_adaptation(phases: list[Phase], adapt_steps: int) -> list[Phase]:
    """``phases`` shifted by ``adapt_steps``, after a float adaptation phase of that length (none for 0)."""
    if adapt_steps <= 0:
        return list(phases)
    shifted = [dataclasses.replace(p, start=p.start + adapt_steps, end=p.end + adapt_steps) for p in phases]
    return [Phase(0, adapt_steps, (), (), ADAPT_LABEL, adapt=True)] + shifted


def split_steps(adapt_steps: int, method_steps: int, max_steps: int) -> tuple[int, int]:
    """(adaptation steps, method steps) within ``max_steps`` (0 = no cap), both shrunk in proportion."""
    total = adapt_steps + method_steps
    if not max_steps or total <= max_steps:
        return adapt_steps, method_steps
    adapt = int(round(adapt_steps * max_steps / total))
    return adapt, max_steps - adapt


def phase_at(phases: list[Phase], step: int) -> int:
    """Index of the phase that ``step`` belongs to (the last one for step >= total)."""
    for index, phase in enumerate(phases):
        if phase.start <= step < phase.end:
            return index
    return len(phases) - 1


def phase_lr(phase: Phase, step: int, base_lr: float, schedule: str) -> float:
    """Learning rate at ``step``: cosine from ``base_lr`` to 0 within the phase, or constant."""
    if schedule == "constant" or phase.steps <= 1:
        return base_lr
    progress = (step - phase.start) / phase.steps
    return base_lr * 0.5 * (1.0 + math.cos(math.pi * progress))
