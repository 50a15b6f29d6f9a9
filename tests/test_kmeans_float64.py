"""float64 k-means splits on float64 scores on every device."""

import pytest
import torch

import xcops


def _nearly_identical_points(rng, n=32, d=4):
    # Every score is the same to float32 precision: a split on float32-rounded scores would
    # fall back to point-id order; float64 scores order the points by their tiny offsets.
    base = torch.nn.functional.normalize(torch.randn(d, generator=rng, dtype=torch.float64), dim=0)
    return base + 1e-9 * torch.randn(n, d, generator=rng, dtype=torch.float64)


def test_cpu_split_resolves_float64_scores(rng):
    x = _nearly_identical_points(rng)
    assign, _ = xcops.balanced_kmeans(x, 2, seed=1)
    assert not torch.equal(assign, torch.arange(32) // 16)  # not the id-order fallback
    assert torch.equal(torch.bincount(assign), torch.tensor([16, 16]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_float64_split_matches_cpu(rng):
    x = _nearly_identical_points(rng)
    cpu_assign, _ = xcops.balanced_kmeans(x, 2, seed=1)
    cuda_assign, _ = xcops.balanced_kmeans(x.cuda(), 2, seed=1)
    assert torch.equal(cuda_assign.cpu(), cpu_assign)
