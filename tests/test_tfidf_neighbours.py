"""TfidfNeighbours (the kNN of SyncXML's fusion over exact words) against a brute-force kNN of
the dense TF-IDF."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tfidf_reference import dense_tfidf
from xcops.models.tfidf_neighbours import TfidfNeighbours

pytestmark = pytest.mark.usefixtures("single_thread")


def random_set(rng, rows, vocab, num_labels, length=6):
    ids = torch.from_numpy(rng.integers(0, vocab, (rows, length)))
    ids[rng.random((rows, length)) < 0.3] = 0
    return ids, sp.csr_matrix((rng.random((rows, num_labels)) < 0.2).astype(np.float32))


def reference_nearest(train_ids, queries, vocab, k, temperature, unknown_id):
    """Every training title scored; the k best by cosine (ties by row) among those sharing a word."""
    train, query = dense_tfidf(train_ids, queries, vocab, False, unknown_id)
    cosines = query @ train.T
    titles = np.full((len(queries), k), -1)
    weights = np.zeros((len(queries), k))
    for row in range(len(queries)):
        order = [j for j in np.lexsort((np.arange(len(train)), -cosines[row])) if cosines[row, j] > 0][:k]
        titles[row, : len(order)] = order
        if order:
            logits = cosines[row, order] / temperature
            weights[row, : len(order)] = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    return weights, titles


@pytest.mark.parametrize("unknown_id", [None, 1])
@pytest.mark.parametrize("num_titles, vocab, k", [(1, 5, 1), (7, 12, 20), (129, 60, 5)])
def test_nearest_and_votes_match_a_brute_force_knn(num_titles, vocab, k, unknown_id):
    rng = np.random.default_rng(num_titles + vocab)
    num_labels = 9
    train_ids, labels = random_set(rng, num_titles, vocab, num_labels)
    queries = torch.from_numpy(rng.integers(0, vocab, (11, 5)))
    queries[0] = 0  # a title of padding only has no neighbour
    module = TfidfNeighbours.build(train_ids, labels, vocab, pad_id=0, k=k, temperature=0.3, unknown_id=unknown_id)
    weights, titles = module.nearest(queries)
    expected_weights, expected_titles = reference_nearest(train_ids, queries, vocab, min(k, num_titles), 0.3,
                                                          unknown_id)
    assert titles.shape == (11, min(k, num_titles)) and bool((titles[0] == -1).all())
    # Equal cosines may order differently in float32; the sets of cosines and the weights agree.
    np.testing.assert_allclose(weights.numpy(), expected_weights, atol=1e-5)
    candidates = torch.from_numpy(rng.integers(-1, num_labels, (11, 7)))
    dense = labels.toarray() > 0
    carried = np.where(expected_titles[:, None, :] >= 0,
                       dense[np.maximum(expected_titles, 0)[:, None, :], np.maximum(candidates.numpy(), 0)[:, :, None]],
                       False)
    expected_votes = np.where(candidates.numpy() < 0, 0.0, (carried * expected_weights[:, None, :]).sum(2))
    np.testing.assert_allclose(module(queries, candidates).numpy(), expected_votes, atol=1e-5)


def test_ties_at_the_kth_cosine_go_to_the_lowest_rows():
    # Ten identical titles tie; the three kept must be the first three, whatever the product's order.
    train_ids = torch.tensor([[2, 3, 0]] * 10 + [[2, 4, 0], [5, 6, 0]])
    labels = sp.csr_matrix(np.eye(12, 4, dtype=np.float32))
    module = TfidfNeighbours.build(train_ids, labels, 8, pad_id=0, k=3)
    weights, titles = module.nearest(torch.tensor([[2, 3, 0], [4, 2, 0], [7, 0, 0]]))
    assert titles[0].tolist() == [0, 1, 2] and torch.allclose(weights[0], torch.full((3,), 1 / 3))
    assert titles[1, 0] == 10 and titles[2].tolist() == [-1, -1, -1] and bool((weights[2] == 0).all())


def test_labels_of_missing_neighbours_are_padding():
    rng = np.random.default_rng(3)
    train_ids, labels = random_set(rng, 20, 10, 6)
    module = TfidfNeighbours.build(train_ids, labels, 10, pad_id=0, k=4)
    titles = torch.tensor([[0, -1, 5], [-1, -1, -1]])
    found = module.labels_of(titles)
    assert sorted(int(x) for x in found[0] if x >= 0) == sorted([*labels[0].indices, *labels[5].indices])
    assert bool((found[1] == -1).all())


def test_a_copy_loaded_from_its_state_dict_finds_the_same_neighbours():
    rng = np.random.default_rng(4)
    train_ids, labels = random_set(rng, 30, 15, 5)
    module = TfidfNeighbours.build(train_ids, labels, 15, pad_id=0, k=3, temperature=0.2)
    module.nearest(train_ids[:2])  # caches the posting lists of this module's buffers
    copy = TfidfNeighbours(15, 30, module.posting_titles.numel(), module.keys.numel(), 5, k=3, temperature=0.2)
    copy.nearest(train_ids[:2])  # a cache made before loading must not survive it
    copy.load_state_dict(module.state_dict())
    for got, expected in zip(copy.nearest(train_ids[:8]), module.nearest(train_ids[:8])):
        assert torch.equal(got, expected)
    assert module.nearest(train_ids[:0])[1].shape == (0, 3)
