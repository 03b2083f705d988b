"""``mltk train styletalker``: the lip-sync discriminator, then the generator and encoders, then motion.

One step counter runs three stages in order (``config.py``)::

    sync       mouths of real frames vs their aligned and time-shifted mel windows: InfoNCE
    generator  G(E(x_t)) ~ x_t  and  G(E(mask(x_t)) + Δ_lip(a_t, w_id)) ~ x_t  (L1), plus the frozen
               discriminator's InfoNCE on the generated mouth (weight ramped up over lip_warmup steps)
    motion     the conditional sequential VAE on sequences of seq_len frames, G, E and Δ_lip frozen; the
               MC KL against model.prior, the other prior fitted to the same latents

Each stage has its own Adam (checkpointed by name) and trains only its own
parameters (``StyleTalkerModel.train_only``). A step's frames, windows and
negatives, and the posterior's noise, are drawn from generators seeded by
(seed, step), the whole global batch on every rank, each rank taking its
slice. So a resumed run ends bit-identical (on CPU) to
an uninterrupted one, and the losses are means of per-sample terms (negatives
come from the sample's own clip), which DDP's gradient averaging keeps equal to
one process's.
"""

from __future__ import annotations

import time

import torch

from mltk.core.catalog import register_recipe
from mltk.core.errors import UsageError
from mltk.core.loop import OneModelTask, StepLoop, StepOutput
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator, seed_everything
from mltk.data.batches import per_rank_batch
from mltk.engines.talk import metrics
from mltk.engines.talk.artifact import talker_artifact
from mltk.engines.talk.config import StyleTalkerConfig
from mltk.engines.talk.data import TalkingClip, load_talking_data
from mltk.engines.talk.inference import clip_faces
from mltk.engines.talk.model import STAGES, StyleTalkerModel, mouth_region
from mltk.engines.talk.sync_discriminator import shifted_frames

PRIMARY_METRIC = "held_out_sync_accuracy"
# Purposes of the seeded generators, so no two draws of a step share a stream.
_FRAMES, _NEGATIVES, _REFERENCES, _SEQUENCES, _POSTERIOR = 1, 2, 3, 4, 5


class ClipBank:
    """The training clips as tensors, and the seeded draws of frames and sequences from them."""

    def __init__(self, clips: list[TalkingClip], resolution: int):
        self.clips = clips
        self.resolution = resolution
        self.lengths = torch.tensor([clip.num_frames for clip in clips])

    def faces(self, clip: int, frames: torch.Tensor) -> torch.Tensor:
        return clip_faces(self.clips[clip].faces[frames], self.resolution)

    def frames(self, count: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip index, frame index) [count] each: frames uniformly over all training frames."""
        flat = torch.randint(int(self.lengths.sum()), (count,), generator=gen)
        ends = self.lengths.cumsum(0)
        clips = torch.searchsorted(ends, flat, right=True)
        return clips, flat - (ends[clips] - self.lengths[clips])

    def sequences(self, count: int, length: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(clip, first frame) [count] of windows of ``length`` frames, clips as likely as their windows."""
        windows = (self.lengths - length + 1).clamp(min=0)
        flat = torch.randint(int(windows.sum()), (count,), generator=gen)
        ends = windows.cumsum(0)
        clips = torch.searchsorted(ends, flat, right=True)
        return clips, flat - (ends[clips] - windows[clips])

    def references(self, clips: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """A random frame of each clip: [count]."""
        return (torch.rand(clips.shape[0], generator=gen) * self.lengths[clips]).long()


@register_recipe("styletalker", config=StyleTalkerConfig, default_preset="cpu",
                 description="StyleTalker: one-shot audio-driven talking heads (arXiv 2208.10922); "
                             "used by `mltk talk`")
class StyleTalkerRecipe(OneModelTask):
    def __init__(self, cfg: StyleTalkerConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx
        self._stage: str | None = None

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        spec = cfg.model.talker_spec()
        d = cfg.data
        data = load_talking_data(d.name, size=spec.resolution, held_out_speakers=d.held_out_speakers,
                                 alignment=d.alignment, cache_dir=d.cache_dir or None,
                                 warn=ctx.reporter.warn, progress=ctx.reporter.info)
        self.held_out = data.held_out
        usable = [clip for clip in data.train if clip.num_frames > max(cfg.sync.min_shift, 1)]
        if not usable:
            raise UsageError(f"{d.name}: every training clip is shorter than sync.min_shift "
                             f"({cfg.sync.min_shift} frames)", hint="use longer clips or lower sync.min_shift")
        self.bank = ClipBank(usable, spec.resolution)
        if cfg.motion.steps and int(self.bank.lengths.max()) < cfg.motion.seq_len:
            raise UsageError(f"{d.name}: no training clip has motion.seq_len={cfg.motion.seq_len} frames "
                             f"(longest: {int(self.bank.lengths.max())})", hint="lower motion.seq_len")
        frames = int(self.bank.lengths.sum())
        ctx.reporter.info(f"data: {d.name}: {len(usable)} training clips ({frames} frames, speakers "
                          f"{', '.join(data.train_speakers)}); held out: {len(self.held_out)} clips "
                          f"({', '.join(data.held_out_speakers) or 'none'}); faces at {spec.resolution} px")
        self.model = StyleTalkerModel(spec).to(ctx.device)
        self.boundaries = [cfg.sync.steps, cfg.sync.steps + cfg.generator.steps,
                           cfg.sync.steps + cfg.generator.steps + cfg.motion.steps]
        self.total_steps = self.boundaries[-1]
        self._optimizers = {stage: torch.optim.Adam(
            [p for module in self.model.stage_modules(stage) for p in module.parameters()],
            lr=cfg.sync.lr if stage == "sync" else cfg.optim.lr, betas=(0.5, 0.999),
            weight_decay=cfg.optim.weight_decay) for stage in STAGES}
        self.seconds = {stage: 0.0 for stage in STAGES}
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="train", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)

    def stage_at(self, step: int) -> str:
        return next(stage for stage, end in zip(STAGES, self.boundaries, strict=True) if step < end)

    # ------------------------------------------------------------ the loop's StepTask

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return self._optimizers

    def optimizer_at(self, step: int) -> str:
        return self.stage_at(step)

    def before_step(self, step: int, bar) -> bool:
        self._step_started = time.perf_counter()
        stage = self.stage_at(step)
        if stage == self._stage:
            return False
        self._stage = stage
        self.model.train_only(stage)
        self.ctx.reporter.info(f"stage {stage}: steps {step + 1}-{self.boundaries[STAGES.index(stage)]}")
        return True  # other parameters train now: DDP must be built again

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        stage = self.stage_at(step)
        batch = self._batch(stage, step)
        loss, stats = module(stage, batch, self._weights(step))
        return StepOutput(loss, stats, count=int(batch["frames"].shape[0]))

    def after_step(self, step: int) -> dict[str, float]:
        self.seconds[self.stage_at(step)] += time.perf_counter() - self._step_started
        return {}

    def _weights(self, step: int) -> dict:
        g, m = self.cfg.generator, self.cfg.motion
        into = step - self.boundaries[0]
        ramp = min(1.0, (into + 1) / g.lip_warmup) if g.lip_warmup else 1.0
        return {"lip": g.lip_weight * ramp, "latent": m.latent_weight, "kl": m.kl_weight,
                "reconstruction": m.reconstruction_weight}

    def _slice(self, count: int) -> slice:
        dist = self.ctx.dist
        local = per_rank_batch(count, dist.world_size)
        return slice(dist.rank * local, (dist.rank + 1) * local)

    def _batch(self, stage: str, step: int) -> dict:
        cfg, bank, device = self.cfg, self.bank, self.ctx.device
        seed = cfg.seed
        if stage in ("sync", "generator"):
            count = cfg.sync.batch_size if stage == "sync" else cfg.generator.batch_size
            clips, frames = bank.frames(count, generator(seed, step, _FRAMES))
            windows = shifted_frames(frames, bank.lengths[clips], negatives=cfg.sync.negatives,
                                     min_shift=cfg.sync.min_shift, generator=generator(seed, step, _NEGATIVES))
            references = bank.references(clips, generator(seed, step, _REFERENCES))
            mine = self._slice(count)
            clips, frames, windows, references = clips[mine], frames[mine], windows[mine], references[mine]
            batch = {"frames": torch.cat([bank.faces(int(c), f[None]) for c, f in zip(clips, frames, strict=True)]),
                     "mels": torch.stack([bank.clips[int(c)].mels[w] for c, w in zip(clips, windows, strict=True)])}
            if stage == "generator":
                batch["reference"] = torch.cat([bank.faces(int(c), r[None])
                                                for c, r in zip(clips, references, strict=True)])
        else:
            m = cfg.motion
            clips, starts = bank.sequences(m.batch_size, m.seq_len, generator(seed, step, _SEQUENCES))
            references = bank.references(clips, generator(seed, step, _REFERENCES))
            noise = torch.randn(m.batch_size, m.seq_len, self.model.spec.motion_dim,
                                generator=generator(seed, step, _POSTERIOR))
            mine = self._slice(m.batch_size)
            clips, starts, references = clips[mine], starts[mine], references[mine]
            spans = [torch.arange(int(s), int(s) + m.seq_len) for s in starts]
            batch = {"frames": torch.stack([bank.faces(int(c), span) for c, span in zip(clips, spans, strict=True)]),
                     "mels": torch.stack([bank.clips[int(c)].mels[span] for c, span in zip(clips, spans, strict=True)]),
                     "reference": torch.cat([bank.faces(int(c), r[None])
                                             for c, r in zip(clips, references, strict=True)]),
                     "posterior_noise": noise[mine]}
        return {key: value.to(device) for key, value in batch.items()}

    def log_due(self, done: int) -> bool:
        return done % self.cfg.train.log_every == 0 or done in self.boundaries

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        stage = self.stage_at(done - 1)
        return f"{stage} step {done}/{self.total_steps}", {"stage": stage, "lr": lr,
                                                           **{f"train_{k}": v for k, v in means.items()}}

    def progress_fields(self, step: int) -> dict:
        return {"stage": self.stage_at(step)}

    def checkpoint_due(self, done: int) -> bool:
        return done in self.boundaries[:-1]  # the end of a stage is a natural place to resume from

    def model_state(self) -> dict[str, torch.Tensor]:
        return {key: value.detach().cpu() for key, value in self.model.state_dict().items()}

    def trainer_state(self) -> dict:
        return {"seconds": dict(self.seconds)}

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.model.load_state_dict(model_state)
        self.seconds.update(trainer_state.get("seconds") or {})

    # ------------------------------------------------------------ results

    @torch.no_grad()
    def evaluate(self) -> dict:
        cfg = self.cfg
        results = {"stage_seconds": {k: round(v, 3) for k, v in self.seconds.items()},
                   "held_out_clips": len(self.held_out)}
        clips = self.held_out
        if not clips or not cfg.eval_frames:
            results[PRIMARY_METRIC] = None
            return results
        from mltk.engines.talk.api import Talker  # the same code path users and the protocol run

        self.model.eval()
        talker = Talker(self.model, source="training run", card={})
        budget = cfg.eval_frames
        accuracy, scored, nll, psnr, ssim = [], 0, {kind: [] for kind in self.model.priors}, [], []
        for clip in clips:
            if budget <= 0:
                break
            part = _first_frames(clip, budget)
            budget -= part.num_frames
            accuracy.append(self._sync_accuracy(part) * part.num_frames)
            scored += part.num_frames
            if part.num_frames < 2:
                continue
            for kind in nll:
                nll[kind].append(talker.motion_nll(part, prior=kind))
            reconstructed = talker.reconstruct(part)
            target = clip_faces(part.faces, self.model.spec.resolution).add(1).mul(127.5).round().clamp(0, 255)
            target = target.permute(0, 2, 3, 1)
            # The frames after the source one, as the talk protocol scores them.
            psnr.append(metrics.psnr(reconstructed[1:].float(), target[1:]))
            ssim.append(metrics.ssim(reconstructed[1:].float(), target[1:]))
        self.model.train()
        results[PRIMARY_METRIC] = sum(accuracy) / max(scored, 1)
        results["held_out_psnr"] = sum(psnr) / len(psnr) if psnr else None
        results["held_out_ssim"] = sum(ssim) / len(ssim) if ssim else None
        for kind, values in nll.items():
            results[f"held_out_motion_nll_{kind}"] = sum(values) / len(values) if values else None
        return results

    def _sync_accuracy(self, clip: TalkingClip) -> float:
        """Held-out share of frames whose aligned window the discriminator ranks above its shifted ones."""
        gen = generator(self.cfg.seed, 0, _NEGATIVES)
        frames = torch.arange(clip.num_frames)
        lengths = torch.full_like(frames, clip.num_frames)
        if clip.num_frames <= 2 * self.cfg.sync.min_shift:
            return 0.0
        windows = shifted_frames(frames, lengths, negatives=self.cfg.sync.negatives,
                                 min_shift=self.cfg.sync.min_shift, generator=gen)
        device = self.ctx.device
        faces = clip_faces(clip.faces, self.model.spec.resolution).to(device)
        scores = self.model.sync.scores(mouth_region(faces, self.model.spec.mouth_size), clip.mels[windows].to(device))
        return float((scores.argmax(1) == 0).float().mean())

    def save(self, metrics_: dict) -> ArtifactRecord:
        cfg = self.cfg
        files, card = talker_artifact(
            self.model, recipe=cfg.recipe, config=cfg, metrics=metrics_,
            primary_metric=PRIMARY_METRIC if metrics_.get(PRIMARY_METRIC) is not None else None,
            higher_is_better=True, parent=f"dataset:{cfg.data.name}",
            extra={"run_dir": str(self.ctx.run.path),
                   "data": {"train_speakers": sorted({clip.speaker for clip in self.bank.clips}),
                            "held_out_speakers": sorted({clip.speaker for clip in self.held_out})}})
        return self.ctx.registry.save(cfg.artifact_name(), files=files, card=card)


def _first_frames(clip: TalkingClip, count: int) -> TalkingClip:
    """The clip's first ``count`` frames (all when it is shorter)."""
    if clip.num_frames <= count:
        return clip
    samples = clip.audio.shape[0] * count // clip.num_frames
    return TalkingClip(clip.name, clip.speaker, clip.faces[:count], clip.mels[:count],
                       None if clip.landmarks is None else clip.landmarks[:count], clip.audio[:samples])
