"""``ShortlistLinear``: an ``nn.Linear(dim, num_labels)`` evaluated only on a shortlist of labels."""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ..ops import reference
from ..ops.csr import Shortlist
from ..ops.dense_topk import dense_topk
from ..ops.shortlist import shortlist_score, shortlist_topk


class ShortlistLinear(nn.Module):
    """A linear classifier over ``num_labels`` labels that scores each query only on its shortlist.

    Holds the parameters of ``nn.Linear(dim, num_labels)`` under the same names and shapes
    (``weight [num_labels, dim]``, ``bias [num_labels]``), so state dicts move between the two
    unchanged. Instead of all ``num_labels`` logits, ``forward(query, shortlist)`` returns the
    logits of the shortlisted labels only, with :func:`xcops.shortlist_score`: the gathered
    ``[B, K, dim]`` weight rows are never built.

    Args:
        num_labels: number of labels ``L``.
        dim: size ``d`` of the query vectors.
        bias: learn a per-label bias.
        sparse_grad: make the gradients of ``weight`` and ``bias`` sparse COO tensors of the
            touched rows, for ``torch.optim.SparseAdam``; then every parameter of this layer is
            sparse (see :meth:`sparse_parameters`). With ``False`` they are dense ``[L, d]``
            and ``[L]`` tensors, for any optimizer.
        fused: ``False`` runs the same maths with the plain-PyTorch reference ops of
            :mod:`xcops.ops.reference` (dense gradients), to compare speed on identical training.

    The weight starts as ``N(0, 1/d)`` and the bias at 0 (XC biases are usually set from label
    rates afterwards), unlike ``nn.Linear``'s uniform initialisation.

    Example:
        >>> import torch
        >>> from xcops.nn import ShortlistLinear
        >>> layer = ShortlistLinear(num_labels=1000, dim=16)
        >>> query = torch.randn(4, 16)
        >>> shortlist = torch.randint(0, 1000, (4, 50))     # label ids per query, -1 = padding
        >>> layer(query, shortlist).shape
        torch.Size([4, 50])
        >>> layer(query, shortlist).sum().backward()
        >>> layer.weight.grad.is_sparse                       # only the shortlisted rows
        True
        >>> optimizer = torch.optim.SparseAdam(layer.sparse_parameters(), lr=1e-3)
        >>> optimizer.step()
        >>> values, labels = layer.topk(query, k=5)           # exact, over all 1000 labels
        >>> labels.shape
        torch.Size([4, 5])
    """

    def __init__(self, num_labels: int, dim: int, bias: bool = True, sparse_grad: bool = True,
                 fused: bool = True, device=None, dtype=None):
        super().__init__()
        factory = dict(device=device, dtype=dtype)
        self.weight = nn.Parameter(torch.empty(num_labels, dim, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(num_labels, **factory))
        else:
            self.register_parameter("bias", None)
        self.sparse_grad = sparse_grad
        self.fused = fused
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weight.normal_(0.0, self.weight.shape[1] ** -0.5)
        if self.bias is not None:
            self.bias.zero_()

    @property
    def num_labels(self) -> int:
        return self.weight.shape[0]

    def forward(self, query: torch.Tensor, shortlist: Shortlist) -> torch.Tensor:
        """Logits of the shortlisted labels: ``<query[b], weight[l]> + bias[l]``.

        ``shortlist`` is a padded ``[B, K]`` int32/int64 tensor of label ids (-1 = padding,
        which scores 0 and gets no gradient) or a CSR pair ``(indptr [B + 1], indices)``;
        the result is ``[B, K]``, or ``[nnz]`` for a CSR shortlist.
        """
        if self.fused:
            return shortlist_score(query, self.weight, shortlist, self.bias, self.sparse_grad)
        return reference.shortlist_score(query, self.weight, shortlist, self.bias)

    @torch.no_grad()
    def topk(self, query: torch.Tensor, k: int,
             shortlist: Optional[Shortlist] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(values [B, k], label ids [B, k])`` of the best-scoring labels, best first.

        Over the shortlist when one is given (:func:`xcops.shortlist_topk`), otherwise exact
        over all labels (:func:`xcops.dense_topk`, which never builds the ``[B, L]`` logits).
        Slots without a candidate hold ``-inf`` and -1. Not differentiable.
        """
        if shortlist is None:
            op = dense_topk if self.fused else reference.dense_topk
            return op(query, self.weight, k, bias=self.bias)
        op = shortlist_topk if self.fused else reference.shortlist_topk
        return op(query, self.weight, shortlist, k, self.bias)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are sparse: all of them when ``sparse_grad`` (and
        ``fused``), for ``torch.optim.SparseAdam``; none otherwise."""
        return list(self.parameters()) if self.sparse_grad and self.fused else []

    def dense_parameters(self) -> list[nn.Parameter]:
        """The parameters with dense gradients (for Adam and the like)."""
        sparse = {id(p) for p in self.sparse_parameters()}
        return [p for p in self.parameters() if id(p) not in sparse]

    def extra_repr(self) -> str:
        return (f"num_labels={self.num_labels}, dim={self.weight.shape[1]}, bias={self.bias is not None}, "
                f"sparse_grad={self.sparse_grad}, fused={self.fused}")
