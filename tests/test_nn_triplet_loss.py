"""xcops.nn.HardNegativeTripletLoss against plain PyTorch, gradcheck, argument checks."""

import pytest
import torch

from xcops.nn import HardNegativeTripletLoss

from shortlist_inputs import make_csr
from test_dense_topk import _plain_triplet


def _inputs(batch, columns, dim, dtype, device, gen):
    query = torch.nn.functional.normalize(torch.randn(batch, dim, generator=gen, dtype=dtype), dim=1)
    labels = torch.nn.functional.normalize(torch.randn(columns, dim, generator=gen, dtype=dtype), dim=1)
    # Several positives per row (some rows none beyond the sampled one), the sampled one among them.
    indptr, extra = make_csr(batch, columns, 3, "cpu", gen)
    positive = torch.randint(0, columns, (batch,), generator=gen)
    rows = torch.repeat_interleave(torch.arange(batch), indptr.diff())
    order = torch.argsort(torch.cat([rows, torch.arange(batch)]), stable=True)
    indices = torch.cat([extra, positive])[order]
    indptr = indptr + torch.arange(batch + 1)
    move = lambda t: t.to(device)  # noqa: E731
    return move(query).requires_grad_(), move(labels).requires_grad_(), move(positive), (move(indptr), move(indices))


@pytest.mark.parametrize("temperature", [None, 0.5])
@pytest.mark.parametrize("batch,columns,k", [(9, 13, 4), (1, 1, 2), (6, 40, 10)])
def test_matches_plain_pytorch(device, rng, temperature, batch, columns, k):
    query, labels, positive, positives = _inputs(batch, columns, 8, torch.float32, device, rng)
    criterion = HardNegativeTripletLoss(margin=0.4, k=k, temperature=temperature)
    got = criterion(query, labels, positive, positives)
    want = _plain_triplet(query, labels, positive, positives, k, 0.4, temperature)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (query, labels), allow_unused=True),
                    torch.autograd.grad(want, (query, labels), allow_unused=True)):
        if w is None:
            assert g is None or not g.any()
        else:
            torch.testing.assert_close(g, w)


@pytest.mark.parametrize("temperature", [None, 0.7])
def test_gradcheck(device, rng, temperature):
    query, labels, positive, positives = _inputs(5, 11, 6, torch.float64, device, rng)
    criterion = HardNegativeTripletLoss(margin=0.5, k=3, temperature=temperature)
    assert torch.autograd.gradcheck(lambda q, l: criterion(q, l, positive, positives), (query, labels))


def test_margin_zero_and_far_negatives_give_zero_loss(device):
    query = torch.eye(3, device=device)
    criterion = HardNegativeTripletLoss(margin=0.0, k=2)
    positives = (torch.arange(4, device=device), torch.arange(3, device=device))
    assert criterion(query, query, torch.arange(3, device=device), positives) == 0


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(margin=-0.1, k=2), "margin"), (dict(margin=0.3, k=0), "k must"),
    (dict(margin=0.3, k=2.0), "k must"), (dict(margin=0.3, k=2, temperature=0), "temperature"),
])
def test_bad_arguments(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        HardNegativeTripletLoss(**kwargs)


def test_repr():
    assert repr(HardNegativeTripletLoss(0.3, 5, 0.1)) == "HardNegativeTripletLoss(margin=0.3, k=5, temperature=0.1)"
