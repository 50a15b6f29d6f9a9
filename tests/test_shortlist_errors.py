"""Bad input gives an error naming the argument and its value, never a crash or garbage."""

import pytest
import torch

import xcops


def _inputs(device, dtype=torch.float32):
    query = torch.randn(3, 8, device=device, dtype=dtype)
    weight = torch.randn(20, 8, device=device, dtype=dtype)
    shortlist = torch.randint(0, 20, (3, 4), device=device)
    return query, weight, shortlist


@pytest.mark.parametrize("op", ["score", "topk"])
@pytest.mark.parametrize(
    "mutate,error,pattern",
    [
        (lambda q, w, s: (q.int(), w, s), RuntimeError, "query must be float32.*Int"),
        (lambda q, w, s: (q, w.double(), s), RuntimeError, "weight has dtype Double but query has dtype Float"),
        (lambda q, w, s: (q[:, :5], w, s), RuntimeError, "query has d = 5 but weight has d = 8"),
        (lambda q, w, s: (q, w[:, ::2], s), RuntimeError, "weight must be contiguous"),
        (lambda q, w, s: (q, w.unsqueeze(0), s), RuntimeError, r"weight must be 2-D, got shape \[1, 20, 8\]"),
        (lambda q, w, s: (q, w, s[:2]), ValueError, r"B = 3 rows.*got shape \(2, 4\)"),
        (lambda q, w, s: (q, w, s.float()), TypeError, "shortlist must be int32 or int64, got torch.float32"),
        (lambda q, w, s: (q, w, s.clone().fill_(20)), RuntimeError, r"shortlist ids must be < the number of labels L \(weight.size\(0\)\) = 20, got 20"),
        (lambda q, w, s: (q, w, s.clone().fill_(-2)), RuntimeError, r"must be >= -1 \(-1 = padding\), got -2"),
        (lambda q, w, s: (q, w, (torch.tensor([0, 2, 1, 4]), s.flatten()[:4])), RuntimeError,
         "indptr must be non-decreasing"),
        (lambda q, w, s: (q, w, (torch.tensor([0, 1, 2]), s.flatten())), RuntimeError,
         "indptr must have B \\+ 1 = 4 entries"),
        (lambda q, w, s: (q, w, (torch.tensor([0, 1, 2, 5]), s.flatten())), RuntimeError,
         r"indptr\[-1\] must equal the number of indices \(12\), got 5"),
        (lambda q, w, s: (q, w, (torch.tensor([1, 1, 2, 12]), s.flatten())), RuntimeError,
         r"indptr\[0\] must be 0, got 1"),
    ],
)
def test_bad_input(op, mutate, error, pattern):
    query, weight, shortlist = mutate(*_inputs("cpu"))
    with pytest.raises(error, match=pattern):
        if op == "score":
            xcops.shortlist_score(query, weight, shortlist)
        else:
            xcops.shortlist_topk(query, weight, shortlist, k=2)


def test_bad_bias():
    query, weight, shortlist = _inputs("cpu")
    with pytest.raises(RuntimeError, match="bias must have L = 20 entries.*got 19"):
        xcops.shortlist_score(query, weight, shortlist, torch.zeros(19))
    with pytest.raises(RuntimeError, match="bias has dtype Double but query has dtype Float"):
        xcops.shortlist_score(query, weight, shortlist, torch.zeros(20, dtype=torch.float64))


@pytest.mark.parametrize("k", [0, -3])
def test_bad_k(k):
    with pytest.raises(RuntimeError, match=f"k must be >= 1, got {k}"):
        xcops.shortlist_topk(*_inputs("cpu"), k=k)


def test_indices_are_checked_before_indptr():
    # A padded shortlist's indptr is derived from it on its device: the user's tensor is the
    # one a mismatch must name (on CUDA the first bad property is the device, see below).
    query, weight, shortlist = _inputs("cpu")
    indptr = torch.arange(4) * 4
    with pytest.raises(RuntimeError, match="shortlist indices must be int32 or int64, got Float"):
        torch.ops.xcops.shortlist_score(query, weight, indptr.float(), shortlist.flatten().float())


def test_device_checks_switch_keeps_clear_messages_on_cpu():
    query, weight, shortlist = _inputs("cpu")
    with xcops.device_checks():
        assert xcops.set_device_checks(True) is True
        with pytest.raises(RuntimeError, match="must be < the number of labels"):
            xcops.shortlist_score(query, weight, shortlist + 100)
    assert xcops.set_device_checks(False) is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_mixed_devices():
    query, weight, shortlist = _inputs("cpu")
    with pytest.raises(RuntimeError, match="weight is on cuda:0 but query is on cpu"):
        xcops.shortlist_score(query, weight.cuda(), shortlist)
    with pytest.raises(RuntimeError, match="indices is on cpu but query is on cuda:0"):
        xcops.shortlist_score(query.cuda(), weight.cuda(), shortlist)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_out_of_range_on_gpu_is_an_error_not_a_crash():
    query, weight, shortlist = _inputs("cuda")
    with pytest.raises(RuntimeError, match="must be < the number of labels"):
        xcops.shortlist_score(query, weight, shortlist + 100)
    # The context is still usable afterwards.
    assert xcops.shortlist_score(query, weight, shortlist).isfinite().all()
