"""Where mltk keeps things on disk, each overridable by an environment variable.

``$MLTK_HOME`` (default ``~/.mltk``) holds the artifact registry; datasets are
read from ``$MLTK_DATA`` (default ``$MLTK_HOME/data``); training runs go to
``$MLTK_RUNS`` (default ``./runs``, beside the user's work, as timm and
Lightning do).
"""

from __future__ import annotations

import os
from pathlib import Path


def mltk_home() -> Path:
    return Path(os.environ.get("MLTK_HOME") or Path.home() / ".mltk").expanduser()


def data_root() -> Path:
    env = os.environ.get("MLTK_DATA")
    return Path(env).expanduser() if env else mltk_home() / "data"


def runs_root() -> Path:
    return Path(os.environ.get("MLTK_RUNS") or "runs").expanduser()
