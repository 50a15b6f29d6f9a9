"""The interface every model that ``xcops train`` can train implements."""

from __future__ import annotations

from typing import Any, ClassVar, Optional

import torch
from torch import nn

from ..optim import RowAdam


class XCModel(nn.Module):
    """A trainable XC model: built from a config and a training set, trained by :meth:`fit`,
    queried by :meth:`predict`, and rebuilt from :meth:`metadata` when a run is loaded.

    Subclasses set ``name`` (the ``--model`` value) and register in :mod:`xcops.models`.
    Model-specific hyperparameters come from ``cfg.model_args``.
    """

    name: ClassVar[str]
    # Whether fit takes ``state_dir``: saves its training state there after each epoch and,
    # with ``cfg.resume``, continues from it (:class:`xcops.training_state.EpochCheckpoints`).
    resumable: ClassVar[bool] = False

    @classmethod
    def make_tokenizer(cls, cfg) -> Optional[Any]:
        """The tokenizer the data is encoded with; ``None`` fits xcops' SimpleTokenizer."""
        return None

    @classmethod
    def create(cls, cfg, train_set) -> "XCModel":
        raise NotImplementedError

    def fit(self, cfg, train_set, device: torch.device, progress: bool = True) -> dict:
        """Trains in place; returns statistics to merge into the run's metrics. A
        :attr:`resumable` model also takes ``state_dir`` (None: save no training state)."""
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

    def sparse_parameters(self) -> list[nn.Parameter]:
        """Parameters whose gradients are sparse (trained by :class:`xcops.optim.RowAdam`)."""
        return []

    def make_optimizers(self, lr: float, sparse_lr: Optional[float] = None) -> list[torch.optim.Optimizer]:
        """Adam for the dense parameters, :class:`xcops.optim.RowAdam` (SparseAdam's lazy
        update, faster) for :meth:`sparse_parameters` at ``sparse_lr`` (default ``lr``).
        Frozen parameters (``requires_grad=False``) get neither."""
        sparse = [p for p in self.sparse_parameters() if p.requires_grad]
        sparse_ids = {id(p) for p in self.sparse_parameters()}
        dense = [p for p in self.parameters() if id(p) not in sparse_ids and p.requires_grad]
        # fused: one pass over the weights (5 ms for 10M on 2 cores, against 30 for foreach)
        optimizers = [torch.optim.Adam(dense, lr=lr, fused=True)]
        if sparse:
            optimizers.append(RowAdam(sparse, lr=lr if sparse_lr is None else sparse_lr))
        return optimizers

    @staticmethod
    def optimizer_step(optimizers: list[torch.optim.Optimizer], loss: torch.Tensor) -> torch.Tensor:
        """One backward pass and one step of every optimizer; returns the detached loss."""
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        loss.backward()
        for opt in optimizers:
            opt.step()
        return loss.detach()
