"""When a training loop checkpoints: by step count, else by unsaved minutes, and always at the end."""

from __future__ import annotations

import time

from mltk.core.runs import checkpoint_due


def test_every_n_steps_and_always_at_the_end():
    due = [d for d in range(1, 11) if checkpoint_due(d, 10, every_steps=4, every_minutes=5, last_saved=0.0)]
    assert due == [4, 8, 10]


def test_by_time_when_no_step_interval_is_set():
    now = time.perf_counter()
    assert not checkpoint_due(3, 10, every_steps=0, every_minutes=5, last_saved=now)
    assert checkpoint_due(3, 10, every_steps=0, every_minutes=5, last_saved=now - 301)
    assert checkpoint_due(10, 10, every_steps=0, every_minutes=5, last_saved=now)
