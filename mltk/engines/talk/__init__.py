"""The talking-head engine's foundation (StyleTalker, arXiv 2208.10922): media, speech features, faces, metrics.

The model (``generator``, ``encoders``, ``sync_discriminator``, ``motion``,
``priors``, assembled in ``model``), its recipe ``styletalker``
(``styletalker_recipe``), the ``talking-head-model`` artifact, ``Talker`` /
``load_talker`` / ``talk`` (``api``, what ``mltk talk`` runs) and ``Adaptation``
(``adaptation``: fitting the model to the source face) stand on these modules (docs/talk.md).

* ``media``: video and audio read at 25 fps / 16 kHz mono, mp4 (H.264 + AAC) written;
* ``audio``: Wav2Lip's 80-band log-mel and one 0.2 s window centred on each frame;
* ``faces``: MediaPipe face box, 468-point mesh, similarity alignment to a template, track smoothing;
* ``metrics``: LMD, PSNR, SSIM.

PyAV and MediaPipe are imported only when used (``pip install "mltk[talk]"``).
"""

from mltk.engines.talk import (
    audio,
    faces,
    media,
    metrics,
    protocols,  # noqa: F401  (registers `mltk eval --protocol talk`)
    styletalker_recipe,  # noqa: F401  (registers `mltk train styletalker`)
)
from mltk.engines.talk.adaptation import Adaptation
from mltk.engines.talk.api import Talker, load_talker, talk

__all__ = ["Adaptation", "Talker", "audio", "faces", "load_talker", "media", "metrics", "talk"]
