"""``mltk eval REF --protocol talk [--data talking-head|video-folder:PATH]``: lip sync, landmarks, fidelity, motion.

A talking-head model is scored on the **held-out speaker** of its data (the
card's data and split, or ``--data``), one-shot: the clip's first frame is the
source face and the clip's own speech drives it. For every held-out clip:

* **LSE-C / LSE-D analogues** (``sync_expert.py``) of the ground truth, of the
  model driven by audio alone (motion from its prior, ``lse_c``), of its
  self-reconstruction (the clip's own motion and audio) and of the static
  baseline (the source face, unmoving). The expert is independent: its own
  architecture, loss and seed, trained on real clips only (``--expert REF``
  to bring one; otherwise it is trained once and cached). By default it sees
  the real video of **every** speaker, the held-out one included (never the
  model's frames): with a handful of speakers, an expert that has never seen
  a face cannot find the sync of that face (benchmarks/results/talk.md), so
  at this scale the model stays one-shot and only the measuring instrument
  has seen the person. The expert may know the ground-truth clip itself, so
  the ground truth's figures are optimistic; models and baselines are all
  compared on frames it has never seen. With many speakers (VoxCeleb2),
  ``--expert-speakers training`` keeps the expert off the held-out speakers
  too. Ground truth sets the ceiling, the static face the floor.
* **LMD**: MediaPipe's 40 lip points, re-detected with ``faces.FaceAnalyzer``
  on the generated frames and on the ground-truth crops (both upscaled to 256
  px first, the same way), mean distance in pixels of the model's crop
  (``metrics.landmark_distance``), over frames where both have a face. ``lmd``
  is the self-reconstruction, where head motion is the clip's own, so the
  distance is the lips'. ``lmd_audio_driven`` and ``lmd_static`` are also
  given. ``lmd_ground_truth`` is the detector's own noise floor: the
  re-detected ground truth against the landmarks found at full resolution
  during preparation.
* **SSIM and PSNR** of the self-reconstruction against the ground truth, and of the static baseline
  (``ssim_static``, ``psnr_static``), on the frames after the source frame: a model that moves the head
  and lips right beats the unmoving face.

Generation adapts the model to the source face first, as ``mltk talk`` does (``adaptation.py``;
``adapt_steps=0`` scores the model as trained).
* **Motion**: the held-out motion NLL under each prior the model has (nats
  per frame), and the spread of sampled motion: the standard deviation across
  ``motion_draws`` draws, and the temporal standard deviation of a draw
  relative to the clip's own (posterior) motion.
* **Speed**: frames per second of audio-driven generation, adapting to the
  source face included (``fps``) and not (``fps_rendering``, the rate long
  audio approaches), and the adaptation's own ``adapt_seconds`` (a fixed cost
  per face); reading and aligning inputs not included.

Figures are averaged over clips, weighted by frames. Per-clip figures and the
expert's own accuracy are in ``details``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from mltk.core.catalog import EvalRequest, EvalResult, register_protocol
from mltk.core.console import Reporter
from mltk.core.errors import UsageError
from mltk.engines.talk import faces, metrics, sync_expert
from mltk.engines.talk.adaptation import Adaptation
from mltk.engines.talk.api import Talker, load_talker
from mltk.engines.talk.data import SAMPLES_PER_FRAME, TalkingClip, load_talking_data

# Crops are upscaled to this side before MediaPipe re-detects their landmarks: small model outputs
# (64 px at the CPU preset) sit below the size the detector was made for.
DETECTION_SIDE = 256


@dataclasses.dataclass(frozen=True)
class TalkOptions:
    expert: str = ""  # a sync-expert artifact (registry reference, folder or .safetensors); empty: train one, cached
    expert_steps: int = sync_expert.ExpertTraining.steps  # steps of an expert trained here
    expert_speakers: str = "all"  # real clips an expert trained here sees: all (held-out too), or training
    frames: int = 0  # frames scored per held-out clip, from its start; 0 = all
    seed: int = 0  # the prior's draw for audio-driven generation
    motion_draws: int = 4  # draws per prior for the spread of sampled motion
    lmd: bool = True  # re-detect landmarks for LMD (MediaPipe)
    adapt_steps: int = Adaptation().generator_steps  # fitting to the source face, as `mltk talk --adapt-steps`


@register_protocol("talk", description="talking heads on a held-out speaker: LSE-C/LSE-D analogues (independent "
                                        "expert), LMD, SSIM/PSNR, motion NLL, frames per second")
def talk_protocol(request: EvalRequest, reporter: Reporter) -> EvalResult:
    options = request.parse_options(TalkOptions)
    talker = load_talker(request.ref, device=request.device)
    trained_on = talker.card.get("config", {}).get("data", {})
    spec = request.data or trained_on.get("name")
    if not spec:
        raise UsageError(f"{talker.source}: records no training data", hint="pass --data talking-head or "
                                                                           "--data video-folder:PATH")
    data = load_talking_data(spec, size=talker.resolution, held_out_speakers=int(trained_on.get("held_out_speakers")
                                                                                 or 1),
                             alignment=trained_on.get("alignment", "mediapipe"),
                             cache_dir=trained_on.get("cache_dir") or None, data_dir=request.data_dir,
                             warn=reporter.warn, progress=reporter.info)
    if options.expert_speakers not in ("training", "all"):
        raise UsageError(f"--expert-speakers {options.expert_speakers}: use training or all")
    expert_clips = data.train + (data.held_out if options.expert_speakers == "all" else [])
    expert, expert_card = _expert(options, expert_clips, spec, reporter)
    clips = [_first_frames(clip, options.frames) for clip in data.held_out]
    reporter.info(f"scoring {talker.source} on {len(clips)} held-out clip(s) of {spec} "
                  f"({', '.join(data.held_out_speakers)}), {sum(clip.num_frames for clip in clips)} frames")
    analyzer = faces.FaceAnalyzer() if options.lmd else None
    try:
        per_clip = {clip.name: score_clip(talker, expert, clip, options, analyzer) for clip in clips}
    finally:
        if analyzer is not None:
            analyzer.close()
    weights = {name: scores.pop("frames") for name, scores in per_clip.items()}
    averaged = _weighted_means(per_clip, weights)
    details = {"model": talker.source, "data": spec, "held_out_speakers": data.held_out_speakers,
               "frames": sum(weights.values()), "resolution": talker.resolution,
               "lmd_units": f"pixels of the {talker.resolution} px aligned crop",
               "expert": expert_card.get("name") or expert_card.get("source", ""),
               "expert_training_accuracy": expert_card.get("metrics", {}).get("final_accuracy"),
               "clips": per_clip}
    return EvalResult(metrics=averaged, primary="lse_c", details=details)


def _expert(options: TalkOptions, train: list[TalkingClip], spec: str, reporter: Reporter
            ) -> tuple[sync_expert.SyncExpert, dict]:
    if options.expert:
        expert, card = sync_expert.load_sync_expert(options.expert)
        return expert, {**card, "source": options.expert}
    who = "every speaker" if options.expert_speakers == "all" else "the training speakers"
    reporter.info(f"sync expert: real clips of {who}, {options.expert_steps} steps (cached after the first run)")
    training = sync_expert.ExpertTraining(steps=options.expert_steps)
    expert, card, path = sync_expert.expert_for_clips(train, data=spec, training=training)
    return expert, {**card, "source": str(path)}


def _first_frames(clip: TalkingClip, frames: int) -> TalkingClip:
    if frames <= 0 or frames >= clip.num_frames:
        return clip
    landmarks = clip.landmarks[:frames] if clip.landmarks is not None else None
    return TalkingClip(clip.name, clip.speaker, clip.faces[:frames], clip.mels[:frames], landmarks,
                       clip.audio[:frames * SAMPLES_PER_FRAME])


def score_clip(talker: Talker, expert: sync_expert.SyncExpert, clip: TalkingClip, options: TalkOptions,
               analyzer: faces.FaceAnalyzer | None) -> dict[str, float]:
    """Every figure of one held-out clip (the module docstring), plus its frame count."""
    truth = clip.faces.permute(0, 2, 3, 1).contiguous()  # [T, S, S, 3]
    source = clip.faces[0]
    started = time.perf_counter()
    identity = talker.adapt(source, Adaptation.steps(options.adapt_steps))
    adapted = time.perf_counter()
    driven = _collect(talker.generate(source, clip.audio, seed=options.seed, identity=identity))
    finished = time.perf_counter()
    static = _collect(talker.generate(source, clip.audio, static=True))
    rebuilt = talker.reconstruct(clip, identity=identity)  # its source is the same first frame
    scores: dict[str, float] = {"frames": clip.num_frames, "fps": clip.num_frames / max(finished - started, 1e-9),
                                "fps_rendering": clip.num_frames / max(finished - adapted, 1e-9),
                                "adapt_seconds": adapted - started}
    for label, frames in (("ground_truth", truth), ("", driven), ("reconstruction", rebuilt), ("static", static)):
        curve = sync_expert.sync_curve(expert, sync_expert.expert_mouths(expert, frames), clip.mels)
        suffix = f"_{label}" if label else ""
        scores[f"lse_c{suffix}"], scores[f"lse_d{suffix}"] = curve.lse_c, curve.lse_d
        scores[f"sync_offset{suffix}"] = curve.best_offset
    # Fidelity over the frames after the source one: the static face is frame 0 itself (infinite PSNR there).
    for label, frames in (("", rebuilt), ("_static", static)):
        scores[f"ssim{label}"] = metrics.ssim(frames[1:], truth[1:])
        scores[f"psnr{label}"] = metrics.psnr(frames[1:], truth[1:])
    if analyzer is not None:
        scores.update(_landmark_distances(analyzer, clip, truth, driven=driven, rebuilt=rebuilt, static=static))
    scores.update(_motion(talker, clip, options))
    return scores


def _collect(batches: Iterator[torch.Tensor]) -> torch.Tensor:
    return torch.cat([batch.cpu() for batch in batches])


def _landmark_distances(analyzer: faces.FaceAnalyzer, clip: TalkingClip, truth: torch.Tensor, *,
                        driven: torch.Tensor, rebuilt: torch.Tensor, static: torch.Tensor) -> dict[str, float]:
    target = redetect(analyzer, truth, source=f"{clip.name} (ground truth)")
    scores = {"lmd_ground_truth_found": float((~target[:, 0, 0].isnan()).float().mean())}
    if clip.landmarks is not None:
        scores["lmd_ground_truth"] = _distance(target, clip.landmarks)
    for label, frames in (("lmd", rebuilt), ("lmd_audio_driven", driven), ("lmd_static", static)):
        found = redetect(analyzer, frames, source=f"{clip.name} ({label})")
        scores[label] = _distance(found, target)
        scores[f"{label}_found"] = float((~found[:, 0, 0].isnan()).float().mean())
    return scores


def redetect(analyzer: faces.FaceAnalyzer, frames: torch.Tensor, *, source: str) -> torch.Tensor:
    """MediaPipe landmarks [T, 468, 2] of frames uint8 [T, S, S, 3], in their pixels; NaN where no face is found."""
    side = frames.shape[1]
    scale = max(1.0, DETECTION_SIDE / side)
    track = torch.full((frames.shape[0], faces.MESH_POINTS, 2), math.nan)
    for index, frame in enumerate(frames):
        image = frame
        if scale > 1:
            pixels = frame.permute(2, 0, 1)[None].float()
            image = F.interpolate(pixels, scale_factor=scale, mode="bilinear", align_corners=False)[0]
            image = image.round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).contiguous()
        try:
            points = analyzer.landmarks(image, source=source, frame_index=index)
        except faces.NoFaceFound:
            continue
        # Pixel centres: x_small + 0.5 = (x_big + 0.5) / scale.
        track[index] = (points[:, :2] + 0.5) / scale - 0.5
    return track


def _distance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    both = ~(predicted[:, 0, 0].isnan() | target[:, 0, 0].isnan())
    if not bool(both.any()):
        return math.nan
    return metrics.landmark_distance(predicted[both], target[both])


def _motion(talker: Talker, clip: TalkingClip, options: TalkOptions) -> dict[str, float]:
    posterior = talker.posterior_motion(clip)
    own_spread = float(posterior.std(0).mean())
    scores = {}
    for prior in talker.model.priors:
        scores[f"motion_nll_{prior}"] = talker.motion_nll(clip, prior=prior)
        draws = torch.stack([talker.sample_motion(clip.mels, seed=options.seed + draw, prior=prior)
                             for draw in range(max(options.motion_draws, 2))])
        scores[f"motion_spread_{prior}"] = float(draws.std(0).mean())
        scores[f"motion_scale_{prior}"] = float(draws.std(1).mean()) / max(own_spread, 1e-12)
    return scores


def _weighted_means(per_clip: dict[str, dict[str, float]], weights: dict[str, int]) -> dict[str, float]:
    """Frame-weighted mean of every figure over clips (NaN figures left out of their own mean)."""
    keys = dict.fromkeys(key for scores in per_clip.values() for key in scores)
    out = {}
    for key in keys:
        pairs = [(scores[key], weights[name]) for name, scores in per_clip.items()
                 if key in scores and not math.isnan(scores[key])]
        total = sum(weight for _, weight in pairs)
        out[key] = sum(value * weight for value, weight in pairs) / total if total else math.nan
    return out
