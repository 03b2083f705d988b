"""The talking-head engine's foundation (StyleTalker, arXiv 2208.10922): media, speech features, faces, metrics.

No recipe or protocol is registered yet: the model, its training and
``mltk talk`` come later and stand on these modules (docs/talk.md).

* ``media``: video and audio read at 25 fps / 16 kHz mono, mp4 (H.264 + AAC) written;
* ``audio``: Wav2Lip's 80-band log-mel and one 0.2 s window centred on each frame;
* ``faces``: MediaPipe face box, 468-point mesh, similarity alignment to a template, track smoothing;
* ``metrics``: LMD, PSNR, SSIM.

PyAV and MediaPipe are imported only when used (``pip install "mltk[talk]"``).
"""

from mltk.engines.talk import audio, faces, media, metrics

__all__ = ["audio", "faces", "media", "metrics"]
