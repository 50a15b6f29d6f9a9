"""A learned ranking of a title's candidate labels from the scores that SyncXML mixes.

The log-linear mix of :mod:`xcops.models.score_fusion` weighs each term's log by one fitted
number. It cannot tell "one neighbour voted a little" from "none voted" other than through the
floor under the log, it cannot weigh a term by how far a candidate trails the title's best one,
and it has no view of how common a label is. :class:`CandidateRanker` sees, per candidate and
per term, the log of the score, the score itself and the log relative to the title's best
candidate, plus the log of the label's training frequency, and scores them with a small MLP.

It is fitted like the mix, on held-out training titles, but by a listwise softmax loss (the
candidates of a title compete for its positives: ``logsumexp(all) - logsumexp(positives)``),
full batch with Adam from a seeded start, so a fit is deterministic. In a distributed run every
rank passes its own rows and the loss, its gradients and the feature statistics are summed over
the ranks, so all of them end with the same ranker.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

FEATURES_PER_TERM = 3  # log, score, log relative to the title's best candidate


class CandidateRanker(nn.Module):
    """Scores ``[B, K]`` candidates from ``num_terms`` ``[B, K]`` log-scores (see module docstring)."""

    def __init__(self, num_terms: int, num_labels: int, hidden: int = 32):
        super().__init__()
        self.num_terms = num_terms
        features = FEATURES_PER_TERM * num_terms + 1
        self.register_buffer("label_log_count", torch.zeros(num_labels))
        # Standardisation of the features, fitted with the network so that one learning rate suits all.
        self.register_buffer("shift", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        self.net = nn.Sequential(nn.Linear(features, hidden), nn.GELU(), nn.Linear(hidden, 1))

    def set_label_counts(self, labels) -> None:
        """The labels' frequencies among the training titles (scipy sparse ``[N, L]``)."""
        counts = torch.as_tensor(labels.getnnz(0), dtype=torch.float32)
        if len(counts) != len(self.label_log_count):
            raise ValueError(f"labels has {len(counts)} columns, the ranker {len(self.label_log_count)} labels")
        self.label_log_count.copy_(counts.to(self.label_log_count.device).log1p())

    def features(self, terms: Sequence[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
        """``[B, K, F]`` unstandardised features of each candidate (padding: ``candidates < 0``)."""
        if len(terms) != self.num_terms:
            raise ValueError(f"the ranker was fitted on {self.num_terms} score terms, got {len(terms)}")
        valid = candidates >= 0
        columns = []
        for term in terms:
            log = term.float().masked_fill(~valid, 0.0)
            best = log.masked_fill(~valid, float("-inf")).amax(1, keepdim=True).clamp_min(-1e4)
            columns += [log, log.exp().masked_fill(~valid, 0.0), (log - best).masked_fill(~valid, 0.0)]
        columns.append(self.label_log_count[candidates.clamp_min(0)].masked_fill(~valid, 0.0))
        return torch.stack(columns, dim=2)

    def forward(self, terms: Sequence[torch.Tensor], candidates: torch.Tensor) -> torch.Tensor:
        """``[B, K]`` ranking scores, ``-inf`` at padding."""
        scores = self.net((self.features(terms, candidates) - self.shift) / self.scale).squeeze(2)
        return scores.masked_fill(candidates < 0, float("-inf"))

    def fit(self, terms: Sequence[torch.Tensor], candidates: torch.Tensor, hits: torch.Tensor, steps: int = 300,
            lr: float = 0.01, seed: int = 0,
            total: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> float:
        """Fits the network on these rows (``hits [B, K]``: whether each candidate is a positive)
        and returns the final mean loss. ``total`` sums a tensor over the ranks of a distributed
        run (None: one process)."""
        total = total or (lambda values: values)
        valid = candidates >= 0
        features = self.features(terms, candidates)
        flat = features[valid].double()
        stats = total(torch.stack([torch.full_like(flat[0], len(flat)), flat.sum(0), flat.square().sum(0)]))
        count = stats[0].clamp_min(1)
        mean = stats[1] / count
        self.shift.copy_(mean.float())
        self.scale.copy_((stats[2] / count - mean.square()).clamp_min(0).sqrt().clamp_min(1e-6).float())
        features = (features - self.shift) / self.scale
        # Rows with no positive among their candidates teach nothing about their order.
        learnable = (hits & valid).any(1)
        rows = float(total(learnable.sum().double().reshape(1)))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            for layer in self.net:
                if isinstance(layer, nn.Linear):
                    layer.reset_parameters()
        optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        loss = torch.zeros(1)
        for _ in range(steps):
            optimizer.zero_grad()
            scores = self.net(features[learnable]).squeeze(2).masked_fill(~valid[learnable], float("-inf"))
            positives = scores.masked_fill(~hits[learnable], float("-inf"))
            loss = (scores.logsumexp(1) - positives.logsumexp(1)).sum() / max(rows, 1.0)
            loss.backward()
            for parameter in self.net.parameters():
                parameter.grad = total(parameter.grad)
            optimizer.step()
        return float(total(loss.detach().reshape(1)))
