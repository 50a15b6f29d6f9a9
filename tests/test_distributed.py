"""Sharded ops and ShardedShortlistLinear against their single-process twins, run in 2 and 4
gloo CPU processes.

Spawning processes is the slow part, so one process group per world size runs every case
below; each case reports back by name and becomes one pytest test. Every rank draws the same
global problem from a shared seed, runs the sharded op on its part, and compares with the
single-process op on the whole.
"""

import datetime
import json
import os
import traceback

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import xcops
from xcops.distributed import (LabelPartition, sharded_dense_topk, sharded_shortlist_score,
                               sharded_shortlist_topk, traffic)
from xcops.nn import ShardedShortlistLinear
from xcops.nn.sharded import gather_full_state_dict, shard_state_dict

from conftest import tolerance

WORLD_SIZES = (2, 4)
CASES = {}


def case(fn):
    CASES[fn.__name__] = fn
    return fn


def batch_sizes(world, gen, low=0, high=9):
    """Per-rank batch sizes: random, with one empty rank and one single-query rank."""
    sizes = torch.randint(low, high, (world,), generator=gen).tolist()
    sizes[-1], sizes[0] = 0, max(sizes[0], 1)
    return sizes


def padded_shortlists(sizes, labels, partition, gen, pad_fraction=0.3):
    """Per-rank padded shortlists (widths differ by rank) with padding, duplicates, an empty
    row, and rank 0's first row touching every shard."""
    out = []
    for rank, batch in enumerate(sizes):
        width = int(torch.randint(partition.world_size, partition.world_size + 6, (1,), generator=gen))
        ids = torch.randint(0, labels, (batch, width), generator=gen)
        ids[torch.rand(batch, width, generator=gen) < pad_fraction] = -1
        if batch > 1:
            ids[1] = -1
        if rank == 0:
            starts = partition.starts()[:-1]
            starts = starts[starts < labels]
            ids[0, :len(starts)] = starts
        out.append(ids)
    return out


def csr_shortlists(sizes, labels, gen, max_len=6):
    out = []
    for batch in sizes:
        lengths = torch.randint(0, max_len + 1, (batch,), generator=gen)
        indptr = torch.zeros(batch + 1, dtype=torch.int64)
        indptr[1:] = lengths.cumsum(0)
        out.append((indptr, torch.randint(0, labels, (int(indptr[-1]),), generator=gen)))
    return out


def close(actual, expected, dtype, what):
    actual = actual.to_dense() if actual.is_sparse else actual
    torch.testing.assert_close(actual, expected, **tolerance(dtype), msg=lambda m: f"{what}: {m}")


def check_scores(rank, world, gen, dtype, csr, with_bias, sparse_grad, labels=67, dim=13):
    partition = LabelPartition(labels, world)
    start, end = partition.range(rank)
    sizes = batch_sizes(world, gen)
    weight = torch.randn(labels, dim, generator=gen, dtype=torch.float64).to(dtype)
    bias = torch.randn(labels, generator=gen, dtype=torch.float64).to(dtype) if with_bias else None
    queries = [torch.randn(b, dim, generator=gen, dtype=torch.float64).to(dtype) for b in sizes]
    shortlists = csr_shortlists(sizes, labels, gen) if csr else padded_shortlists(sizes, labels, partition, gen)
    # Upstream gradients of every score: what a loss would send back.
    grads = [torch.randn(s[1].shape if csr else s.shape, generator=gen, dtype=torch.float64).to(dtype)
             for s in shortlists]

    full_w = weight.clone().requires_grad_()
    full_b = bias.clone().requires_grad_() if with_bias else None
    full_q = [q.clone().requires_grad_() for q in queries]
    expected = [xcops.shortlist_score(q, full_w, s, full_b) for q, s in zip(full_q, shortlists)]
    sum((e * g).sum() for e, g in zip(expected, grads)).backward()

    w = weight[start:end].clone().requires_grad_()
    b = bias[start:end].clone().requires_grad_() if with_bias else None
    q = queries[rank].clone().requires_grad_()
    scores = sharded_shortlist_score(q, w, shortlists[rank], partition, b, sparse_grad=sparse_grad)
    (scores * grads[rank]).sum().backward()

    what = f"{dtype} csr={csr} bias={with_bias} sparse={sparse_grad}"
    assert scores.shape == expected[rank].shape, what
    close(scores, expected[rank].detach(), dtype, f"scores {what}")
    close(q.grad, full_q[rank].grad, dtype, f"query grad {what}")
    assert w.grad.is_sparse == sparse_grad, what
    close(w.grad, full_w.grad[start:end], dtype, f"weight grad {what}")
    if with_bias:
        assert b.grad.is_sparse == sparse_grad, what
        close(b.grad, full_b.grad[start:end], dtype, f"bias grad {what}")


@case
def scores_and_grads_padded(rank, world, gen):
    for dtype in (torch.float64, torch.float32):
        for with_bias, sparse_grad in ((True, True), (False, False), (True, False)):
            check_scores(rank, world, gen, dtype, False, with_bias, sparse_grad)


@case
def scores_and_grads_csr(rank, world, gen):
    check_scores(rank, world, gen, torch.float64, True, True, True)
    check_scores(rank, world, gen, torch.float32, True, False, False)


@case
def scores_fewer_labels_than_ranks(rank, world, gen):
    # world - 1 labels: the last shard is empty.
    check_scores(rank, world, gen, torch.float64, False, True, True, labels=world - 1)


def integer_problem(world, gen, labels, dim):
    """Small integer values: the scores are exact in any summation order, and tie often."""
    weight = torch.randint(-2, 3, (labels, dim), generator=gen).float()
    sizes = batch_sizes(world, gen)
    queries = [torch.randint(-2, 3, (b, dim), generator=gen).float() for b in sizes]
    return weight, sizes, queries


@case
def dense_topk_exact(rank, world, gen):
    for labels in (61, world - 1 if world > 2 else 1):
        partition = LabelPartition(labels, world)
        start, end = partition.range(rank)
        weight, sizes, queries = integer_problem(world, gen, labels, 5)
        excludes = csr_shortlists(sizes, labels, gen, max_len=4)
        for k in sorted({min(k, labels) for k in (1, 3, partition.size(0) + 2, labels)}):
            for exclude in (None, excludes[rank]):
                values, ids = sharded_dense_topk(queries[rank], weight[start:end], k, partition, exclude)
                ref_values, ref_ids = xcops.dense_topk(queries[rank], weight, k, exclude)
                assert torch.equal(ids, ref_ids), (labels, k, exclude is not None, ids, ref_ids)
                assert torch.equal(values, ref_values), (labels, k, values, ref_values)
            bias = torch.randint(-2, 3, (labels,), generator=gen).float()
            values, ids = sharded_dense_topk(queries[rank], weight[start:end], k, partition,
                                             bias_shard=bias[start:end])
            ref_values, ref_ids = xcops.dense_topk(queries[rank], weight, k, bias=bias)
            assert torch.equal(ids, ref_ids) and torch.equal(values, ref_values), (labels, k, "bias")


@case
def dense_topk_random_floats(rank, world, gen):
    labels, dim, k = 129, 7, 9
    partition = LabelPartition(labels, world)
    start, end = partition.range(rank)
    weight = torch.randn(labels, dim, generator=gen)
    queries = [torch.randn(b, dim, generator=gen) for b in batch_sizes(world, gen)]
    values, ids = sharded_dense_topk(queries[rank], weight[start:end], k, partition)
    ref_values, ref_ids = xcops.dense_topk(queries[rank], weight, k)
    assert torch.equal(ids, ref_ids)
    close(values, ref_values, torch.float32, "values")


@case
def shortlist_topk_exact(rank, world, gen):
    labels, dim = 53, 4
    partition = LabelPartition(labels, world)
    start, end = partition.range(rank)
    weight, sizes, queries = integer_problem(world, gen, labels, dim)
    bias = torch.randint(-2, 3, (labels,), generator=gen).float()
    for shortlists in (padded_shortlists(sizes, labels, partition, gen), csr_shortlists(sizes, labels, gen)):
        for k in (1, 4, 12):
            got = sharded_shortlist_topk(queries[rank], weight[start:end], shortlists[rank], k, partition,
                                         bias[start:end])
            want = xcops.shortlist_topk(queries[rank], weight, shortlists[rank], k, bias)
            assert torch.equal(got[1], want[1]), (k, got[1], want[1])
            assert torch.equal(got[0], want[0]), (k, got[0], want[0])


@case
def bytes_sent_match_formula(rank, world, gen):
    """The byte count of one forward, from the data alone: ids (+ one row count per sent
    row) as int32 and query rows out, scores of the entries others sent here back."""
    labels, dim = 101, 11
    partition = LabelPartition(labels, world)
    sizes = batch_sizes(world, gen)
    shortlists = padded_shortlists(sizes, labels, partition, gen)
    weight = torch.randn(partition.size(rank), dim, generator=gen)
    query = torch.randn(sizes[rank], dim, generator=gen)
    header = 8 * 5 * (world - 1)  # error flag, dtype, d, rows, entries per destination
    owners = [partition.owner(s.clamp_min(0)).masked_fill(s < 0, -1) for s in shortlists]
    expected = header
    for other in range(world):
        if other != rank:
            mine = owners[rank] == other
            rows, entries = int(mine.any(1).sum()), int(mine.sum())
            theirs = int((owners[other] == rank).sum())
            expected += 4 * (rows + entries) + 4 * dim * rows + 4 * theirs
    traffic.reset()
    sharded_shortlist_score(query, weight, shortlists[rank], partition)
    assert traffic.bytes_sent == expected, (traffic.bytes_sent, expected)
    assert traffic.collectives == 4


def expect_error(fn, exc_type, match):
    with pytest.raises(exc_type, match=match):
        fn()


@case
def bad_use_raises_on_every_rank(rank, world, gen):
    labels, dim = 40, 6
    partition = LabelPartition(labels, world)
    start, end = partition.range(rank)
    weight = torch.randn(labels, dim, generator=gen)
    query = torch.randn(3, dim, generator=gen)
    shortlist = torch.randint(0, labels, (3, 5), generator=gen)
    shard = weight[start:end]
    others = "rank\\(s\\) \\[0\\] passed invalid arguments"

    expect_error(lambda: sharded_shortlist_score(query, shard, shortlist, LabelPartition(labels, world + 1)),
                 ValueError, "partition is for world_size")
    wrong_shape = weight[: end - start + 1] if rank == 0 else shard
    expect_error(lambda: sharded_shortlist_score(query, wrong_shape, shortlist, partition),
                 ValueError if rank == 0 else RuntimeError, "weight_shard must be" if rank == 0 else others)
    bad_ids = shortlist.clone()
    if rank == 0:
        bad_ids[1, 2] = labels
    expect_error(lambda: sharded_shortlist_score(query, shard, bad_ids, partition),
                 ValueError if rank == 0 else RuntimeError, "label ids must be in" if rank == 0 else others)
    expect_error(lambda: sharded_dense_topk(query, shard, labels + 1, partition),
                 ValueError, "k must be an int")
    dtype = torch.float64 if rank == 0 else torch.float32
    expect_error(lambda: sharded_shortlist_score(query.to(dtype), shard.to(dtype), shortlist, partition),
                 ValueError, "same dtype")
    expect_error(lambda: sharded_dense_topk(query, shard, 2 + (rank == 1), partition), ValueError, "same k")
    # A k no row could fill, on one rank only: that rank raises after the exchange, the others
    # answer; then every rank goes on in step.
    if rank == 0:
        expect_error(lambda: sharded_shortlist_topk(query, shard, shortlist, 10**9, partition),
                     ValueError, r"k must be an int in \[1, 40\]")
    else:
        assert sharded_shortlist_topk(query, shard, shortlist, 3, partition)[1].shape == (3, 3)
    # The group is still in step after the errors.
    assert torch.equal(sharded_dense_topk(query, shard, 2, partition)[1], xcops.dense_topk(query, weight, 2)[1])


@case
def module_state_dict_and_topk(rank, world, gen):
    labels, dim = 23, 5
    head = ShardedShortlistLinear(labels, dim)
    full = {"weight": torch.randn(labels, dim, generator=gen), "bias": torch.randn(labels, generator=gen)}
    head.load_state_dict(shard_state_dict(full, rank, world))
    gathered = gather_full_state_dict(head)
    if rank == 0:
        assert torch.equal(gathered["weight"], full["weight"]) and torch.equal(gathered["bias"], full["bias"])
    else:
        assert gathered is None
    with pytest.raises(ValueError, match="holds labels"):
        head.load_state_dict(shard_state_dict(full, (rank + 1) % world, world))
    query = torch.randn(4, dim, generator=gen)
    values, ids = head.topk(query, 6)
    ref = xcops.nn.ShortlistLinear(labels, dim)
    ref.load_state_dict(full)
    ref = ref.topk(query, 6)  # the single-process layer: the same bias-after-GEMM rounding
    assert torch.equal(ids, ref[1])
    close(values, ref[0], torch.float32, "module topk values")


@case
def module_training_matches_single_process(rank, world, gen):
    labels, dim, features, steps = 37, 6, 9, 3
    dtype = torch.float64
    encoder_init = torch.nn.Linear(features, dim, dtype=dtype)
    with torch.no_grad():  # the same start on every rank (the global RNG differs by rank)
        for p in encoder_init.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=dtype))
    full = {"weight": torch.randn(labels, dim, generator=gen, dtype=dtype),
            "bias": torch.randn(labels, generator=gen, dtype=dtype)}
    partition = LabelPartition(labels, world)
    batches = []
    for _ in range(steps):
        sizes = batch_sizes(world, gen, low=1)
        inputs = [torch.randn(b, features, generator=gen, dtype=dtype) for b in sizes]
        shortlists = padded_shortlists(sizes, labels, partition, gen)
        targets = [torch.rand(s.shape, generator=gen, dtype=dtype).round() for s in shortlists]
        batches.append((inputs, shortlists, targets))

    def loss_of(logits, shortlist, target, total):
        terms = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (terms * (shortlist >= 0)).sum() / total

    # Single process: one encoder and the full head on the concatenated global batch.
    ref_encoder = torch.nn.Linear(features, dim, dtype=dtype)
    ref_encoder.load_state_dict(encoder_init.state_dict())
    ref_w = torch.nn.Parameter(full["weight"].clone())
    ref_b = torch.nn.Parameter(full["bias"].clone())
    ref_opts = [torch.optim.Adam(ref_encoder.parameters(), lr=0.05), torch.optim.SparseAdam([ref_w, ref_b], lr=0.05)]
    for inputs, shortlists, targets in batches:
        total = sum(int((s >= 0).sum()) for s in shortlists)
        logits = xcops.shortlist_score(ref_encoder(torch.cat(inputs)), ref_w, torch.cat(_pad_to_width(shortlists)),
                                       ref_b, sparse_grad=True)
        for opt in ref_opts:
            opt.zero_grad()
        loss_of(logits, torch.cat(_pad_to_width(shortlists)), torch.cat(_pad_to_width(targets, 0)), total).backward()
        for opt in ref_opts:
            opt.step()

    # Sharded: the encoder replicated (its gradients summed over ranks, as the head's are:
    # the loss is normalised by the global count), the head split, each rank on its batch.
    # DDP would do the same sum with a comm hook; plain all_reduce keeps this test fast.
    encoder = torch.nn.Linear(features, dim, dtype=dtype)
    encoder.load_state_dict(encoder_init.state_dict())
    head = ShardedShortlistLinear(labels, dim, dtype=dtype)
    head.load_state_dict(shard_state_dict(full, rank, world))
    assert head.dense_parameters() == []
    opts = [torch.optim.Adam(encoder.parameters(), lr=0.05), torch.optim.SparseAdam(head.sparse_parameters(), lr=0.05)]
    for inputs, shortlists, targets in batches:
        total = sum(int((s >= 0).sum()) for s in shortlists)
        logits = head(encoder(inputs[rank]), shortlists[rank])
        for opt in opts:
            opt.zero_grad()
        loss_of(logits, shortlists[rank], targets[rank], total).backward()
        for p in encoder.parameters():
            dist.all_reduce(p.grad)
        for opt in opts:
            opt.step()

    gathered = gather_full_state_dict(head)
    if rank == 0:
        close(gathered["weight"], ref_w.detach(), dtype, "head weight after training")
        close(gathered["bias"], ref_b.detach(), dtype, "head bias after training")
    close(encoder.weight.detach(), ref_encoder.weight.detach(), dtype, "encoder after training")


def _pad_to_width(tensors, value=-1):
    width = max(t.shape[1] for t in tensors)
    return [torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in tensors]


def _worker(rank, world, init_file, out_dir, seed):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=60))
    results = {}
    for index, (name, fn) in enumerate(CASES.items()):
        try:
            fn(rank, world, torch.Generator().manual_seed(seed + index))
            results[name] = None
        except Exception:  # reported by the parent, per case
            results[name] = traceback.format_exc()
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(results, f)
    dist.destroy_process_group()


@pytest.fixture(scope="module", params=WORLD_SIZES, ids=lambda w: f"world{w}")
def results(request, tmp_path_factory):
    world = request.param
    out = tmp_path_factory.mktemp(f"dist{world}")
    seed = int.from_bytes(os.urandom(4), "little")
    print(f"seed: {seed}")
    mp.spawn(_worker, args=(world, str(out / "init"), str(out), seed), nprocs=world, join=True)
    per_rank = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    return {name: {r: per_rank[r][name] for r in range(world)} for name in CASES}


@pytest.mark.parametrize("name", list(CASES))
def test_sharded(results, name):
    failures = {rank: err for rank, err in results[name].items() if err}
    assert not failures, "\n".join(f"rank {rank}:\n{err}" for rank, err in failures.items())


def test_partition_ranges_cover_labels():
    for labels, world in ((1, 1), (7, 3), (3, 4), (129, 8), (2**33 + 5, 6)):
        partition = LabelPartition(labels, world)
        ranges = [partition.range(r) for r in range(world)]
        assert ranges[0][0] == 0 and ranges[-1][1] == labels
        assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
        assert max(e - s for s, e in ranges) - min(e - s for s, e in ranges) <= 1
        probe = torch.tensor(sorted({0, labels - 1, labels // 2, *[s for s, e in ranges if e > s]}))
        owners = partition.owner(probe)
        for i, o in zip(probe.tolist(), owners.tolist()):
            start, end = ranges[o]
            assert start <= i < end


def test_partition_bad_use():
    with pytest.raises(ValueError, match="num_labels"):
        LabelPartition(0, 2)
    with pytest.raises(ValueError, match="world_size"):
        LabelPartition(5, 0)
    with pytest.raises(ValueError, match=r"label ids must be in \[0, 5\)"):
        LabelPartition(5, 2).owner(torch.tensor([1, 5]))
    with pytest.raises(ValueError, match="rank"):
        LabelPartition(5, 2).range(2)


def test_uninitialised_group_is_a_clear_error():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="not initialised"):
        sharded_shortlist_score(torch.randn(2, 3), torch.randn(4, 3), torch.zeros(2, 1, dtype=torch.int64),
                                LabelPartition(4, 1))
    with pytest.raises(RuntimeError, match="not initialised"):
        ShardedShortlistLinear(10, 4)
