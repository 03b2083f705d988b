"""``mltk quantize``: quantization-aware training of a float classifier, run through ``run_recipe``.

One step (every method)::

    images  = this step's train images (this rank's slice), augmented as in supervised training
    logits  = student(images)              # the QAT network: quantized where the schedule says so
    loss    = (1 - w) * CE(logits, labels) + w * T^2 * KL(teacher(images) / T || logits / T)
    loss.backward(); optimizer.step()     # by the shared step loop (mltk.core.loop)

At the first step of each phase of the method's schedule (see ``schedule``)
the layers it adds are switched on bottom-up: their input quantizers first,
then, after measuring their quantized inputs on a fixed calibration set
(``calibrate``), their weight quantizers. The progress line names the phase
(BiTAT: the stage, i.e. which layers are being binarized), the loss and the
training accuracy. With ``train.adapt_epochs`` a float adaptation phase
comes first (every method alike): the float shortcuts of the binary-input
layers switch on, every quantizer stays off, and the float network trains
with the same loss and optimizer before the method's own phases begin.

At the end the network is converted to its deployed form (packed codes,
BatchNorm folded), serialised, loaded back exactly as ``mltk eval`` would
load it, and that loaded network is what ``test_accuracy`` measures.

Determinism and resume: the step's images and random draws depend only on
(seed, step, rank); the QAT network's state (latent weights, transforms,
which layers are on) and the optimizer are checkpointed, and phase
switches happen at the start of a step after any checkpoint of that step,
so a resumed run ends bit-identical (on CPU) to an uninterrupted one.
"""

from __future__ import annotations

import copy
import dataclasses

import torch
import torch.nn.functional as F

from mltk.core.catalog import register_recipe
from mltk.core.config import config_hash, to_dict
from mltk.core.errors import ConfigError, UsageError
from mltk.core.loop import StepLoop, StepOutput, StepTask
from mltk.core.registry import ArtifactRecord
from mltk.core.run_recipe import RunContext
from mltk.core.seeding import generator, seed_everything
from mltk.data import DataSpec, dataset_info, load_splits
from mltk.data.batches import epoch_order, per_rank_batch, step_indices, steps_per_epoch
from mltk.data.images.augment import crop_flip, crop_padding
from mltk.engines.quantize.artifact import deployed_from_bytes, quantized_artifact
from mltk.engines.quantize.calibrate import calibrate_layers
from mltk.engines.quantize.config import QuantizeConfig
from mltk.engines.quantize.layers import QuantizedLayer
from mltk.engines.quantize.methods import is_post_training, method_settings, training_options
from mltk.engines.quantize.network import (
    deployed_tensors,
    fill_deployed,
    gated_activations_of,
    plan_quantization,
    quantized_layers,
    to_deployed_form,
    to_training_form,
)
from mltk.engines.quantize.schedule import (
    build_phases,
    phase_at,
    phase_lr,
    split_steps,
    with_adaptation,
)
from mltk.engines.quantize.source import is_foreign_file, load_source, read_foreign_weights
from mltk.nn import build_from_spec
from mltk.nn.artifacts import WEIGHTS_FILE
from mltk.nn.classifiers.evaluation import evaluate_classifier

PRIMARY_METRIC = "test_accuracy"
RECIPE_NAME = "quantize"


@register_recipe(RECIPE_NAME, config=QuantizeConfig, default_preset="digits",
                 description="quantization-aware training of a classifier: BiTAT, XNOR-Net, ReActNet (1 bit), "
                             "uniform 2/4/8 bit (also `mltk quantize MODEL`)")
class QuantizeRecipe(StepTask):
    def __init__(self, cfg: QuantizeConfig, ctx: RunContext):
        self.cfg = cfg
        self.ctx = ctx

    # ------------------------------------------------------------ setup

    def setup(self) -> None:
        cfg, ctx = self.cfg, self.ctx
        if not cfg.model.ref:  # a preset leaves it empty: the model is what each run is given
            raise ConfigError(["model.ref: required: a registry reference, an exported folder or a "
                               ".pt/.safetensors file"], hint="mltk quantize MODEL, or model.ref=MODEL")
        seed_everything(cfg.seed)
        self.source, self.data_spec, self.splits = self._load_source_and_data()
        train = self.splits.train
        ctx.reporter.info(f"model: {self.source.parent} ({self.source.model.arch}); data: {self.data_spec.name}: "
                          f"{len(train)} train, {len(self.splits.test)} test images")
        self._report_budget()
        self.settings = method_settings(cfg)
        student = copy.deepcopy(self.source.model).cpu()
        self.teacher = self.source.model.to(ctx.device).eval()
        for parameter in self.teacher.parameters():
            parameter.requires_grad_(False)
        self.plan = plan_quantization(student, image_shape=tuple(train.image_shape), bits=cfg.quant.bits,
                                      act_bits=cfg.act_bits(), act_kind=self.settings.act_kind,
                                      binary_activation=self.settings.binary_activation,
                                      skip=tuple(cfg.quant.skip), min_binary_channels=cfg.quant.min_binary_channels,
                                      float_shortcuts=cfg.quant.float_shortcuts,
                                      where=self.source.parent)
        to_training_form(student, self.plan, training_options(cfg, self.settings))
        self.student = student.to(ctx.device)
        self.layers = quantized_layers(self.student, self.plan)
        self.gates = gated_activations_of(self.student, self.plan)
        n_layers = len(self.layers)
        ctx.reporter.info(f"{self.settings.name}: W{cfg.quant.bits}/A{cfg.act_bits()} on {n_layers} layers; "
                          f"full precision: " + ", ".join(k["name"] for k in self.plan["full_precision"]))

        self.local_batch = per_rank_batch(cfg.train.batch_size, ctx.dist.world_size)
        self.steps_per_epoch = steps_per_epoch(len(train), cfg.train.batch_size)
        epochs = 0 if is_post_training(cfg) else cfg.train.epochs
        adapt_steps, method_steps = split_steps(cfg.train.adapt_epochs * self.steps_per_epoch,
                                                epochs * self.steps_per_epoch, cfg.train.max_steps)
        self.total_steps = adapt_steps + method_steps
        self.branch_gain = self._effective_branch_gain()
        self.phases = with_adaptation(
            build_phases(self.settings.schedule, num_layers=n_layers, total_steps=method_steps,
                         stages=cfg.bitat.stages, progressive_fraction=cfg.bitat.progressive_fraction,
                         step1_fraction=cfg.reactnet.step1_fraction, binary_inputs=cfg.act_bits() == 1),
            adapt_steps)
        order = torch.randperm(len(train), generator=generator(cfg.seed, 0xCA1B))
        self.calibration_images = train.images[order[:cfg.calibration.images]]
        self.augment = _augment_mode(cfg.train.augment, self.data_spec.name)

        trainable = [p for p in self.student.parameters() if p.requires_grad]
        if not trainable:  # nothing to learn (8-bit post-training): an optimizer over no parameters
            trainable = [torch.nn.Parameter(torch.zeros(()))]
        if cfg.optim.name == "adam":
            self.optimizer = torch.optim.Adam(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
        else:
            self.optimizer = torch.optim.SGD(trainable, lr=cfg.optim.lr, momentum=0.9,
                                             weight_decay=cfg.optim.weight_decay)
        self.loop = StepLoop(ctx, settings=cfg.train, seed=cfg.seed, total_steps=self.total_steps,
                             description="quantize", grad_clip=cfg.optim.grad_clip)
        self.loop.restore(self)
        self.train_images = train.images.to(ctx.device)
        self.train_labels = train.labels.to(ctx.device)
        self._order, self._order_epoch = None, -1

    def _load_source_and_data(self):
        cfg = self.cfg
        if is_foreign_file(cfg.model.ref):
            if not cfg.data.name:
                raise UsageError(f"{cfg.model.ref}: a bare state_dict records no dataset",
                                 hint="pass --data NAME: the data the model was trained on")
            tensors = read_foreign_weights(cfg.model)  # a refused file says so before any data loads
            spec = self._explicit_data_spec()
            splits = load_splits(spec)
            source = load_source(cfg.model, image_shape=tuple(splits.train.image_shape), tensors=tensors)
        else:
            source = load_source(cfg.model)
            spec = self._explicit_data_spec() if cfg.data.name else self._stored_data_spec(source)
            splits = load_splits(spec)
        args = source.model.args
        expected = (args["in_channels"], args["image_size"], args["image_size"])
        if tuple(splits.train.image_shape) != expected:
            raise UsageError(f"{source.parent} takes {'x'.join(map(str, expected))} images, {spec.name} has "
                             f"{'x'.join(map(str, splits.train.image_shape))}",
                             hint="quantize on the data the model was trained for")
        if splits.train.num_classes > args["num_classes"]:
            raise UsageError(f"{spec.name} has {splits.train.num_classes} classes, {source.parent} predicts "
                             f"{args['num_classes']}")
        return source, spec, splits

    def _report_budget(self) -> None:
        """Say what budget this run trains with, and flag a preset sized for other data."""
        cfg, data = self.cfg, self.data_spec.name.split(":")[0]
        self.ctx.reporter.info(f"budget: {cfg.train.epochs} epochs of batch {cfg.train.batch_size}, {cfg.optim.name} "
                               f"lr {cfg.optim.lr:g}" + (f" (a preset sized for {cfg.budget_for})"
                                                         if cfg.budget_for else ""))
        if cfg.budget_for and cfg.budget_for != data:
            self.ctx.reporter.warn(f"the budget was sized for {cfg.budget_for}, not {data}: pass --preset with "
                                   f"one sized for it, or set train.epochs and optim.lr")

    def _explicit_data_spec(self) -> DataSpec:
        d = self.cfg.data
        return DataSpec(name=d.name, data_dir=d.data_dir, download=d.download, val_holdout=d.val_holdout,
                        test_holdout=d.test_holdout, holdout_seed=d.holdout_seed)

    def _stored_data_spec(self, source) -> DataSpec:
        stored = (source.task or {}).get("data") or {}
        if not stored.get("name"):
            raise UsageError(f"{source.parent} records no dataset", hint="pass --data NAME")
        spec = DataSpec.stored(stored)
        if self.cfg.data.data_dir:
            spec = dataclasses.replace(spec, data_dir=self.cfg.data.data_dir)
        if self.cfg.data.val_holdout:  # a validation split of the parent's training data, asked for here
            spec = dataclasses.replace(spec, val_holdout=self.cfg.data.val_holdout)
        return spec

    # ------------------------------------------------------------ phases

    def _enter_phases(self, step: int, bar) -> str:
        """Switch on, bottom-up and phase by phase, every layer the schedule quantizes by ``step``."""
        current = phase_at(self.phases, step)
        for phase in self.phases[:current + 1]:
            if phase.adapt:
                self._switch_shortcuts_on(phase, bar)
            new_act = [i for i in phase.act_layers if not bool(self.layers[i].act_on)]
            new_weight = [i for i in phase.weight_layers if not bool(self.layers[i].weight_on)]
            if not new_act and not new_weight:
                continue
            binary_inputs = [i for i in new_act if self.plan["layers"][i]["act"] in ("sign", "rsign")]
            uniform_inputs = [i for i in new_act if self.plan["layers"][i]["act"] == "uniform"]
            self._calibrate(uniform_inputs, phase.steps)  # their ranges, measured on float inputs
            for i in new_act:
                self.layers[i].act_on.fill_(True)
                gate = self.gates.get(self.plan["layers"][i]["name"])
                if gate is not None and i in binary_inputs:
                    gate.on.fill_(True)
            self._scale_branches([self.layers[i] for i in binary_inputs])
            self._calibrate(new_weight, phase.steps)  # their transforms, measured on the quantized inputs
            for i in new_weight:
                self.layers[i].weight_on.fill_(True)
            names = [self.plan["layers"][i]["name"] for i in sorted(set(new_act) | set(new_weight))]
            what = "inputs and weights" if new_act and new_weight else ("inputs" if new_act else "weights")
            shown = names[0] if len(names) == 1 else f"{names[0]} .. {names[-1]}"
            bar.line(f"{phase.label}: quantizing the {what} of {len(names)} layer{'s' * (len(names) != 1)} "
                     f"({shown}) for {phase.steps} steps")
        return self.phases[current].label

    def _effective_branch_gain(self) -> float:
        """The gain ``_scale_branches`` applies: the configured one, or 1 when no binary layer has a BatchNorm of
        its own between its conv and its float shortcut (a CIFAR ResNet's shortcut joins before the BatchNorm,
        so there is no branch scale to lower), and 1 without training steps (the branches could not grow back).
        The card records this value, not the one asked for."""
        branches = _branches(self.layers)
        if branches and self.total_steps > 0:
            gain = self.cfg.branch_gain(self.source.model.arch)
            if gain != 1:
                self.ctx.reporter.info(f"branch gain {gain:g}: the binary branches of {len(branches)} layers start at "
                                       f"{gain:g} of their BatchNorm scale (quant.branch_gain; 1 turns it off)")
            return gain
        if self.cfg.quant.branch_gain not in (0, 1):
            why = ("without training steps" if branches else f"no binary layer of {self.source.model.arch} has a "
                   f"BatchNorm between its conv and its float shortcut")
            self.ctx.reporter.warn(f"quant.branch_gain={self.cfg.quant.branch_gain:g} has no effect: {why}")
        return 1.0

    @torch.no_grad()
    def _scale_branches(self, layers: list[QuantizedLayer]) -> None:
        """The branch gain on the BatchNorm scale of each binary branch that has a float shortcut around it,
        once, as its inputs turn binary (``act_on`` is saved, so a resumed run does not scale them again)."""
        if self.branch_gain != 1:
            for layer in _branches(layers):
                layer.norm.weight.mul_(self.branch_gain)

    def _switch_shortcuts_on(self, phase, bar) -> None:
        """The float adaptation phase: every float shortcut on (and kept on), every quantizer still off."""
        off = [layer for layer in self.layers if layer.shortcut is not None and not bool(layer.shortcut_on)]
        if not off:
            return
        for layer in off:
            layer.shortcut_on.fill_(True)
        bar.line(f"{phase.label}: float shortcuts on {len(off)} layer{'s' * (len(off) != 1)}, float weights and "
                 f"activations, for {phase.steps} steps")

    def _calibrate(self, indices: list[int], phase_steps: int) -> None:
        """Measure the inputs of ``indices`` on at most as many images as the phase will train on: a phase of
        a few steps is not worth a full calibration set (17 BiTAT stages once cost minutes before 2 steps).
        Post-training quantization (a phase of 0 steps) uses them all: calibration is all it gets."""
        if indices:
            count = self.cfg.calibration.images
            if phase_steps > 0:
                count = min(count, phase_steps * self.cfg.train.batch_size)
            calibrate_layers(self.student, [self.layers[i] for i in indices], self.calibration_images[:count],
                             batch_size=self.cfg.calibration.batch_size, device=self.ctx.device,
                             dist=self.ctx.dist, learn_step=self.settings.learn_step)

    # ------------------------------------------------------------ training (the loop's StepTask)

    has_unused_parameters = True  # layers off in early phases have no gradient yet

    def train(self) -> None:
        self.student.train()
        bar = self.ctx.reporter.progress(self.total_steps)  # not entered: its lines print plainly
        self.loop.run(self)
        self._enter_phases(self.total_steps, bar)  # schedules of 0 steps (8-bit, no QAT) switch on here

    def before_step(self, step: int, bar) -> bool:
        self._phase_label = self._enter_phases(step, bar)
        return False

    def forward_module(self) -> torch.nn.Module:
        return self.student

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"student": self.optimizer}

    def learning_rate(self, step: int) -> float:
        phase = self.phases[phase_at(self.phases, step)]
        return phase_lr(phase, step, self.cfg.optim.lr, self.cfg.optim.schedule)

    def forward(self, step: int, module: torch.nn.Module) -> StepOutput:
        cfg, ctx = self.cfg, self.ctx
        epoch, step_in_epoch = divmod(step, self.steps_per_epoch)
        if epoch != self._order_epoch:
            self._order = epoch_order(len(self.train_labels), seed=cfg.seed, epoch=epoch)
            self._order_epoch = epoch
        idx = step_indices(self._order, step_in_epoch, batch_size=cfg.train.batch_size, rank=ctx.dist.rank,
                           world_size=ctx.dist.world_size).to(ctx.device)
        images = self.train_images[idx].float().div_(255)
        labels = self.train_labels[idx]
        if self.augment != "none":
            images = crop_flip(images, padding=crop_padding(images.shape[-1]), flip=self.augment == "crop-flip",
                               generator=generator(cfg.seed, step), global_batch=cfg.train.batch_size,
                               start=ctx.dist.rank * self.local_batch)
        logits = module(images)
        loss = distillation_loss(logits, labels, self._teacher_logits(images), weight=cfg.kd.weight,
                                 temperature=cfg.kd.temperature)
        accuracy = (logits.detach().argmax(1) == labels).double().mean()
        return StepOutput(loss, {"accuracy": accuracy}, count=len(labels))

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor | None:
        if self.cfg.kd.weight <= 0:
            return None
        with torch.no_grad():
            return self.teacher(images)

    def progress_fields(self, step: int) -> dict:
        return {"stage": self._phase_label}

    def log_due(self, done: int) -> bool:
        return done % self.steps_per_epoch == 0

    def log_record(self, done: int, means: dict[str, float], lr: float | None) -> tuple[str, dict]:
        epoch = (done - 1) // self.steps_per_epoch + 1
        record = {"epoch": epoch, "stage": self._phase_label, "lr": lr, "train_loss": means["loss"],
                  "train_accuracy": means["accuracy"]}
        if self.splits.val is not None:
            val = self._evaluate(self.student, self.splits.val)
            record.update(val_loss=val["loss"], val_accuracy=val["accuracy"])
            self.student.train()
        return f"epoch {epoch}/{self.total_steps // self.steps_per_epoch or 1}  [{self._phase_label}]", record

    def model_state(self) -> dict[str, torch.Tensor]:
        return self.student.state_dict()

    def load_state(self, model_state: dict[str, torch.Tensor], trainer_state: dict) -> None:
        self.student.load_state_dict(model_state)

    # ------------------------------------------------------------ results

    def _evaluate(self, model, dataset, *, on_batch=None) -> dict:
        return evaluate_classifier(model, dataset, batch_size=self.cfg.train.eval_batch_size,
                                   device=self.ctx.device, dist=self.ctx.dist, on_batch=on_batch)

    def _score(self, model, what: str) -> dict:
        """The test figures of ``model``, with a line and a progress bar: on CIFAR-10 a slow network's
        evaluation once ran for minutes without a word."""
        test = self.splits.test
        self.ctx.reporter.info(f"scoring {what} on {len(test)} test images")
        shard = -(-len(test) // self.ctx.dist.world_size)
        with self.ctx.reporter.progress(shard, description=what) as bar:
            return self._evaluate(model, test, on_batch=lambda done: bar.wants_update() and bar.update(done))

    def evaluate(self) -> dict:
        cfg = self.cfg
        deployed = build_from_spec(self.source.model.spec)
        to_deployed_form(deployed, self.plan)
        self.student.eval()
        fill_deployed(deployed, self.student.cpu(), self.plan)
        self.student.to(self.ctx.device)
        tensors = deployed_tensors(deployed, self.plan, vector_dtype=cfg.quant.vector_dtype)
        quantization = {"method": self.settings.name, "bits": cfg.quant.bits, "act_bits": cfg.act_bits(),
                        "settings": self.settings.describe(),
                        "branch_gain": self.branch_gain, "schedule": [
                            {"label": p.label, "steps": p.steps, "layers": len(p.weight_layers)} for p in self.phases]}
        config = to_dict(cfg)
        self.files, self.card = quantized_artifact(
            deployed, tensors, plan=self.plan, quantization=quantization,
            task={"data": dataclasses.asdict(self.data_spec), "class_names": self.splits.train.class_names},
            parent=self.source.parent, config=config, config_sha256=config_hash(cfg), metrics={},
            primary_metric=PRIMARY_METRIC, extra={"run_dir": str(self.ctx.run.path)})
        # Score the network exactly as it will be loaded from the artifact.
        loaded = deployed_from_bytes(self.card, self.files[WEIGHTS_FILE], "the new artifact")
        test = self._score(loaded.to(self.ctx.device), "the deployed network")
        shadow = self._score(self.student, "the training-form network")
        teacher = self._score(self.teacher, "the float parent")
        size = len(self.files[WEIGHTS_FILE])
        metrics = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "test_images": test["count"],
                   "fp_test_accuracy": teacher["accuracy"], "accuracy_gap": teacher["accuracy"] - test["accuracy"],
                   "shadow_test_accuracy": shadow["accuracy"], "size_bytes": size,
                   "fp_size_bytes": self.source.fp_bytes, "size_ratio": self.source.fp_bytes / size,
                   "quantized_layers": len(self.layers), "bits": cfg.quant.bits, "act_bits": cfg.act_bits(),
                   "float_layers": len(self.plan["full_precision"]),
                   "float_layer_parameters": sum(k["parameters"] for k in self.plan["full_precision"])}
        self.card["metrics"] = metrics
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        self.card["metrics"] = metrics
        return self.ctx.registry.save(self.cfg.artifact_name(), files=self.files, card=self.card)


def distillation_loss(logits: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor | None, *,
                      weight: float, temperature: float) -> torch.Tensor:
    """(1 - weight) * CE(logits, labels) + weight * T^2 * KL(softmax(teacher / T) || softmax(logits / T))."""
    ce = F.cross_entropy(logits, labels)
    if teacher_logits is None or weight <= 0:
        return ce
    kl = F.kl_div(F.log_softmax(logits / temperature, dim=1), F.log_softmax(teacher_logits / temperature, dim=1),
                  reduction="batchmean", log_target=True)
    return (1 - weight) * ce + weight * temperature ** 2 * kl


def _augment_mode(augment: str, dataset: str) -> str:
    if augment != "auto":
        return augment
    return "crop-flip" if dataset_info(dataset).flip_ok else "crop"


def _branches(layers: list[QuantizedLayer]) -> list[QuantizedLayer]:
    """The layers whose binary branch has a BatchNorm of its own inside its float shortcut: what the gain scales."""
    return [layer for layer in layers if layer.shortcut is not None and layer.norm is not None]
