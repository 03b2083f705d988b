"""A registry that cannot be written still serves the commands that only read it.

The home is made read-only for real: a read-only bind mount in a private
mount namespace (``unshare``), or file modes when the tests do not run as root
(root ignores modes). Where neither is possible the test is skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest


def _read_only_runner(home: Path):
    """A function running ``python -m mltk ARGS`` with ``home`` read-only, or None when this machine cannot."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if os.geteuid() != 0:
        for path in [home, *home.rglob("*")]:
            path.chmod(path.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))

        def run(*args: str) -> subprocess.CompletedProcess:
            return subprocess.run([sys.executable, "-m", "mltk", *args], capture_output=True, text=True,
                                  env=env, timeout=240)

        return run
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    mount = f"mount --bind {home} {home} && mount -o remount,bind,ro {home}"
    probe = subprocess.run([unshare, "-rm", "sh", "-c", f"{mount} && ! touch {home}/probe"], capture_output=True)
    if probe.returncode != 0:
        return None

    def run(*args: str) -> subprocess.CompletedProcess:
        command = " ".join([mount, "&&", "exec", sys.executable, "-m", "mltk", *args])
        return subprocess.run([unshare, "-rm", "sh", "-c", command], capture_output=True, text=True, env=env,
                              timeout=240)

    return run


def test_ls_verify_and_eval_work_on_a_read_only_home(cli, mltk_env, tiny):
    trained = cli("train", "supervised", *tiny, "name=shared", "--format", "quiet")
    assert trained.code == 0, trained.stderr
    home = mltk_env / "home"
    run = _read_only_runner(home)
    if run is None:
        pytest.skip("cannot make a folder read-only here (root without unshare)")
    before = sorted((p.name, p.stat().st_size) for p in home.rglob("*") if p.is_file())

    listed = run("ls")
    assert listed.returncode == 0, listed.stderr
    assert "shared" in listed.stdout
    verified = run("verify", "shared")
    assert verified.returncode == 0, verified.stderr
    evaluated = run("eval", "shared", "--format", "json")
    assert evaluated.returncode == 0, evaluated.stderr
    assert "unreadable" not in listed.stderr + verified.stderr + evaluated.stderr

    # a command that writes says what is wrong, not that the index is damaged
    removed = run("rm", "shared:1")
    assert removed.returncode == 1, removed.stderr
    assert "read-only" in removed.stderr and "unreadable" not in removed.stderr
    assert sorted((p.name, p.stat().st_size) for p in home.rglob("*") if p.is_file()) == before
