"""Optimizers and per-step learning-rate schedules for the models.

:class:`RowAdam` is Adam for parameters with sparse row gradients (embedding tables, the
shortlist heads): the same lazy update as ``torch.optim.SparseAdam`` (a row's moments and
weights change only in the steps that touch it, bias correction by the global step), done
with dense row gathers and scatters instead of sparse-tensor arithmetic. On a 2-core CPU
SparseAdam spent ~190 ms of a 440 ms SyncXML step in sparse ``mul``/``pow``/``sub``; this takes
a few ms for the same rows.

The schedules return the factor that multiplies an optimizer's base learning rate at a step,
for ``torch.optim.lr_scheduler.LambdaLR`` stepped once per batch.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable

import torch


class RowAdam(torch.optim.Optimizer):
    """Lazy Adam over the rows that a sparse (COO, dim 0 sparse) gradient touches.

    Matches ``torch.optim.SparseAdam`` to rounding. ``weight_decay`` is decoupled (AdamW) and,
    like the moments, applies only to the touched rows.
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        if not lr > 0:
            raise ValueError(f"RowAdam: lr must be > 0, got {lr}")
        if not (0 <= betas[0] < 1 and 0 <= betas[1] < 1):
            raise ValueError(f"RowAdam: betas must be in [0, 1), got {betas}")
        if not eps > 0 or weight_decay < 0:
            raise ValueError(f"RowAdam: eps must be > 0 and weight_decay >= 0, got {eps} and {weight_decay}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                if not grad.is_sparse:
                    raise RuntimeError("RowAdam takes sparse row gradients (e.g. nn.Embedding(sparse=True), "
                                       "xcops.nn.ShortlistLinear); use torch.optim.Adam for dense ones")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param)
                    state["exp_avg_sq"] = torch.zeros_like(param)
                state["step"] += 1
                grad = grad.coalesce()
                rows, values = grad.indices()[0], grad.values()
                if rows.numel() == 0:
                    continue
                exp_avg = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)
                exp_avg_sq = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values,
                                                                                           value=1 - beta2)
                state["exp_avg"].index_copy_(0, rows, exp_avg)
                state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
                step = state["step"]
                step_size = group["lr"] * math.sqrt(1 - beta2**step) / (1 - beta1**step)
                update = exp_avg.div_(exp_avg_sq.sqrt_().add_(group["eps"])).mul_(-step_size)
                if group["weight_decay"]:
                    update.add_(param.index_select(0, rows), alpha=-group["lr"] * group["weight_decay"])
                param.index_add_(0, rows, update)
        return loss


def one_cycle(total_steps: int, pct_start: float = 0.33, div_factor: float = 10.0,
              final_div_factor: float = 1e4) -> Callable[[int], float]:
    """The 1cycle policy (Smith & Topin) as a factor of the peak rate: from ``1 / div_factor``
    up to 1 over the first ``pct_start`` of the steps, then down to
    ``1 / (div_factor * final_div_factor)``, both legs cosine (as torch's OneCycleLR, without
    its momentum cycling)."""
    if total_steps < 1 or not 0 < pct_start < 1 or div_factor < 1 or final_div_factor < 1:
        raise ValueError(f"one_cycle: need total_steps >= 1, 0 < pct_start < 1 and div factors >= 1, got "
                         f"{total_steps}, {pct_start}, {div_factor}, {final_div_factor}")
    start, end = 1.0 / div_factor, 1.0 / (div_factor * final_div_factor)
    rise = max(int(pct_start * total_steps), 1)

    def factor(step: int) -> float:
        if step < rise:
            return _cosine(start, 1.0, step / rise)
        return _cosine(1.0, end, min((step - rise) / max(total_steps - 1 - rise, 1), 1.0))

    return factor


def warmup_linear(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Linear warm-up from 0 to 1 over ``warmup_steps``, then linear decay to 0 at
    ``total_steps`` (the schedule of NGAME's M1 and M4)."""
    if total_steps < 1 or warmup_steps < 0:
        raise ValueError(f"warmup_linear: need total_steps >= 1 and warmup_steps >= 0, got "
                         f"{total_steps} and {warmup_steps}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        return max(total_steps - step, 0) / max(total_steps - warmup_steps, 1)

    return factor


def _cosine(begin: float, end: float, fraction: float) -> float:
    return end + (begin - end) * (1 + math.cos(math.pi * fraction)) / 2


def per_step_schedulers(optimizers: list[torch.optim.Optimizer],
                        factor: Callable[[int], float]) -> list[torch.optim.lr_scheduler.LambdaLR]:
    """One ``LambdaLR`` per optimizer with the same factor; step them all after each batch."""
    return [torch.optim.lr_scheduler.LambdaLR(opt, factor) for opt in optimizers]
