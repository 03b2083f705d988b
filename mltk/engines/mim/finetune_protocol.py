"""End-to-end fine-tuning of a pre-trained ViT encoder with layer-wise learning-rate decay.

MAE's fine-tuning recipe (BEiT's layer decay), without mixup / cutmix /
RandAugment, which a small CPU run cannot use to advantage::

    model = vit(num_classes=K) with the encoder's weights, a fresh head (std 2e-5), drop-path
    lr of block i = lr * layer_decay^(depth + 1 - (i + 1)); embeddings depth + 1 steps down, head undecayed
    AdamW, warm-up then cosine, label smoothing, random crop (+ flip where the dataset allows)

Every random draw derives from (seed, step), so a fine-tune is repeatable.
It runs inside ``mltk eval`` and is not resumable: budgets beyond minutes
belong in a training recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from typing import Literal

import torch
import torch.nn.functional as F

from mltk.core.config import to_dict
from mltk.core.console import Reporter
from mltk.core.device import amp_dtype, autocast
from mltk.core.errors import UsageError
from mltk.core.registry import Registry
from mltk.core.seeding import generator, seed_step
from mltk.data import DataSpec, ImageDataset
from mltk.data.batches import epoch_order, step_indices, steps_per_epoch
from mltk.data.datasets import dataset_info
from mltk.data.images.augment import crop_flip, crop_padding
from mltk.engines.mim.encoder import LoadedEncoder
from mltk.engines.mim.schedules import learning_rate
from mltk.nn import ImageClassifier, build_model
from mltk.nn.artifacts import classifier_artifact
from mltk.nn.classifiers.evaluation import evaluate_classifier
from mltk.nn.encoders.evaluation import subset_indices
from mltk.nn.encoders.vit import VisionTransformer


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    weights: str = "default"  # default (RC-MAE: the teacher), teacher or student
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.0  # 0 = base_lr * batch_size / 256
    base_lr: float = 5e-4
    layer_decay: float = 0.75
    weight_decay: float = 0.05
    drop_path: float = 0.1
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    augment: Literal["auto", "crop", "crop-flip", "none"] = "auto"  # auto: crop, plus flip where allowed
    train_images: int = 0  # a seeded subset of the train split; 0 = all
    seed: int = 0
    save: str = ""  # store the fine-tuned classifier under this artifact name (kind classifier)


@dataclasses.dataclass
class FinetuneResult:
    metrics: dict
    train_images: int
    saved: str | None


def layer_decay_groups(net: VisionTransformer, *, weight_decay: float, layer_decay: float) -> list[dict]:
    """AdamW parameter groups with an ``lr_scale`` per depth; no weight decay on 1-D parameters or [CLS]."""
    groups: dict[tuple[int, bool], dict] = {}
    top = net.depth + 1
    for name, param in net.named_parameters():
        if not param.requires_grad:
            continue
        layer = net.layer_of(name)
        decays = param.ndim > 1 and name != "cls_token"
        group = groups.setdefault((layer, decays), {"params": [], "weight_decay": weight_decay if decays else 0.0,
                                                    "lr_scale": layer_decay ** (top - layer)})
        group["params"].append(param)
    return [groups[key] for key in sorted(groups)]


def finetune(encoder: LoadedEncoder, train: ImageDataset, test: ImageDataset, *, options: FinetuneOptions,
             device: torch.device, eval_batch_size: int, reporter: Reporter, data_spec: DataSpec) -> FinetuneResult:
    """Fine-tune ``encoder`` (an MAE encoder) on ``train``; accuracy and loss on ``test``."""
    _check(options)
    spec = encoder.mae.spec
    args = dict(spec["encoder"]["args"], drop_path=options.drop_path)
    model = build_model("vit", num_classes=train.num_classes, mean=spec["mean"], std=spec["std"], **args)
    missing, unexpected = model.net.load_state_dict(encoder.mae.encoder.state_dict(), strict=False)
    if unexpected or any(not key.startswith("classifier.") for key in missing):
        raise UsageError(f"{encoder.source}: its encoder does not fit a ViT classifier "
                         f"(missing {missing[:2]}, unexpected {unexpected[:2]})")
    torch.nn.init.trunc_normal_(model.net.classifier.weight, std=2e-5)
    torch.nn.init.zeros_(model.net.classifier.bias)
    model.to(device).train()

    chosen = subset_indices(len(train), options.train_images, options.seed)
    images, labels = train.images[chosen].to(device), train.labels[chosen].to(device)
    per_epoch = steps_per_epoch(len(labels), options.batch_size)
    total = options.epochs * per_epoch
    peak = options.lr or options.base_lr * options.batch_size / 256
    optimizer = torch.optim.AdamW(layer_decay_groups(model.net, weight_decay=options.weight_decay,
                                                     layer_decay=options.layer_decay), lr=peak)
    amp = amp_dtype(device, "auto")
    scaler = torch.amp.GradScaler("cuda", enabled=amp == torch.float16)
    flip = options.augment == "crop-flip" or (options.augment == "auto" and dataset_info(data_spec.name).flip_ok)
    reporter.info(f"fine-tuning {encoder.source} ({encoder.weights} weights) on {len(labels)} images: "
                  f"{options.epochs} epochs of {per_epoch} steps, layer decay {options.layer_decay}")
    started, loss_sum = time.perf_counter(), torch.zeros((), dtype=torch.float64, device=device)
    for step in range(total):
        epoch, in_epoch = divmod(step, per_epoch)
        if in_epoch == 0:
            order = epoch_order(len(labels), seed=options.seed, epoch=epoch)
        seed_step(options.seed, step, 0, device)  # drop-path draws
        idx = step_indices(order, in_epoch, batch_size=options.batch_size).to(device)
        batch = images[idx].float().div_(255)
        if options.augment != "none":
            batch = crop_flip(batch, padding=crop_padding(batch.shape[-1]), flip=flip,
                              generator=generator(options.seed, step), global_batch=options.batch_size)
        lr = learning_rate(step, total_steps=total, warmup_steps=int(options.warmup_epochs * per_epoch), peak=peak,
                           minimum=0.0, schedule="cosine")
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        with autocast(device, amp):
            loss = F.cross_entropy(model(batch), labels[idx], label_smoothing=options.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        loss_sum += loss.detach().double()
        if in_epoch == per_epoch - 1:
            reporter.info(f"finetune epoch {epoch + 1}/{options.epochs}  loss {float(loss_sum) / per_epoch:.4g}  "
                          f"lr {lr:.3g}  [{time.perf_counter() - started:.1f}s]")
            loss_sum.zero_()
    scores = evaluate_classifier(model, test, batch_size=eval_batch_size, device=device)
    metrics = {"accuracy": scores["accuracy"], "loss": scores["loss"]}
    saved = _save(model, options, encoder, train, data_spec, metrics) if options.save else None
    return FinetuneResult(metrics=metrics, train_images=len(labels), saved=saved)


def _check(options: FinetuneOptions) -> None:
    problems = []
    if options.epochs < 1 or options.batch_size < 1:
        problems.append("--epochs and --batch-size must be at least 1")
    if not 0 < options.layer_decay <= 1:
        problems.append(f"--layer-decay must lie in (0, 1], got {options.layer_decay}")
    if (options.lr or options.base_lr) <= 0:
        problems.append("--lr / --base-lr must be positive")
    if not 0 <= options.drop_path < 1:
        problems.append(f"--drop-path must lie in [0, 1), got {options.drop_path}")
    if problems:
        raise UsageError("finetune: " + "; ".join(problems), hint="see the finetune options in `mltk recipes`")


def _save(model: ImageClassifier, options: FinetuneOptions, encoder: LoadedEncoder, train: ImageDataset,
          data_spec: DataSpec, metrics: dict) -> str:
    config = {"protocol": "finetune", "encoder": encoder.source, "options": to_dict(options)}
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    files, card = classifier_artifact(
        model.cpu().eval(), engine="mim", data=data_spec, class_names=train.class_names, config=config,
        config_sha256=digest, metrics={"test_accuracy": metrics["accuracy"], "test_loss": metrics["loss"]},
        primary_metric="test_accuracy", parent=encoder.source, relation="finetuned")
    return Registry().save(options.save, files=files, card=card).ref
