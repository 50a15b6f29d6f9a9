"""xcops.optim: RowAdam against torch's SparseAdam, and the per-step schedules."""

import math

import pytest
import torch

from xcops.optim import RowAdam, one_cycle, per_step_schedulers, warmup_linear


def sparse_rows(rows, values, shape):
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape)


@pytest.mark.parametrize("num_rows,dim,touched", [(1, 1, 1), (7, 3, 4), (129, 16, 300)])
def test_row_adam_matches_sparse_adam(num_rows, dim, touched):
    start = torch.randn(num_rows, dim)
    ours, theirs = torch.nn.Parameter(start.clone()), torch.nn.Parameter(start.clone())
    opt_ours, opt_theirs = RowAdam([ours], lr=3e-2), torch.optim.SparseAdam([theirs], lr=3e-2)
    for _ in range(6):
        # repeated rows (uncoalesced gradients) and rows left out of a step both occur
        grad = sparse_rows(torch.randint(0, num_rows, (touched,)), torch.randn(touched, dim), (num_rows, dim))
        ours.grad, theirs.grad = grad.clone(), grad.clone()
        opt_ours.step()
        opt_theirs.step()
    torch.testing.assert_close(ours.detach(), theirs.detach(), rtol=1e-5, atol=1e-6)


def test_row_adam_leaves_untouched_rows_and_decays_touched_ones():
    weight = torch.nn.Parameter(torch.ones(5, 2))
    opt = RowAdam([weight], lr=0.1, weight_decay=0.5)
    weight.grad = sparse_rows(torch.tensor([1, 3]), torch.zeros(2, 2), (5, 2))
    opt.step()
    # a zero gradient moves nothing but the decay: w - lr * wd * w
    torch.testing.assert_close(weight.detach()[[1, 3]], torch.full((2, 2), 0.95))
    assert (weight.detach()[[0, 2, 4]] == 1).all()
    weight.grad = sparse_rows(torch.tensor([], dtype=torch.int64), torch.zeros(0, 2), (5, 2))
    opt.step()  # an empty gradient is a no-op
    assert (weight.detach()[[0, 2, 4]] == 1).all()


def test_row_adam_rejects_dense_gradients_and_bad_settings():
    weight = torch.nn.Parameter(torch.ones(3, 2))
    weight.grad = torch.ones(3, 2)
    with pytest.raises(RuntimeError, match="sparse row gradients"):
        RowAdam([weight]).step()
    for bad in (dict(lr=0.0), dict(betas=(1.0, 0.9)), dict(eps=0.0), dict(weight_decay=-1.0)):
        with pytest.raises(ValueError, match="RowAdam"):
            RowAdam([weight], **bad)


@pytest.mark.parametrize("total", [1, 7, 1000])
def test_one_cycle_rises_to_the_peak_then_anneals(total):
    factor = one_cycle(total, pct_start=0.3, div_factor=10, final_div_factor=100)
    values = [factor(step) for step in range(total)]
    assert values[0] == pytest.approx(0.1)
    assert max(values) <= 1.0 + 1e-12
    if total > 1:
        assert values[-1] == pytest.approx(1e-3)
        peak = values.index(max(values))
        assert all(a <= b for a, b in zip(values[:peak], values[1 : peak + 1]))
        assert all(a >= b for a, b in zip(values[peak:], values[peak + 1 :]))
    if total == 1000:
        assert max(values) == pytest.approx(1.0) and values.index(max(values)) == 300


def test_warmup_linear_schedule():
    factor = warmup_linear(total_steps=10, warmup_steps=4)
    values = [factor(step) for step in range(12)]
    assert values[:5] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert values[5:] == pytest.approx([5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0, 0.0])
    assert warmup_linear(3, 0)(0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="warmup_linear"):
        warmup_linear(0, 1)
    with pytest.raises(ValueError, match="one_cycle"):
        one_cycle(10, pct_start=1.0)


def test_per_step_schedulers_drive_every_optimizer():
    dense, rows = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(3, 2))
    optimizers = [torch.optim.Adam([dense], lr=0.5), RowAdam([rows], lr=0.25)]
    schedulers = per_step_schedulers(optimizers, lambda step: 1 / (step + 1))
    for step in range(1, 4):
        for opt, scheduler in zip(optimizers, schedulers):
            opt.step()  # no gradients: changes nothing, but keeps LambdaLR's call order
            scheduler.step()
        assert optimizers[0].param_groups[0]["lr"] == pytest.approx(0.5 / (step + 1))
        assert optimizers[1].param_groups[0]["lr"] == pytest.approx(0.25 / (step + 1))
    assert math.isfinite(optimizers[1].param_groups[0]["lr"])
