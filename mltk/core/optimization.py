"""The backward half of a training step: loss scaling, gradient clipping, the optimizer step.

:class:`Optimization` wraps one optimizer with the gradient scaler that
float16 autocast needs (a no-op otherwise) and the clipping of the global
gradient norm; the step loop owns one per optimizer an engine declares.
"""

from __future__ import annotations

import torch


class Optimization:
    def __init__(self, optimizer: torch.optim.Optimizer, *, amp: torch.dtype | None, grad_clip: float = 0.0):
        self.optimizer = optimizer
        # Only float16 needs loss scaling; a scaler is not even built otherwise (building one probes CUDA).
        self.scaler = torch.amp.GradScaler("cuda") if amp == torch.float16 else None
        self.grad_clip = grad_clip

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def step(self, loss: torch.Tensor) -> None:
        """Backpropagate ``loss`` and update the parameters."""
        self.optimizer.zero_grad(set_to_none=True)
        (self.scaler.scale(loss) if self.scaler else loss).backward()
        if self.grad_clip > 0:
            if self.scaler:
                self.scaler.unscale_(self.optimizer)
            params = [p for group in self.optimizer.param_groups for p in group["params"]]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        if state.get("scaler") and self.scaler:
            self.scaler.load_state_dict(state["scaler"])


def adamw_without_decay_on_vectors(params, *, lr: float, weight_decay: float,
                                   betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only: biases and norm scales (1-D) are not decayed."""
    params = [p for p in params if p.requires_grad]
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=betas)
