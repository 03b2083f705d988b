"""``--protocol talk`` end to end on synthetic clips with an untrained model: every figure, on the held-out speaker."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from mltk.core.catalog import EvalRequest, get_protocol
from mltk.core.console import Reporter
from mltk.core.errors import ArtifactError, UsageError
from mltk.core.registry import Registry
from mltk.engines.talk import data, faces, media, protocols, sync_expert

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data"
REAL_CLIP = SHARED / "talking_head" / "videoretalking_examples" / "face" / "5.mp4"

EXPERT_SECONDS, EXPERT_STEPS = 6.0, 500
TINY_TALKER = dict(resolution=32, w_dim=16, base_channels=8, max_channels=16, audio_dim=16, motion_dim=4, hidden=16,
                   flow_layers=2, mouth_size=16, sync_dim=16, sync_channels=8)


@pytest.fixture(scope="module")
def talk_protocol_setup(tmp_path_factory):
    pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    from mltk.engines.talk.artifact import talker_artifact
    from mltk.engines.talk.model import StyleTalkerModel, TalkerSpec

    tmp_path = tmp_path_factory.mktemp("talk-protocol")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLTK_HOME", str(tmp_path / "home"))
        yield _saved_model_and_expert(tmp_path, talker_artifact, StyleTalkerModel(TalkerSpec(**TINY_TALKER)))


def _saved_model_and_expert(tmp_path, talker_artifact, model):
    folder = data.write_synthetic_talking_folder(tmp_path / "videos", clips=3, seconds=2.4, size=32)
    spec = f"video-folder:{folder}"
    data_config = {"name": spec, "held_out_speakers": 1, "alignment": "none", "cache_dir": str(tmp_path / "cache")}
    files, card = talker_artifact(model, recipe="styletalker", config={"data": data_config}, metrics={},
                                  primary_metric=None, higher_is_better=True, parent="")
    registry = Registry()
    registry.save("tiny-talker", files=files, card=card)
    # The expert learns from speakers of its own (the first two tones, so the held-out speaker2 stays unseen),
    # with more footage than the talker has: trained on the talker's two 2.4-second clips for 60 steps, one
    # initialisation in three found the unmoving face half as much in sync as the real video, or the wrong offset.
    expert_folder = data.write_synthetic_talking_folder(tmp_path / "expert-videos", clips=2, seconds=EXPERT_SECONDS,
                                                        size=32, seed=1)
    expert_clips = data.load_talking_data(f"video-folder:{expert_folder}", size=32, alignment="none",
                                          held_out_speakers=0, cache_dir=tmp_path / "cache").train
    expert_spec = sync_expert.ExpertSpec(mouth_size=16, dim=16, channels=8)
    training = sync_expert.ExpertTraining(steps=EXPERT_STEPS, batch_size=32)
    expert, stats = sync_expert.train_sync_expert(expert_clips, spec=expert_spec, training=training)
    expert_files, expert_card = sync_expert.expert_artifact(expert, training=training, stats=stats,
                                                            data=f"video-folder:{expert_folder}")
    registry.save("tiny-expert", files=expert_files, card=expert_card)
    return data.load_talking_data(spec, size=32, alignment="none", cache_dir=tmp_path / "cache")


def test_the_talk_protocol_scores_the_held_out_speaker_with_every_figure(talk_protocol_setup):
    assert get_protocol("talk").run is protocols.talk_protocol
    request = EvalRequest(ref="tiny-talker", protocol="talk", options={"expert": "tiny-expert", "lmd": False,
                                                                       "motion_draws": 2})
    result = protocols.talk_protocol(request, Reporter("quiet"))
    assert result.primary == "lse_c"
    assert result.details["held_out_speakers"] == ["speaker2"] and result.details["frames"] == 60
    figures = result.metrics
    for name in ("lse_c", "lse_d", "lse_c_ground_truth", "lse_d_ground_truth", "lse_c_static", "lse_c_reconstruction",
                 "ssim", "psnr", "ssim_static", "fps", "motion_nll_flow", "motion_nll_gaussian", "motion_spread_flow",
                 "motion_scale_gaussian"):
        assert math.isfinite(figures[name]), name
    assert figures["psnr_static"] > 0  # inf where a synthetic frame equals the source one exactly
    # An unmoving face carries no sync: the expert's curve over offsets is flat for it, not for real video.
    # (This expert gives ground truth 0.21-0.28 and the static face 0.01-0.04 over four initialisations.)
    assert figures["lse_c_ground_truth"] > max(2 * figures["lse_c_static"], figures["lse_c_static"] + 0.05)
    assert figures["sync_offset_ground_truth"] == 0
    assert figures["motion_spread_flow"] > 0 and figures["fps_rendering"] > figures["fps"] > 0
    assert figures["adapt_seconds"] > 0  # fitted to the face by default


def test_scoring_fewer_frames_and_a_missing_expert_are_handled(talk_protocol_setup):
    request = EvalRequest(ref="tiny-talker", protocol="talk", options={"expert": "tiny-expert", "lmd": False,
                                                                       "frames": 20, "motion_draws": 2,
                                                                       "adapt_steps": 0})
    assert protocols.talk_protocol(request, Reporter("quiet")).details["frames"] == 20
    with pytest.raises(UsageError, match="--expert-speakers everyone"):
        protocols.talk_protocol(EvalRequest(ref="tiny-talker", protocol="talk",
                                            options={"expert_speakers": "everyone"}), Reporter("quiet"))
    with pytest.raises(ArtifactError, match="no-such-expert"):
        protocols.talk_protocol(EvalRequest(ref="tiny-talker", protocol="talk",
                                            options={"expert": "no-such-expert", "lmd": False}), Reporter("quiet"))


def test_landmarks_redetected_on_small_aligned_crops_land_where_the_full_frames_put_them(tmp_path, monkeypatch):
    pytest.importorskip("av", reason="PyAV (mltk[talk]) is not installed")
    pytest.importorskip("mediapipe", reason="mediapipe (mltk[talk]) is not installed")
    if not REAL_CLIP.is_file() or not (SHARED / "face_models" / "mediapipe" / "face_landmark.tflite").is_file():
        pytest.skip(f"shared talking-head clip or face models absent under {SHARED}")
    monkeypatch.setenv("MLTK_DATA", str(SHARED))
    from PIL import Image

    frames = []
    for frame in media.iter_frames(REAL_CLIP):
        frames.append(np.asarray(Image.fromarray(frame).resize((192, 192))))
        if len(frames) == 6:
            break
    media.write_video(tmp_path / "six.mp4", torch.from_numpy(np.stack(frames)),
                      media.read_audio(REAL_CLIP)[: 6 * data.SAMPLES_PER_FRAME])
    clip = data.load_talking_data(f"video-folder:{tmp_path}", size=64, held_out_speakers=0,
                                  cache_dir=tmp_path / "cache").train[0]
    with faces.FaceAnalyzer() as analyzer:
        found = protocols.redetect(analyzer, clip.faces.permute(0, 2, 3, 1), source="six")
        blank = protocols.redetect(analyzer, torch.full((1, 64, 64, 3), 128, dtype=torch.uint8), source="grey")
    assert not bool(found.isnan().any()) and bool(blank.isnan().all())
    lips = list(faces.MOUTH_LANDMARKS)
    assert float((found[:, lips] - clip.landmarks[:, lips]).norm(dim=-1).mean()) < 2.0  # pixels of 64
