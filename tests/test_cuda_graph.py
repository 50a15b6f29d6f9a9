"""A shortlist training step captured as a CUDA graph, and its host syncs counted."""

import warnings

import pytest
import torch

import xcops

from shortlist_inputs import make_problem

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")


def _problem(rng, sparse=False):
    query, weight, shortlist, bias = make_problem(64, 17, 1000, 72, torch.float32, "cuda", rng,
                                                  bias=True)
    targets = (torch.rand(shortlist.shape, generator=rng) < 0.1).float().cuda()
    params = (query.requires_grad_(), weight.requires_grad_(), bias.requires_grad_())

    def forward_backward():
        for p in params:
            p.grad = None  # inside a capture the new gradients come from the graph's pool
        scores = xcops.shortlist_score(query, weight, shortlist, bias, sparse_grad=sparse)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(scores, targets)
        loss.backward()
        return loss.detach()

    def step():
        loss = forward_backward()
        with torch.no_grad():
            for p in params:
                p.sub_(0.5 * p.grad)
        return loss

    return (forward_backward if sparse else step), weight, bias


def _count_syncs(step):
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode(previous)
    return sum("synchronizing" in str(w.message) for w in caught)


def test_training_step_replays_as_a_cuda_graph(rng):
    seed = rng.initial_seed()
    eager_step, eager_weight, eager_bias = _problem(torch.Generator().manual_seed(seed))
    graph_step, graph_weight, graph_bias = _problem(torch.Generator().manual_seed(seed))
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch.cuda.graphs requires
        for _ in range(3):
            eager_step()
            graph_step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_loss = graph_step()
    for _ in range(3):
        graph.replay()
        eager_loss = eager_step()
        torch.testing.assert_close(graph_loss, eager_loss)
    torch.testing.assert_close(graph_weight, eager_weight)
    torch.testing.assert_close(graph_bias, eager_bias)


def test_host_syncs_per_training_step(rng):
    step, weight, bias = _problem(rng)
    step()  # first call: allocator and kernel set-up
    # The default host checks of the ids cost a sync per op call; the counter must see them.
    assert _count_syncs(step) >= 1
    with xcops.device_checks():
        assert _count_syncs(step) == 0
    sparse_forward_backward, _, _ = _problem(rng, sparse=True)
    sparse_forward_backward()
    with xcops.device_checks():
        # A sparse gradient's size is its number of unique labels: one sync, no more.
        assert _count_syncs(sparse_forward_backward) == 1
