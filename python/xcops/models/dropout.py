"""Dropout with the mask drawn by ``torch.rand``: on the CPU, ``nn.Dropout`` draws it with
``bernoulli_``, ~5x slower, which made it 15% of a SyncXML training step on 2 cores."""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Module):
    """``nn.Dropout`` (inverted: kept values scaled by ``1 / (1 - p)``), faster on the CPU."""

    def __init__(self, p: float = 0.5):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        keep = torch.rand(x.shape, device=x.device) >= self.p
        return x * keep.to(x.dtype) * (1.0 / (1.0 - self.p))

    def extra_repr(self) -> str:
        return f"p={self.p}"
