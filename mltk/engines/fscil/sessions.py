"""Which images and classes each FSCIL session trains on, from the official index lists or generated.

The TOPIC/CEC lists (``session_1.txt`` ... ``session_9.txt`` for CIFAR-100)
give one integer per line, an index into the dataset's training split in its
official order: session 1 is the base session (60 classes x 500 images),
every later one a 5-way 5-shot set. A session's classes are the labels its
images carry. Lists of image paths (CUB-200, miniImageNet) need images
looked up by file name, which mltk's in-memory datasets do not keep: they are
refused with that reason.

Generated plans (any dataset): classes in label order, the first
``base_classes`` form the base session (all their images, or a seeded
``base_images_per_class``), then ``sessions`` sets of ``ways`` classes with
``shots`` seeded images each.

Testing after session t uses every test image of the classes seen so far.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mltk.core.errors import ArtifactError, DataMissingError
from mltk.core.seeding import generator


class SessionDataError(ArtifactError):
    """A session list or a dataset that cannot serve the protocol."""


@dataclasses.dataclass(frozen=True)
class SessionPlan:
    """sessions[t]: (class labels new in session t, indices of its training images); session 0 is the base."""

    sessions: tuple[tuple[tuple[int, ...], torch.Tensor], ...]

    @property
    def class_order(self) -> tuple[int, ...]:
        """Every class label, in the order the sessions introduce them (a prototype row per position)."""
        return tuple(label for classes, _ in self.sessions for label in classes)

    @property
    def base_classes(self) -> tuple[int, ...]:
        return self.sessions[0][0]

    def seen_after(self, session: int) -> tuple[int, ...]:
        return tuple(label for classes, _ in self.sessions[:session + 1] for label in classes)

    def counts(self) -> list[tuple[int, int]]:
        """(classes, images) per session."""
        return [(len(classes), len(indices)) for classes, indices in self.sessions]


def read_index_lists(folder: str | Path, labels: torch.Tensor) -> SessionPlan:
    """The plan of the CEC/TOPIC lists in ``folder`` (session_1.txt, session_2.txt, ...) against a training
    split whose labels are ``labels`` (int64 [N], the official order)."""
    folder = Path(folder).expanduser()
    files = sorted(folder.glob("session_*.txt"), key=lambda p: int(p.stem.split("_")[1]))
    if not files:
        raise DataMissingError(f"{folder}: no session_1.txt, session_2.txt, ... here",
                               hint="point sessions.index_lists at a folder of the CEC index lists "
                                    "(e.g. fscil_index_lists_CEC/cifar100)")
    expected = [f"session_{i}.txt" for i in range(1, len(files) + 1)]
    if [p.name for p in files] != expected:
        raise SessionDataError(f"{folder}: the session files are not numbered 1..{len(files)} without gaps",
                               hint="keep session_1.txt (the base session) and every later one")
    sessions, seen = [], set()
    for path in files:
        indices = []
        for number, line in enumerate(path.read_text().splitlines(), 1):
            text = line.strip()
            if not text:
                continue
            if not text.lstrip("-").isdigit():
                raise SessionDataError(f"{path}:{number}: {text!r} is not an image index",
                                       hint="lists of image paths (CUB-200, miniImageNet) are not supported; "
                                            "use integer lists (CIFAR-100) or a generated plan")
            index = int(text)
            if not 0 <= index < len(labels):
                raise SessionDataError(f"{path}:{number}: index {index} lies outside the training split "
                                       f"({len(labels)} images)",
                                       hint="the lists index the official training order of their dataset")
            indices.append(index)
        if not indices:
            raise SessionDataError(f"{path}: lists no image")
        chosen = torch.tensor(indices, dtype=torch.int64)
        classes = tuple(sorted(set(labels[chosen].tolist())))
        again = sorted(set(classes) & seen)
        if again:
            raise SessionDataError(f"{path}: class {again[0]} was already taught in an earlier session",
                                   hint="each session teaches new classes")
        seen.update(classes)
        sessions.append((classes, chosen))
    return SessionPlan(tuple(sessions))


def generate_plan(labels: torch.Tensor, class_names: list[str], *, base_classes: int, ways: int, shots: int,
                  sessions: int, seed: int, base_images_per_class: int = 0) -> SessionPlan:
    """A seeded plan over a training split with labels ``labels`` (int64 [N])."""
    num_classes = len(class_names)
    needed = base_classes + ways * sessions
    if needed > num_classes:
        raise SessionDataError(f"the protocol needs {needed} classes ({base_classes} base + {sessions} x {ways}-way) "
                               f"but the dataset has {num_classes}",
                               hint="lower sessions.base_classes, sessions.ways or sessions.sessions")
    plan = []
    base = tuple(range(base_classes))
    base_indices = []
    for label in base:
        members = torch.nonzero(labels == label).flatten()
        if len(members) == 0:
            raise SessionDataError(f"class {class_names[label]!r} has no training image")
        if base_images_per_class and len(members) > base_images_per_class:
            pick = torch.randperm(len(members), generator=generator(seed, 0, label))[:base_images_per_class]
            members = members[pick.sort().values]
        base_indices.append(members)
    plan.append((base, torch.cat(base_indices)))
    for session in range(1, sessions + 1):
        start = base_classes + (session - 1) * ways
        classes = tuple(range(start, start + ways))
        chosen = []
        for label in classes:
            members = torch.nonzero(labels == label).flatten()
            if len(members) < shots:
                raise SessionDataError(f"class {class_names[label]!r} has {len(members)} training images, "
                                       f"fewer than {shots} shots", hint="lower sessions.shots")
            pick = torch.randperm(len(members), generator=generator(seed, session, label))[:shots]
            chosen.append(members[pick.sort().values])
        plan.append((classes, torch.cat(chosen)))
    return SessionPlan(tuple(plan))

