"""Benchmarks of the talking-head engine (issue 15): benchmarks/results/talk.md is written by hand from them.

Sections (each prints one JSON document and stores it in $MLTK_TALK_WORK/<section>.json, default
/tmp/mltk-talk-bench). The shared data is read from $MLTK_DATA (set it to /work/shared/data):

    OMP_NUM_THREADS=1 python benchmarks/talk.py data [--size 64]
    OMP_NUM_THREADS=1 python benchmarks/talk.py expert [--size 64] [--steps 800] [--save NAME] [--all-speakers]
    OMP_NUM_THREADS=1 python benchmarks/talk.py eval --models REF [REF ...] [--expert talk-sync-expert]
    python benchmarks/talk.py talk --model REF                                   # mltk talk, read back, speed

data
    Preparing the six shared clips (``load_talking_data("talking-head")``: decode at 25 fps, MediaPipe
    landmarks on every frame, one-euro smoothing, alignment, crops, mel windows) into an empty cache
    and then again from the cache. Frames per second of each, and the speaker split.

expert
    The independent sync expert (``sync_expert.py``), trained on the training speakers' real clips
    (``--all-speakers``: the held-out speaker's real clip too) with its own seed, scored on the held-out speaker's real clip (and on one training clip for
    comparison): LSE-C/LSE-D analogues and the best offset for the true audio, the audio delayed by 5
    and 10 frames, the mel windows shuffled, and another speaker's audio; the fraction of frames whose
    aligned pair scores above the pair shifted by 5 frames. This is what the LSE figures of any model
    are read against.

eval
    ``mltk eval REF --protocol talk --format json`` for each model (StyleTalker, its no-sync-loss and
    Gaussian-prior ablations), in a child process each, with the same expert; the figures side by side.

talk
    ``mltk talk`` on SadTalker's ``happy.png`` and ``RD_Radio31_000.wav`` (8 s) in a child process: its
    JSON, the mp4 read back with PyAV (frames, fps, audio seconds), the contact sheet, and the child's
    peak resident memory (``RUSAGE_CHILDREN``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from mltk.core.paths import data_root
from mltk.core.registry import Registry
from mltk.engines.talk import data as talk_data
from mltk.engines.talk import media, sync_expert

WORK = Path(os.environ.get("MLTK_TALK_WORK", "/tmp/mltk-talk-bench"))
FACE = Path("talking_head/sadtalker_examples/source_image/happy.png")
SPEECH = Path("talking_head/sadtalker_examples/driven_audio/RD_Radio31_000.wav")


def machine() -> dict:
    return {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "load_average": os.getloadavg()}


def section_data(args: argparse.Namespace) -> dict:
    cache = WORK / "data-cache"
    shutil.rmtree(cache, ignore_errors=True)
    started = time.perf_counter()
    cold = talk_data.load_talking_data("talking-head", size=args.size, cache_dir=cache)
    cold_seconds = time.perf_counter() - started
    started = time.perf_counter()
    talk_data.load_talking_data("talking-head", size=args.size, cache_dir=cache)
    warm_seconds = time.perf_counter() - started
    clips = cold.train + cold.held_out
    frames = sum(clip.num_frames for clip in clips)
    return {"size": args.size, "clips": {clip.name: {"speaker": clip.speaker, "frames": clip.num_frames}
                                         for clip in clips},
            "train_speakers": cold.train_speakers, "held_out_speakers": cold.held_out_speakers,
            "frames": frames, "prepare_seconds": round(cold_seconds, 2),
            "prepare_frames_per_second": round(frames / cold_seconds, 1),
            "cached_seconds": round(warm_seconds, 3), "cached_frames_per_second": round(frames / warm_seconds, 1),
            "cache_bytes": sum(path.stat().st_size for path in cache.glob("*.safetensors"))}


def _delayed(mels: torch.Tensor, frames: int) -> torch.Tensor:
    """The windows of audio played ``frames`` late (the first window repeated in front)."""
    return torch.cat([mels[:1].expand(frames, -1, -1), mels[:-frames]])


def _scores(expert: sync_expert.SyncExpert, mouths: torch.Tensor, mels: torch.Tensor) -> dict:
    curve = sync_expert.sync_curve(expert, mouths, mels)
    return {"lse_c": round(curve.lse_c, 4), "lse_d": round(curve.lse_d, 4), "best_offset": curve.best_offset}


def section_expert(args: argparse.Namespace) -> dict:
    loaded = talk_data.load_talking_data("talking-head", size=args.size, cache_dir=WORK / "data-cache")
    training = sync_expert.ExpertTraining(steps=args.steps)
    log: list[tuple[float, float]] = []
    seen = loaded.train + (loaded.held_out if args.all_speakers else [])
    expert, stats = sync_expert.train_sync_expert(seen, training=training,
                                                  on_step=lambda step, loss, accuracy: log.append((loss, accuracy)))
    if args.save:
        files, card = sync_expert.expert_artifact(expert, training=training, stats=stats, data="talking-head")
        stats["saved_as"] = Registry().save(args.save, files=files, card=card).ref
    curve_every = max(1, args.steps // 10)
    learning = [{"step": first, "loss": round(sum(x[0] for x in log[first:first + curve_every]) / curve_every, 4),
                 "accuracy": round(sum(x[1] for x in log[first:first + curve_every]) / curve_every, 3)}
                for first in range(0, len(log), curve_every)]
    other = loaded.train[0]
    results = {}
    for role, clip in [("held_out", c) for c in loaded.held_out] + [("training", loaded.train[1])]:
        mouths = talk_data.mouth_crops(clip.faces, expert.spec.mouth_size)
        order = torch.randperm(clip.num_frames, generator=torch.Generator().manual_seed(0))
        foreign = other.mels[:clip.num_frames]
        foreign = torch.cat([foreign, foreign[-1:].expand(clip.num_frames - foreign.shape[0], -1, -1)])
        aligned, shifted = sync_expert.pair_scores(expert, mouths, clip.mels, 5)
        results[f"{role}: {clip.name}"] = {
            "frames": clip.num_frames,
            "true audio": _scores(expert, mouths, clip.mels),
            "audio 5 frames late": _scores(expert, mouths, _delayed(clip.mels, 5)),
            "audio 10 frames late": _scores(expert, mouths, _delayed(clip.mels, 10)),
            "windows shuffled": _scores(expert, mouths, clip.mels[order]),
            f"another speaker's audio ({other.name})": _scores(expert, mouths, foreign),
            "aligned above 5-frame shift (fraction of frames)": round(float((aligned > shifted).float().mean()), 3),
        }
    return {"size": args.size, "expert_speakers": "all" if args.all_speakers else "training", "training": vars(training),
            "stats": stats, "learning": learning, "clips": results}


def section_eval(args: argparse.Namespace) -> dict:
    out = {}
    for ref in args.models:
        command = ["mltk", "eval", ref, "--protocol", "talk", "--format", "json"]
        if args.expert:
            command += ["--expert", args.expert]
        command += args.extra
        started = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
        entry = {"command": " ".join(command), "exit": done.returncode,
                 "seconds": round(time.perf_counter() - started, 1)}
        try:
            entry["result"] = json.loads(done.stdout)
        except json.JSONDecodeError:
            entry["stderr_tail"] = done.stderr[-2000:]
        out[ref] = entry
    return out


def section_talk(args: argparse.Namespace) -> dict:
    face, speech = data_root() / FACE, data_root() / SPEECH
    video = WORK / "happy_radio31.mp4"
    command = ["mltk", "talk", str(face), str(speech), "-o", str(video), "--model", args.model, "--format", "json"]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
    wall = time.perf_counter() - started
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    result = {"command": " ".join(command), "exit": done.returncode, "wall_seconds": round(wall, 2),
              "peak_rss_mib": round(peak_kib / 1024, 1)}
    if done.returncode != 0:
        return {**result, "stderr_tail": done.stderr[-2000:]}
    result["json"] = json.loads(done.stdout)
    clip = media.read_clip(video)
    source_audio = media.read_audio(speech)
    result["read_back"] = {"frames": int(clip.frames.shape[0]), "fps": clip.fps, "size": list(clip.frames.shape[1:3]),
                           "audio_seconds": round(clip.audio.shape[0] / clip.sample_rate, 3),
                           "source_audio_seconds": round(source_audio.shape[0] / media.SAMPLE_RATE, 3),
                           "expected_frames": -(-source_audio.shape[0] * media.VIDEO_FPS // media.SAMPLE_RATE)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sections = parser.add_subparsers(dest="section", required=True)
    data = sections.add_parser("data")
    data.add_argument("--size", type=int, default=64)
    expert = sections.add_parser("expert")
    expert.add_argument("--size", type=int, default=64)
    expert.add_argument("--steps", type=int, default=sync_expert.ExpertTraining.steps)
    expert.add_argument("--save", default="", help="registry name to save the expert under")
    expert.add_argument("--all-speakers", action="store_true", help="train on the held-out speaker's real clip too")
    evaluate = sections.add_parser("eval")
    evaluate.add_argument("--models", nargs="+", required=True)
    evaluate.add_argument("--expert", default="")
    evaluate.add_argument("--timeout", type=int, default=1800)
    evaluate.add_argument("extra", nargs="*", help="more protocol options, KEY=VALUE")
    talk = sections.add_parser("talk")
    talk.add_argument("--model", required=True)
    talk.add_argument("--timeout", type=int, default=1800)
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    run = {"data": section_data, "expert": section_expert, "eval": section_eval, "talk": section_talk}[args.section]
    result = {"section": args.section, "machine": machine(), **run(args)}
    text = json.dumps(result, indent=2, default=str)
    suffix = "-all-speakers" if getattr(args, "all_speakers", False) else ""
    (WORK / f"{args.section}{suffix}.json").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    sys.exit(main())
