"""Configuration of the ``styletalker`` recipe: data, model, the three stages, and the loop.

The stages run in order on one step counter: ``sync.steps`` of the
contrastive lip-sync discriminator, ``generator.steps`` of the generator and
encoders (reconstruction + the frozen discriminator's loss), ``motion.steps``
of the motion VAE and its prior. The paper's baselines are config keys:

* ``generator.lip_weight=0``: no sync loss (reconstruction only);
* ``model.prior=gaussian``: the Gaussian autoregressive prior in the VAE's KL
  instead of the flow (both priors are always fitted to the same motion
  latents, so either can be sampled from and scored; ``prior`` decides which
  one shapes the latents and is used by default);
* the static baseline needs no training (``Talker.generate(static=True)``).
"""

from __future__ import annotations

import dataclasses

from mltk.core.sections import LoopSettings, OptimizerSettings, check_values
from mltk.engines.talk.generator import generator_levels
from mltk.engines.talk.model import TalkerSpec


@dataclasses.dataclass(frozen=True)
class TalkingDataSpec:
    name: str = "talking-head"  # talking-head (the shared clips) or video-folder:PATH (a folder of mp4 files)
    held_out_speakers: int = 1  # speakers kept out of training, for one-shot evaluation
    alignment: str = "mediapipe"  # mediapipe: detect, align and crop every frame; none: frames already aligned
    cache_dir: str = ""  # where prepared clips are cached; empty = the data loader's default

    def value_problems(self) -> list[str]:
        return check_values(self, {"held_out_speakers": "non-negative"})


@dataclasses.dataclass(frozen=True)
class SyncStageSpec:
    steps: int = 300
    batch_size: int = 32  # (mouth, window) anchors per step, global
    negatives: int = 8  # time-shifted windows per anchor
    min_shift: int = 3  # frames (120 ms) at least between an anchor and its negatives
    lr: float = 3e-4  # Adam, this stage only (Wav2Lip trains its SyncNet at 1e-4, below its generator's rate)

    def value_problems(self) -> list[str]:
        return check_values(self, {"steps": "non-negative", "batch_size": "positive", "negatives": "positive",
                                   "min_shift": "positive", "lr": "positive"})


@dataclasses.dataclass(frozen=True)
class GeneratorStageSpec:
    steps: int = 600
    batch_size: int = 16  # frames per step, global
    lip_weight: float = 0.1  # weight of the frozen sync discriminator's loss; 0 = the no-sync-loss baseline
    lip_warmup: int = 100  # steps over which lip_weight ramps up from 0 (Wav2Lip users' advice: schedule it)

    def value_problems(self) -> list[str]:
        return check_values(self, {"steps": "non-negative", "batch_size": "positive", "lip_weight": "non-negative",
                                   "lip_warmup": "non-negative"})


@dataclasses.dataclass(frozen=True)
class MotionStageSpec:
    steps: int = 400
    batch_size: int = 4  # sequences per step, global
    seq_len: int = 16  # frames per sequence
    kl_weight: float = 0.01
    latent_weight: float = 1.0  # ||w_id + Δ_mot(m) - E(mask(x_t))||^2
    reconstruction_weight: float = 1.0  # L1 of the frames rendered through the frozen generator

    def value_problems(self) -> list[str]:
        return check_values(self, {"steps": "non-negative", "batch_size": "positive", "seq_len": "positive",
                                   "kl_weight": "non-negative", "latent_weight": "non-negative",
                                   "reconstruction_weight": "non-negative"})


@dataclasses.dataclass(frozen=True)
class ModelSpec(TalkerSpec):
    def value_problems(self) -> list[str]:
        problems = check_values(self, {name: "positive" for name in (
            "w_dim", "base_channels", "max_channels", "audio_dim", "motion_dim", "hidden", "flow_layers",
            "mouth_size", "sync_dim", "sync_channels", "sync_temperature")})
        try:
            generator_levels(self.resolution)
        except ValueError as error:
            problems.append(f"resolution: {error}")
        if self.motion_dim < 2:
            problems.append("motion_dim: the flow prior needs at least 2")
        return problems

    def talker_spec(self) -> TalkerSpec:
        return TalkerSpec(**dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True)
class OptimSpec(OptimizerSettings):
    lr: float = 1e-3  # Adam, the generator and motion stages (the sync stage has sync.lr)
    grad_clip: float = 1.0


@dataclasses.dataclass(frozen=True)
class TrainSpec(LoopSettings):
    log_every: int = 50

    def value_problems(self) -> list[str]:
        return super().value_problems() + check_values(self, {"log_every": "positive"})


@dataclasses.dataclass(frozen=True)
class StyleTalkerConfig:
    name: str = ""  # artifact name; empty = styletalker
    seed: int = 0
    device: str = "auto"
    data: TalkingDataSpec = dataclasses.field(default_factory=TalkingDataSpec)
    model: ModelSpec = dataclasses.field(default_factory=ModelSpec)
    sync: SyncStageSpec = dataclasses.field(default_factory=SyncStageSpec)
    generator: GeneratorStageSpec = dataclasses.field(default_factory=GeneratorStageSpec)
    motion: MotionStageSpec = dataclasses.field(default_factory=MotionStageSpec)
    optim: OptimSpec = dataclasses.field(default_factory=OptimSpec)
    train: TrainSpec = dataclasses.field(default_factory=TrainSpec)
    eval_frames: int = 200  # held-out frames scored at the end of training (0 = skip)

    recipe = "styletalker"

    def artifact_name(self) -> str:
        return self.name or self.recipe
