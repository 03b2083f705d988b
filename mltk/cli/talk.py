"""``mltk talk IMAGE AUDIO -o OUT.mp4``: a face image speaking an audio file, as an mp4 with the audio in it."""

from __future__ import annotations

from pathlib import Path

import typer

from mltk.cli.render import FormatOption, emit, key_values, reporter_for
from mltk.engines.talk.adaptation import Adaptation
from mltk.engines.talk.api import talk as talk_to_file


def talk(
    image: Path = typer.Argument(..., help="the source face: an image with one frontal face (PNG, JPEG)"),
    audio: Path = typer.Argument(..., help="the speech: any audio or video file PyAV decodes (resampled to 16 kHz mono)"),
    out: Path = typer.Option(..., "--out", "-o", help="the video to write (.mp4: H.264 + AAC, 25 fps)"),
    model: str = typer.Option(None, "--model", "-m",
                              help="talking-head model: registry reference or exported folder "
                                   "[default: the newest styletalker artifact]"),
    motion_from: Path = typer.Option(None, "--motion-from",
                                     help="a video whose head motion drives the face [default: motion sampled "
                                          "from the audio by the model's prior]"),
    seed: int = typer.Option(0, "--seed", help="the draw of motion from the prior"),
    prior: str = typer.Option(None, "--prior", help="flow or gaussian [default: the one the model was trained with]"),
    adapt_steps: int = typer.Option(Adaptation().generator_steps, "--adapt-steps", min=0,
                                    help="steps of fitting the model to this face before it speaks (pivotal "
                                         "tuning of a copy of the generator on the face's latent); 0: render "
                                         "it as the model was trained"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:1, mps or auto"),
    fmt: str = FormatOption,
) -> None:
    """Make the face in IMAGE speak AUDIO: write OUT.mp4 (as long as the audio) and OUT.contact.png.

    The face is detected and aligned (MediaPipe), the generator is fitted to
    it (--adapt-steps, a few seconds at the CPU preset), frames are made in batches
    (progress on stderr) and encoded as they come, so long audio needs no more
    memory than short.
    """
    reporter = reporter_for(fmt)

    def progress(done: int, total: int) -> None:
        reporter.info(f"frames {done}/{total}")

    if adapt_steps:
        reporter.info(f"the model is fitted to the face ({adapt_steps} steps) before the first frames")
    result = talk_to_file(image, audio, out, model=model, motion_from=motion_from, seed=seed, prior=prior,
                          device=device, adaptation=Adaptation.steps(adapt_steps), on_batch=progress)
    document = result.to_dict()

    def human(console):
        console.print(key_values(f"mltk talk ({result.model})", [
            ("video", document["path"]), ("frames", result.frames), ("fps", result.fps),
            ("duration", f"{result.duration:.2f} s"), ("contact sheet", document["contact_sheet"]),
            ("speed", f"{result.frames_per_second:.1f} frames/s ({result.rendering_frames_per_second:.1f} after "
                      f"{result.adaptation_seconds:.1f} s fitting the face)")]))

    emit(fmt, document, human, quiet=document["path"])
