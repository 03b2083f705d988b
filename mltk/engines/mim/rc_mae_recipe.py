"""``mltk train rc-mae``: MAE with an EMA teacher (Lee et al., ICLR 2023, arXiv 2210.02077).

One step, following the official ``engine_pretrain.py``::

    student: pred_s = MAE(x, ids_shuffle)                     trained
    teacher: pred_t = EMA-MAE(x, ids_shuffle)                 the SAME permutation, no gradient, eval mode
    loss    = mae(pred_s) + gamma * mean over masked patches of mean_j (pred_s - pred_t)^2
    optimizer step on the student; then teacher <- m * teacher + (1 - m) * student, every step

The teacher starts as an exact copy of the student and covers every parameter
(encoder and decoder). Both networks see only the visible patches, which is
the paper's cost argument against self-distillation methods whose teacher
encodes the whole image. Downstream evaluation uses the teacher by default,
as the official fine-tuning and linear-probe scripts do.

The momentum schedule is our correction of the official code: ``cosine`` runs
DINO's cosine from ``momentum`` to ``momentum_end`` over the run's global
steps; the official code indexes it by the step within the epoch, which keeps
it at its first value, and ``momentum_schedule: constant`` reproduces that.
"""

from __future__ import annotations

import torch

from mltk.core.catalog import register_recipe
from mltk.core.registry import ArtifactRecord
from mltk.engines.mim.config import RCMAEConfig
from mltk.engines.mim.encoder import STUDENT_FILE, WEIGHTS_FILE, load_strict
from mltk.engines.mim.mae_recipe import build_student, single_stage
from mltk.engines.mim.schedules import ema_momentum
from mltk.engines.mim.training import PretrainRecipe, Stage
from mltk.nn.encoders.mae import MaskedAutoencoder, ema_copy, ema_update, masked_patch_mse

TEACHER_FILE = "teacher.safetensors"


def consistency_loss(student_pred: torch.Tensor, teacher_pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reconstruction consistency: masked-patch MSE between the student's and the (detached) teacher's predictions."""
    return masked_patch_mse(student_pred, teacher_pred.detach(), mask)


@register_recipe("rc-mae", config=RCMAEConfig, default_preset="digits",
                 description="reconstruction-consistent MAE: MAE + EMA teacher on the same mask (arXiv 2210.02077)")
class RCMAERecipe(PretrainRecipe):
    def build(self) -> None:
        self.student = build_student(self.cfg, self.splits.train).to(self.ctx.device)
        self.teacher = ema_copy(self.student)

    def plan(self) -> list[Stage]:
        return single_stage(self.cfg, self.steps_per_epoch)

    def forward_loss(self, images: torch.Tensor, ids_shuffle: torch.Tensor, step: int):
        out = self.train_module(images, ids_shuffle)
        with torch.no_grad():
            teacher_pred = self.teacher.predict(images, ids_shuffle)
        consistency = consistency_loss(out.pred, teacher_pred, out.mask)
        mae = out.loss
        return mae + self.cfg.teacher.gamma * consistency, {"mae": mae, "consistency": consistency}

    def momentum(self, step: int) -> float:
        teacher = self.cfg.teacher
        return ema_momentum(step, total_steps=self.total_steps, start=teacher.momentum, end=teacher.momentum_end,
                            schedule=teacher.momentum_schedule)

    def after_step(self, step: int) -> dict[str, float]:
        momentum = self.momentum(step)
        ema_update(self.teacher, self.student, momentum)
        return {"momentum": momentum}

    def model_state(self) -> dict[str, torch.Tensor]:
        state = {f"student.{k}": v for k, v in self.student.state_dict().items()}
        state.update({f"teacher.{k}": v for k, v in self.teacher.state_dict().items()})
        return state

    def load_model_state(self, tensors: dict[str, torch.Tensor]) -> None:
        for prefix, module in (("student.", self.student), ("teacher.", self.teacher)):
            load_strict(module, {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)},
                        f"checkpoint ({prefix.rstrip('.')})")

    def _roles(self) -> tuple[tuple[str, MaskedAutoencoder], tuple[str, MaskedAutoencoder]]:
        """(downstream role, network), (the other role, network)."""
        pair = (("teacher", self.teacher), ("student", self.student))
        return pair if self.cfg.teacher.downstream == "teacher" else pair[::-1]

    def downstream(self) -> MaskedAutoencoder:
        return self._roles()[0][1]

    def extra_metrics(self) -> dict:
        """The other network's scores (the student's, by default), and the momentum the run ended with."""
        _, (other_role, other) = self._roles()
        metrics = {f"{other_role}_{k}": v for k, v in self.score(other).items()}
        metrics["final_momentum"] = self.momentum(self.total_steps - 1)
        return metrics

    def save(self, metrics: dict) -> ArtifactRecord:
        (role, network), (other_role, other) = self._roles()
        other_file = STUDENT_FILE if other_role == "student" else TEACHER_FILE
        networks = {WEIGHTS_FILE: (role, network), other_file: (other_role, other)}
        return self.save_encoder(self.cfg.artifact_name(), networks, metrics=metrics,
                                 parent=f"dataset:{self.cfg.data.name}", relation="trained")
