"""The FSCIL session mechanics both training and ``--protocol fscil`` use.

::

    runner = SessionRunner(cfg, data, model, device)
    # base session: runner.base_loss(step, module) per step (CE on the base classes, masks learned)
    runner.close_session(0)              # fix the masks, base prototypes, score
    for t in 1..T:
        params = runner.open_session(t)  # what the session may train (minor weights of the chosen layers)
        # runner.session_loss(step, module) per step (prototype loss on the session's shots)
        runner.close_session(t)          # novel prototypes from the shots, score on every class seen

What a session freezes: BatchNorm (eval mode: running statistics and affine
parameters stay), the head, the scores and masks, every layer outside
``incremental.layers``, and (softnet) the major weights inside them, which
enter the forward pass as constants. Old prototypes are never recomputed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from mltk.core.seeding import derive_seed, generator
from mltk.data.batches import epoch_order, per_rank_batch, step_indices
from mltk.data.images.augment import crop_flip, crop_padding
from mltk.data.images.dataset import ImageDataset
from mltk.data.locate import resolve_data_dir
from mltk.data.splits import load_splits
from mltk.engines.fscil.config import TRAINS_IN_SESSIONS, FscilConfig
from mltk.engines.fscil.masked_layers import MaskedLayer, masked_layers, set_noise_generator
from mltk.engines.fscil.network import FscilNetwork, NetworkSpec, resolve_layers
from mltk.engines.fscil.prototypes import class_prototypes, cosine_ncm, prototype_loss
from mltk.engines.fscil.sessions import (
    SessionDataError,
    SessionPlan,
    generate_plan,
    read_index_lists,
)

MASK_STREAM = 0x3A5C  # seeds the soft values drawn once when the masks are fixed
NOISE_STREAM = 0x501F  # seeds the soft noise of each base step


@dataclasses.dataclass
class FscilData:
    train: ImageDataset
    test: ImageDataset  # only the classes of the plan (capped per class)
    plan: SessionPlan

    @property
    def position(self) -> torch.Tensor:
        """Class label -> its row in the prototype table (int64 [num labels], -1 outside the plan)."""
        table = torch.full((self.train.num_classes,), -1, dtype=torch.int64)
        table[list(self.plan.class_order)] = torch.arange(len(self.plan.class_order))
        return table


def load_fscil_data(cfg: FscilConfig) -> FscilData:
    splits = load_splits(cfg.data)
    train, test = splits.train, splits.test
    s = cfg.sessions
    if s.index_lists:
        plan = read_index_lists(_lists_folder(s.index_lists, cfg.data.data_dir), train.labels)
    else:
        plan = generate_plan(train.labels, train.class_names, base_classes=s.base_classes, ways=s.ways,
                             shots=s.shots, sessions=s.sessions, seed=s.seed,
                             base_images_per_class=s.base_images_per_class)
    keep = []
    for label in plan.class_order:
        members = torch.nonzero(test.labels == label).flatten()
        if len(members) == 0:
            raise SessionDataError(f"class {train.class_names[label]!r} has no test image in {cfg.data.name}",
                                   hint="every class of the protocol needs test images")
        if cfg.train.test_per_class and len(members) > cfg.train.test_per_class:
            pick = torch.randperm(len(members), generator=generator(cfg.seed, 0x7E57, label))
            members = members[pick[:cfg.train.test_per_class].sort().values]
        keep.append(members)
    return FscilData(train=train, test=test.subset(torch.cat(keep).sort().values), plan=plan)


def _lists_folder(path: str, data_dir: str | None) -> Path:
    """``path`` as given, or else under the data dir (where the presets name the CEC lists)."""
    given = Path(path).expanduser()
    if given.is_absolute() or given.is_dir():
        return given
    under = resolve_data_dir(data_dir) / given
    return under if under.is_dir() else given


def build_network(cfg: FscilConfig, data: FscilData) -> FscilNetwork:
    base = data.train.subset(data.plan.sessions[0][1])
    x = base.images.float().div_(255).transpose(0, 1).reshape(base.images.shape[1], -1)
    mean = tuple(round(v, 6) for v in x.mean(1).tolist())
    std = tuple(round(v, 6) for v in x.std(1).clamp_min(1e-3).tolist())
    m = cfg.model
    spec = NetworkSpec(in_channels=data.train.image_shape[0], num_base_classes=len(data.plan.base_classes),
                       num_classes=len(data.plan.class_order), widths=tuple(m.widths), blocks=tuple(m.blocks),
                       masking=cfg.masking, capacity=m.capacity, mean=mean, std=std)
    return FscilNetwork(spec)


def session_steps(cfg: FscilConfig) -> int:
    """Optimizer steps per incremental session (0 for the methods that only add prototypes)."""
    return cfg.incremental.steps if cfg.method in TRAINS_IN_SESSIONS else 0


class SessionRunner:
    def __init__(self, cfg: FscilConfig, data: FscilData, model: FscilNetwork, device: torch.device, *,
                 rank: int = 0, world_size: int = 1):
        self.cfg, self.data, self.model, self.device = cfg, data, model, device
        self.rank, self.world_size = rank, world_size
        self.position = data.position.to(device)
        self.train_images = data.train.images  # uint8, moved to the device one batch at a time
        self.base_indices = data.plan.sessions[0][1]
        self.trained_layers = resolve_layers(model, cfg.incremental.layers)
        self.session = 0

    # ------------------------------------------------------------ batches

    def _images(self, indices: torch.Tensor, step: int, global_batch: int, start: int) -> torch.Tensor:
        images = self.train_images[indices].to(self.device).float().div_(255)
        if self.cfg.train.augment == "none":
            return images
        return crop_flip(images, padding=crop_padding(images.shape[-1]), flip=self.cfg.train.augment == "crop-flip",
                         generator=generator(self.cfg.seed, step), global_batch=global_batch, start=start)

    # ------------------------------------------------------------ base session

    def base_loss(self, step: int, steps_per_epoch: int, module: torch.nn.Module) -> tuple[torch.Tensor, dict, int]:
        batch_size = self.cfg.train.batch_size
        epoch, step_in_epoch = divmod(step, steps_per_epoch)
        order = epoch_order(len(self.base_indices), seed=self.cfg.seed, epoch=epoch)
        chosen = step_indices(order, step_in_epoch, batch_size=batch_size, rank=self.rank,
                              world_size=self.world_size)
        indices = self.base_indices[chosen]
        local = per_rank_batch(batch_size, self.world_size)
        images = self._images(indices, step, batch_size, self.rank * local)
        targets = self.position[self.data.train.labels[indices].to(self.device)]
        # The soft noise of this step: one stream, the same on every rank.
        noise = torch.Generator(device=self.device).manual_seed(derive_seed(self.cfg.seed, step, NOISE_STREAM))
        set_noise_generator(self.model, noise)
        _, logits = module(images)
        loss = torch.nn.functional.cross_entropy(logits, targets)
        accuracy = (logits.detach().argmax(1) == targets).double().mean()
        return loss, {"accuracy": accuracy}, len(indices)

    # ------------------------------------------------------------ incremental sessions

    def trained_parameters(self) -> list[torch.nn.Parameter]:
        modules = dict(self.model.named_modules())
        return [modules[name].weight for name in self.trained_layers]

    def open_session(self, session: int) -> list[torch.nn.Parameter]:
        """Freeze all but what session ``session`` trains; the parameters it trains (none for hardnet/ncm)."""
        self.session = session
        self.model.eval()  # BatchNorm: running statistics frozen
        for param in self.model.parameters():
            param.requires_grad_(False)
        if self.cfg.method not in TRAINS_IN_SESSIONS:
            return []
        params = self.trained_parameters()
        for param in params:
            param.requires_grad_(True)
        modules = dict(self.model.named_modules())
        for name in self.trained_layers:
            if isinstance(modules[name], MaskedLayer):
                modules[name].minor_only = True
        return params

    def session_loss(self, step: int, module: torch.nn.Module) -> tuple[torch.Tensor, dict, int]:
        """The prototype loss on all of the session's shots (every rank computes the same whole batch)."""
        classes, indices = self.data.plan.sessions[self.session]
        images = self._images(indices, step, len(indices), 0)
        positions = self.position[self.data.train.labels[indices].to(self.device)]
        seen_before = len(self.data.plan.seen_after(self.session - 1))
        novel = tuple(range(seen_before, seen_before + len(classes)))
        feats, _ = module(images)
        inc = self.cfg.incremental
        loss = prototype_loss(feats, positions, novel, self.model.prototypes[:seen_before], inc.temperature)
        if inc.weight_decay:
            loss = loss + 0.5 * inc.weight_decay * sum(self._decayed(p, name) for p, name in
                                                        zip(self.trained_parameters(), self.trained_layers,
                                                            strict=True))
        return loss, {"prototype_loss": loss.detach()}, len(indices)

    def _decayed(self, weight: torch.Tensor, name: str) -> torch.Tensor:
        """Squared norm of what the session trains: the minor weights (masked) or all of them (dense)."""
        layer = dict(self.model.named_modules())[name]
        if isinstance(layer, MaskedLayer):
            weight = torch.where(layer.major(), torch.zeros_like(weight), weight)
        return weight.pow(2).sum()

    # ------------------------------------------------------------ closing a session

    @torch.no_grad()
    def close_session(self, session: int) -> dict:
        """Fix the masks (base), set the session's prototypes, and score on every class seen so far."""
        model = self.model
        model.eval()
        classes, indices = self.data.plan.sessions[session]
        if session == 0:
            for i, layer in enumerate(masked_layers(model).values()):
                layer.fix_mask(generator(self.cfg.seed, MASK_STREAM, i))
        feats = self.features(self.data.train.images[indices])
        positions = self.position[self.data.train.labels[indices].to(self.device)]
        start = len(self.data.plan.seen_after(session - 1)) if session else 0
        rows = list(range(start, start + len(classes)))
        model.prototypes[rows] = class_prototypes(feats, positions, rows)
        model.prototype_set[rows] = True
        return self.score(session)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images [N, C, H, W] -> features [N, D], in eval mode, batch by batch."""
        self.model.eval()
        size = self.cfg.train.eval_batch_size
        return torch.cat([self.model.features(images[i:i + size].to(self.device).float().div_(255))
                          for i in range(0, len(images), size)])

    @torch.no_grad()
    def score(self, session: int) -> dict:
        """Accuracy (%) over the test images of every class seen after ``session``: all, base, novel."""
        seen = len(self.data.plan.seen_after(session))
        base = len(self.data.plan.base_classes)
        positions = self.position[self.data.test.labels.to(self.device)]
        wanted = positions < seen
        feats = self.features(self.data.test.images[wanted.cpu()])
        truth = positions[wanted]
        predicted = cosine_ncm(feats, self.model.prototypes[:seen])
        correct = predicted == truth
        in_base = truth < base
        result = {"session": session, "classes": seen, "test_images": int(len(truth)),
                  "accuracy": 100.0 * float(correct.double().mean()),
                  "base_accuracy": 100.0 * float(correct[in_base].double().mean())}
        result["novel_accuracy"] = 100.0 * float(correct[~in_base].double().mean()) if session else None
        return result


def summarize(results: list[dict]) -> dict[str, float]:
    """The FSCIL metrics of a session vector: per session, mean, performance drop, last base/novel."""
    accuracies = [r["accuracy"] for r in results]
    metrics = {f"session_{r['session']}_accuracy": r["accuracy"] for r in results}
    metrics.update(mean_accuracy=sum(accuracies) / len(accuracies), last_accuracy=accuracies[-1],
                   performance_drop=accuracies[0] - accuracies[-1], last_base_accuracy=results[-1]["base_accuracy"])
    if results[-1]["novel_accuracy"] is not None:
        metrics["last_novel_accuracy"] = results[-1]["novel_accuracy"]
    return metrics
