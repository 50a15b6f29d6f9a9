"""The interface every model that ``xcops train`` can train implements."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import nn


class XCModel(nn.Module):
    """A trainable XC model: built from a config and a training set, trained by :meth:`fit`,
    queried by :meth:`predict`, and rebuilt from :meth:`metadata` when a run is loaded.

    Subclasses set ``name`` (the ``--model`` value) and register in :mod:`xcops.models`.
    Model-specific hyperparameters come from ``cfg.model_args``.
    """

    name: ClassVar[str]

    @classmethod
    def make_tokenizer(cls, cfg) -> Optional[Any]:
        """The tokenizer the data is encoded with; ``None`` fits xcops' SimpleTokenizer."""
        return None

    @classmethod
    def create(cls, cfg, train_set) -> "XCModel":
        raise NotImplementedError

    def fit(self, cfg, train_set, device: torch.device, progress: bool = True) -> dict:
        """Trains in place; returns statistics to merge into the run's metrics."""
        raise NotImplementedError

    def predict(self, input_ids: torch.Tensor, k: int, batch_size: int, device: torch.device,
                progress: bool = True) -> torch.Tensor:
        """``[N, k]`` int64 label ids, best first (-1 where fewer than k are ranked)."""
        raise NotImplementedError

    def metadata(self) -> dict:
        """JSON-serialisable constructor arguments; ``from_metadata`` rebuilds the module."""
        raise NotImplementedError

    @classmethod
    def from_metadata(cls, meta: dict) -> "XCModel":
        raise NotImplementedError
