"""A ``transformers`` model as a text embedder: pooled token states, L2-normalised.

Built either from a model folder on local disk (pretrained weights) or from the config dict
of one (architecture only, for checkpoints whose state dict carries the weights), so loading
a run never needs the original folder or the network.
"""

from __future__ import annotations

import torch
from torch import nn

from ..progress import progress_bar

POOLINGS = ("mean", "cls")


class TextEncoder(nn.Module):
    """``forward(input_ids [B, T]) -> [B, d]`` unit-norm float32 embeddings.

    ``pooling="mean"`` averages the states of the non-padding tokens (as sentence-transformers
    does for all-MiniLM-L6-v2); ``"cls"`` takes the first token's state. The attention mask is
    ``input_ids != pad_id``.
    """

    def __init__(self, transformer: nn.Module, pooling: str = "mean", pad_id: int = 0):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        # Weights stay float32 whatever dtype the folder stores; bf16 comes from autocast only.
        self.transformer = transformer.float()
        self.pooling = pooling
        self.pad_id = pad_id

    @classmethod
    def from_folder(cls, folder, pooling: str = "mean", pad_id: int = 0) -> "TextEncoder":
        from transformers import AutoModel

        return cls(AutoModel.from_pretrained(str(folder)), pooling, pad_id)

    @classmethod
    def from_config(cls, config: dict, pooling: str = "mean", pad_id: int = 0) -> "TextEncoder":
        """The architecture of :meth:`config_dict`'s output, randomly initialised."""
        from transformers import AutoConfig, AutoModel

        return cls(AutoModel.from_config(AutoConfig.for_model(**config)), pooling, pad_id)

    def config_dict(self) -> dict:
        return self.transformer.config.to_dict()

    @property
    def dim(self) -> int:
        return int(self.transformer.config.hidden_size)

    @property
    def vocab_size(self) -> int:
        return int(self.transformer.config.vocab_size)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        mask = input_ids != self.pad_id
        # Short texts padded to max_len: attending over the all-padding columns is wasted work.
        used = mask.any(0).nonzero()
        width = int(used.max()) + 1 if len(used) else 1
        input_ids, mask = input_ids[:, :width], mask[:, :width]
        states = self.transformer(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state.float()
        if self.pooling == "cls":
            pooled = states[:, 0]
        else:
            weights = mask.unsqueeze(-1).float()
            pooled = (states * weights).sum(1) / weights.sum(1).clamp_min(1.0)
        return nn.functional.normalize(pooled, dim=-1)

    @torch.no_grad()
    def embed(self, input_ids: torch.Tensor, batch_size: int, device: torch.device, progress: bool = True,
              desc: str = "embed") -> torch.Tensor:
        """``[N, d]`` embeddings of all rows on ``device``, in eval mode (no dropout)."""
        was_training = self.training
        self.eval()
        out = []
        for start in progress_bar(range(0, len(input_ids), batch_size), desc=desc, unit="batch",
                                  disable=not progress):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out.append(self(input_ids[start : start + batch_size].to(device)))
        self.train(was_training)
        return torch.cat(out) if out else torch.empty(0, self.dim, device=device)
