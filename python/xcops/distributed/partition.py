"""Contiguous label ranges, one per rank: which rank owns which label of ``[0, L)``."""

from __future__ import annotations

from typing import Tuple

import torch


class LabelPartition:
    """Splits ``num_labels`` labels into ``world_size`` contiguous ranges.

    Rank ``r`` owns ``[start_r, end_r)``; the first ``num_labels % world_size`` ranks own one
    label more than the others, so shard sizes differ by at most one (as ``torch.chunk``
    would not guarantee). Contiguous ranges make ``owner`` a division and a shard's local id
    ``id - start``, so routing needs no lookup table.

    Example:
        >>> from xcops.distributed import LabelPartition
        >>> p = LabelPartition(10, 3)
        >>> [p.range(r) for r in range(3)]
        [(0, 4), (4, 7), (7, 10)]
        >>> p.owner(torch.tensor([0, 3, 4, 9])).tolist()
        [0, 0, 1, 2]
    """

    def __init__(self, num_labels: int, world_size: int):
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive int, got {num_labels!r}")
        if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be a positive int, got {world_size!r}")
        self.num_labels = num_labels
        self.world_size = world_size
        self._base, self._extra = divmod(num_labels, world_size)

    def _check_rank(self, rank: int) -> None:
        if not 0 <= rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}), got {rank}")

    def range(self, rank: int) -> Tuple[int, int]:
        """``(start, end)`` of the labels rank ``rank`` owns."""
        self._check_rank(rank)
        start = rank * self._base + min(rank, self._extra)
        return start, start + self._base + (rank < self._extra)

    def size(self, rank: int) -> int:
        """How many labels rank ``rank`` owns (``L_r``, the rows of its weight shard)."""
        start, end = self.range(rank)
        return end - start

    def starts(self, device=None) -> torch.Tensor:
        """``[world_size + 1]`` int64 range boundaries: rank r owns ``[starts[r], starts[r+1])``."""
        bounds = [self.range(r)[0] for r in range(self.world_size)] + [self.num_labels]
        return torch.tensor(bounds, dtype=torch.int64, device=device)

    def owner(self, ids: torch.Tensor) -> torch.Tensor:
        """The owning rank of each id (int64, same shape and device as ``ids``).

        Raises ``ValueError`` for ids outside ``[0, num_labels)``; padding (-1) must be
        removed first.
        """
        ids = torch.as_tensor(ids)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor, got {ids.dtype}")
        ids = ids.to(torch.int64)
        if ids.numel():
            low, high = int(ids.min()), int(ids.max())
            if low < 0 or high >= self.num_labels:
                raise ValueError(
                    f"label ids must be in [0, {self.num_labels}), got values in [{low}, {high}]"
                )
        # The first `extra` ranks hold base + 1 labels, the rest hold base.
        big = self._extra * (self._base + 1)
        if self._base == 0:  # fewer labels than ranks: label i lives on rank i
            return ids.clone()
        return torch.where(ids < big, ids // (self._base + 1), self._extra + (ids - big) // self._base)

    def __eq__(self, other) -> bool:
        return (isinstance(other, LabelPartition) and other.num_labels == self.num_labels
                and other.world_size == self.world_size)

    def __hash__(self) -> int:
        return hash((self.num_labels, self.world_size))

    def __repr__(self) -> str:
        return f"LabelPartition(num_labels={self.num_labels}, world_size={self.world_size})"
