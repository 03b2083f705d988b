"""Fixtures shared by the CLI and engine tests: an isolated mltk home and two ways to run the CLI."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mltk.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"



@pytest.fixture
def tiny() -> list[str]:
    """Overrides for a small, fast supervised run: a 2-block ConvNet of width 16, 2 epochs on digits."""
    return ["model.options.width=16", "model.options.depth=2", "train.epochs=2", "train.batch_size=32",
            "optim.lr=0.1"]


@dataclasses.dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def mltk_env(tmp_path, monkeypatch):
    """MLTK_HOME, MLTK_RUNS and MLTK_DATA inside tmp_path; CI mode (no progress bars); stdout a pipe of no
    declared width (a COLUMNS exported by the developer's shell would make tables fit it)."""
    env = {"MLTK_HOME": str(tmp_path / "home"), "MLTK_RUNS": str(tmp_path / "runs"),
           "MLTK_DATA": str(tmp_path / "data"), "CI": "1"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLTK_DEBUG", "COLUMNS"):
        monkeypatch.delenv(key, raising=False)
    return tmp_path


@pytest.fixture
def cli(mltk_env, capsys):
    """Run ``mltk ARGS`` in this process through the real entry point; a Result."""

    def run(*args: str) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main(list(args))
        out, err = capsys.readouterr()
        return Result(info.value.code, out, err)

    return run


@pytest.fixture
def cli_process(mltk_env):
    """Run ``python -m mltk ARGS`` as a child process (for signals, torchrun and the installed entry point)."""

    def run(*args: str, timeout: float = 240, cwd: Path | None = None) -> Result:
        proc = subprocess.run([sys.executable, "-m", "mltk", *args], capture_output=True, text=True,
                              timeout=timeout, env=child_env(), cwd=cwd or mltk_env)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


def child_env() -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


# What a hostile input may cost beyond a started mltk: the bound for every file and card.
MEMORY_HEADROOM = 1 << 30

_LIMIT_PROLOGUE = textwrap.dedent("""
    import resource
    import torch
    import mltk.cli.main, mltk.data, mltk.nn
    torch.zeros(8).sum()  # the thread pools start now, not under the limit
    mapped = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, ({headroom} + mapped, resource.RLIM_INFINITY))
""")


@dataclasses.dataclass
class Limited:
    code: int
    stdout: str
    stderr: str

    @property
    def out_of_memory(self) -> bool:
        return "MemoryError" in self.stderr or "can't allocate memory" in self.stderr


@pytest.fixture
def memory_limited(mltk_env):
    """Run Python ``code`` in a child whose address space may grow only ``headroom`` bytes past a started
    mltk (RLIMIT_AS), so a regression that reads or builds too much fails as MemoryError instead of
    exhausting the machine. Linux only: the limit is measured from /proc."""
    if not Path("/proc/self/statm").exists():
        pytest.skip("needs Linux /proc to measure the address space")

    def run(code: str, *, headroom: int = MEMORY_HEADROOM, timeout: float = 120) -> Limited:
        env = {**child_env(), "MALLOC_ARENA_MAX": "2"}  # each malloc arena reserves 64 MiB of address space
        program = _LIMIT_PROLOGUE.format(headroom=headroom) + textwrap.dedent(code)
        proc = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=timeout,
                              env=env, cwd=mltk_env)
        return Limited(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def load_limited(memory_limited):
    """Run ``setup`` then the loading expression ``call`` under ``memory_limited``; an mltk error prints its
    one-line message to stdout and exits with its exit code, a success prints "loaded"."""

    def run(setup: str, call: str) -> Limited:
        return memory_limited(f"""
            import sys
            from mltk.core.errors import MltkError
            {setup}
            try:
                {call}
            except MltkError as exc:
                print(exc.message)
                sys.exit(exc.exit_code)
            print("loaded")
        """)

    return run
