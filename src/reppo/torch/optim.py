"""The optimizer of the torch update: Adam and global-norm clipping over lists of tensors with
foreach kernels, their state kept in tensors changed in place (so that a compiled update
captures them and a learning-rate change recompiles nothing)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

# optax.adam's defaults; the update m_hat / (sqrt(v_hat) + eps) is the same in both backends.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


def clip_grads_(grads: list[Tensor], max_norm: float) -> Tensor:
    """Scale gradients in place by min(1, max_norm / global norm), as optax.clip_by_global_norm;
    returns the global norm."""
    norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
    scale = torch.where(norm < max_norm, torch.ones_like(norm), max_norm / norm)
    torch._foreach_mul_(grads, scale)
    return norm


class Adam:
    """Adam (torch.optim.Adam's and optax.adam's update) over a fixed list of tensors.

    The moments, the step count and the learning rate are tensors updated in place, so one
    compiled update (and a CUDA graph replaying it) reads and writes the same storage every
    time, and a new learning rate is a new value in the same tensor, not a recompile. Every
    parameter shares the step count: they are always stepped together.
    """

    def __init__(self, params: list[Tensor], lr: float) -> None:
        self.params = list(params)
        device = self.params[0].device
        self.lr = torch.tensor(lr, dtype=torch.float32, device=device)
        self.step = torch.zeros((), dtype=torch.float32, device=device)
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format)
                        for p in self.params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format)
                           for p in self.params]

    def state_tensors(self) -> list[Tensor]:
        """The state a step reads and writes besides the parameters."""
        return [self.lr, self.step, *self.exp_avg, *self.exp_avg_sq]

    def set_lr(self, lr: float) -> None:
        self.lr.fill_(lr)

    @torch.no_grad()
    def apply_(self, grads: list[Tensor]) -> None:
        """One step with `grads` (one per parameter), in place, without leaving the device."""
        b1, b2 = ADAM_BETAS
        self.step.add_(1.0)
        torch._foreach_lerp_(self.exp_avg, grads, 1.0 - b1)
        torch._foreach_mul_(self.exp_avg_sq, b2)
        torch._foreach_addcmul_(self.exp_avg_sq, grads, grads, 1.0 - b2)
        bias1 = 1.0 - torch.pow(b1, self.step)
        bias2_sqrt = torch.sqrt(1.0 - torch.pow(b2, self.step))
        denom = torch._foreach_sqrt(self.exp_avg_sq)
        torch._foreach_div_(denom, bias2_sqrt)
        torch._foreach_add_(denom, ADAM_EPS)
        updates = torch._foreach_div(self.exp_avg, denom)
        torch._foreach_mul_(updates, -self.lr / bias1)
        torch._foreach_add_(self.params, updates)

    # ---- checkpoints: torch.optim.Adam's state names (step, exp_avg, exp_avg_sq) ----------------
    def state_arrays(self, names: list[str]) -> dict[str, Tensor]:
        out = {}
        for name, m, v in zip(names, self.exp_avg, self.exp_avg_sq, strict=True):
            out.update({f"{name}/step": self.step, f"{name}/exp_avg": m, f"{name}/exp_avg_sq": v})
        return out

    @torch.no_grad()
    def load_arrays(self, names: list[str], arrays: dict[str, Any]) -> None:
        """Copy saved moments and step count in place; a parameter with none saved (a
        checkpoint written before its first step) keeps zeros."""
        for name, m, v in zip(names, self.exp_avg, self.exp_avg_sq, strict=True):
            if f"{name}/exp_avg" in arrays:
                m.copy_(torch.as_tensor(arrays[f"{name}/exp_avg"]).reshape(m.shape))
                v.copy_(torch.as_tensor(arrays[f"{name}/exp_avg_sq"]).reshape(v.shape))
                self.step.copy_(torch.as_tensor(arrays[f"{name}/step"]).reshape(()))
