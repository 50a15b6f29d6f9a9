"""xcops.nn.ShortlistLinear: scores, gradients, nn.Linear compatibility, optimizers, compile."""

import pytest
import torch
from torch import nn

from xcops.nn import ShortlistLinear

from conftest import tolerance
from shortlist_inputs import make_csr, make_problem


def full_logits(layer, query):
    """The plain nn.Linear logits [B, L] of the layer's parameters."""
    return nn.functional.linear(query.to(layer.weight.dtype), layer.weight, layer.bias)


def gathered(logits, shortlist):
    return logits.gather(1, shortlist.clamp_min(0)).masked_fill(shortlist < 0, 0)


def make_layer(labels, dim, device, gen, bias=True, dtype=torch.float32, **kwargs):
    layer = ShortlistLinear(labels, dim, bias=bias, **kwargs).to(device, dtype)
    if bias:
        with torch.no_grad():  # a zero bias would hide a missing bias term
            layer.bias.copy_(torch.randn(labels, generator=gen))
    return layer


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,width,labels,dim", [(5, 7, 129, 16), (1, 1, 1, 1), (0, 3, 10, 4), (3, 129, 40, 7)])
def test_forward_matches_linear(device, rng, bias, dtype, batch, width, labels, dim):
    query, _, shortlist, _ = make_problem(batch, width, labels, dim, dtype, device, rng)
    layer = make_layer(labels, dim, device, rng, bias, dtype)
    torch.testing.assert_close(layer(query, shortlist), gathered(full_logits(layer, query), shortlist),
                               **tolerance(dtype))


def test_csr_shortlist(device, rng):
    layer = make_layer(50, 8, device, rng)
    query = torch.randn(6, 8, generator=rng).to(device)
    indptr, indices = make_csr(6, 50, 9, device, rng)
    rows = torch.repeat_interleave(torch.arange(6, device=device), indptr.diff())
    want = full_logits(layer, query)[rows, indices]
    torch.testing.assert_close(layer(query, (indptr, indices)), want)


def test_state_dict_round_trips_through_nn_linear(device, rng):
    layer = make_layer(37, 12, device, rng)
    linear = nn.Linear(12, 37).to(device)
    assert {k: v.shape for k, v in layer.state_dict().items()} == {k: v.shape for k, v in linear.state_dict().items()}
    linear.load_state_dict(layer.state_dict())
    query, _, shortlist, _ = make_problem(4, 9, 37, 12, torch.float32, device, rng)
    torch.testing.assert_close(gathered(linear(query), shortlist), layer(query, shortlist))
    with torch.no_grad():
        linear.weight.mul_(-2.0)
        linear.bias.add_(1.0)
    back = ShortlistLinear(37, 12).to(device)
    back.load_state_dict(linear.state_dict())
    torch.testing.assert_close(back(query, shortlist), gathered(linear(query), shortlist))
    # Without a bias the keys match a bias-free nn.Linear.
    assert set(ShortlistLinear(5, 3, bias=False).state_dict()) == set(nn.Linear(3, 5, bias=False).state_dict())


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_gradcheck(device, rng, fused, bias):
    layer = make_layer(20, 5, device, rng, bias, torch.float64, sparse_grad=False, fused=fused)
    query, _, shortlist, _ = make_problem(4, 6, 20, 5, torch.float64, device, rng)
    names = [name for name, _ in layer.named_parameters()]

    def scores(q, *params):
        return torch.func.functional_call(layer, dict(zip(names, params)), (q, shortlist))

    inputs = (query.requires_grad_(), *(p.detach().requires_grad_() for p in layer.parameters()))
    assert torch.autograd.gradcheck(scores, inputs)


def test_sparse_grad_equals_dense_grad(device, rng):
    sparse = make_layer(30, 6, device, rng)
    dense = make_layer(30, 6, device, rng, sparse_grad=False)
    dense.load_state_dict(sparse.state_dict())
    query, _, shortlist, _ = make_problem(5, 8, 30, 6, torch.float32, device, rng)
    upstream = torch.randn(5, 8, generator=rng).to(device)
    for layer in (sparse, dense):
        (layer(query, shortlist) * upstream).sum().backward()
    for name in ("weight", "bias"):
        grad = getattr(sparse, name).grad
        assert grad.is_sparse and not getattr(dense, name).grad.is_sparse
        torch.testing.assert_close(grad.to_dense(), getattr(dense, name).grad)
        # Only the shortlisted labels are stored.
        assert set(grad.coalesce().indices()[0].tolist()) == set(shortlist[shortlist >= 0].tolist())


def test_parameter_groups():
    assert len(ShortlistLinear(10, 4).sparse_parameters()) == 2
    assert ShortlistLinear(10, 4).dense_parameters() == []
    assert len(ShortlistLinear(10, 4, bias=False).sparse_parameters()) == 1
    for layer in (ShortlistLinear(10, 4, sparse_grad=False), ShortlistLinear(10, 4, fused=False)):
        assert layer.sparse_parameters() == [] and len(layer.dense_parameters()) == 2


def test_sparse_adam_updates_only_shortlisted_rows(device, rng):
    layer = make_layer(64, 8, device, rng)
    optimizer = torch.optim.SparseAdam(layer.sparse_parameters(), lr=0.05)
    query, _, shortlist, _ = make_problem(6, 5, 64, 8, torch.float32, device, rng)
    targets = torch.rand(6, 5, generator=rng).round().to(device)
    before = layer.weight.detach().clone()
    losses = []
    for _ in range(20):
        optimizer.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(layer(query, shortlist), targets,
                                                              weight=(shortlist >= 0).float())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    touched = torch.zeros(64, dtype=torch.bool, device=device)
    touched[shortlist[shortlist >= 0]] = True
    changed = (layer.weight.detach() != before).any(1)
    assert torch.equal(changed, touched)


def test_topk_over_shortlist(device, rng):
    layer = make_layer(80, 8, device, rng)
    query, _, shortlist, _ = make_problem(5, 20, 80, 8, torch.float32, device, rng)
    values, labels = layer.topk(query, 4, shortlist)
    logits = gathered(full_logits(layer, query), shortlist).masked_fill(shortlist < 0, float("-inf"))
    want = logits.topk(4, dim=1).values
    torch.testing.assert_close(values, want)
    torch.testing.assert_close(full_logits(layer, query).gather(1, labels), values)


@pytest.mark.parametrize("bias", [False, True])
def test_topk_exact_over_all_labels(device, rng, bias):
    layer = make_layer(300, 8, device, rng, bias)
    query = torch.randn(7, 8, generator=rng).to(device)
    values, labels = layer.topk(query, 6)
    want_values, _ = full_logits(layer, query).topk(6, dim=1)
    torch.testing.assert_close(values, want_values)
    torch.testing.assert_close(full_logits(layer, query).gather(1, labels), values)


def test_reference_ops_give_the_same_scores_and_topk(device, rng):
    fused = make_layer(50, 6, device, rng)
    reference = make_layer(50, 6, device, rng, fused=False)
    reference.load_state_dict(fused.state_dict())
    query, _, shortlist, _ = make_problem(4, 10, 50, 6, torch.float32, device, rng)
    torch.testing.assert_close(fused(query, shortlist), reference(query, shortlist))
    for got, want in zip(fused.topk(query, 3, shortlist), reference.topk(query, 3, shortlist)):
        torch.testing.assert_close(got, want)
    for got, want in zip(fused.topk(query, 3), reference.topk(query, 3)):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("sparse_grad", [True, False])
def test_compile_fullgraph(device, rng, sparse_grad):
    layer = make_layer(40, 8, device, rng, sparse_grad=sparse_grad)
    query, _, shortlist, _ = make_problem(6, 5, 40, 8, torch.float32, device, rng)

    def step(q, s):
        scores = layer(q, s)
        return scores.sigmoid().sum(), layer.topk(q, 3, s)

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    (loss, (values, labels)) = compiled(query, shortlist)
    loss.backward()
    got_grad = layer.weight.grad
    layer.weight.grad = layer.bias.grad = None
    (want_loss, (want_values, want_labels)) = step(query, shortlist)
    want_loss.backward()
    torch.testing.assert_close(loss, want_loss)
    torch.testing.assert_close(values, want_values)
    assert torch.equal(labels, want_labels)
    assert got_grad.is_sparse == sparse_grad
    torch.testing.assert_close(got_grad.to_dense(), layer.weight.grad.to_dense())


def test_repr_and_bad_shortlist():
    layer = ShortlistLinear(10, 4, bias=False)
    assert "num_labels=10, dim=4, bias=False" in repr(layer)
    with pytest.raises(ValueError, match="shortlist"):
        layer(torch.randn(3, 4), torch.zeros(2, 5, dtype=torch.int64))
