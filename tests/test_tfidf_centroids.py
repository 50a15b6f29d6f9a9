"""TF-IDF label centroids (SyncXML's fusion) against the same cosines computed densely with scipy."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from tfidf_reference import dense_tfidf
from xcops.models.score_fusion import ALPHAS, fit_alpha
from xcops.models.tfidf_centroids import TfidfCentroids

pytestmark = pytest.mark.usefixtures("single_thread")


def random_set(rng, rows, vocab, num_labels, length=7):
    ids = torch.from_numpy(rng.integers(0, vocab, (rows, length)))  # 0 is padding; repeats happen
    ids[rng.random((rows, length)) < 0.3] = 0
    dense = rng.random((rows, num_labels)) < 0.15
    return ids, sp.csr_matrix(dense.astype(np.float32))


def dense_cosines(train_ids, labels, vocab, queries, candidates, bigrams=False, unknown_id=None):
    train, query = dense_tfidf(train_ids, queries, vocab, bigrams, unknown_id)
    centroids = labels.T.toarray() @ train
    centroids /= np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-12)
    full = query @ centroids.T
    expected = np.take_along_axis(full, np.maximum(candidates.numpy(), 0), 1)
    return np.where(candidates.numpy() < 0, 0.0, expected)


@pytest.mark.parametrize("bigrams, unknown_id", [(False, None), (True, None), (True, 1)])
@pytest.mark.parametrize("rows, vocab, num_labels, batch, width", [(1, 5, 1, 1, 1), (40, 30, 7, 9, 7),
                                                                   (129, 200, 50, 17, 12)])
def test_cosines_match_the_dense_computation(rows, vocab, num_labels, batch, width, bigrams, unknown_id):
    rng = np.random.default_rng(rows + vocab)
    train_ids, labels = random_set(rng, rows, vocab, num_labels)
    phrase = torch.tensor([2, 3, 4])  # in every other title: two bigrams held by two or more titles
    train_ids[::2, 1:4] = phrase
    # Test titles may hold ids that no training title has (idf > 0, no centroid weight).
    queries = torch.from_numpy(rng.integers(0, vocab, (batch, 9)))
    queries[:, 2:5] = phrase
    candidates = torch.from_numpy(rng.integers(-1, num_labels, (batch, width)))
    module = TfidfCentroids.from_training_set(train_ids, labels, vocab, pad_id=0, bigrams=bigrams,
                                              unknown_id=unknown_id)
    assert (len(module.vocabulary.bigrams) >= 2) == (bigrams and rows >= 3)
    got = module(queries, candidates)
    expected = dense_cosines(train_ids, labels, vocab, queries, candidates, bigrams, unknown_id)
    np.testing.assert_allclose(got.numpy(), expected, atol=1e-5)
    assert got.dtype == torch.float32 and got.shape == candidates.shape


def test_titles_of_padding_only_and_empty_batches_score_zero():
    rng = np.random.default_rng(0)
    train_ids, labels = random_set(rng, 20, 15, 4)
    module = TfidfCentroids.from_training_set(train_ids, labels, 15, pad_id=0)
    assert torch.equal(module(torch.zeros(3, 5, dtype=torch.int64), torch.zeros(3, 2, dtype=torch.int64)),
                       torch.zeros(3, 2))
    assert module(torch.zeros(0, 5, dtype=torch.int64), torch.zeros(0, 2, dtype=torch.int64)).shape == (0, 2)


def test_a_copy_loaded_from_its_state_dict_scores_alike():
    rng = np.random.default_rng(1)
    train_ids, labels = random_set(rng, 30, 20, 6)
    train_ids[::2, 2:4] = torch.tensor([2, 3])
    module = TfidfCentroids.from_training_set(train_ids, labels, 20, pad_id=0, bigrams=True)
    copy = TfidfCentroids(20, module.keys.numel(), pad_id=0, num_bigrams=len(module.vocabulary.bigrams))
    copy.load_state_dict(module.state_dict())
    queries, candidates = train_ids[:5], torch.arange(6).expand(5, -1)
    assert torch.equal(copy(queries, candidates), module(queries, candidates))


def test_fit_alpha_picks_the_best_of_the_combined_objectives():
    rows, width = 50, 6
    candidates = torch.arange(width).expand(rows, -1).clone()
    hits = torch.zeros(rows, width, dtype=torch.bool)
    hits[:, 0] = True
    first, second = torch.zeros(rows, width), torch.zeros(rows, width)
    first[:, 0] = 1.0  # only the first score finds the positives: any alpha > 0 ranks them first
    assert fit_alpha(first, second, candidates, hits) == 0.5  # ties go to the even mix
    # Another process whose rows favour alpha 0 strongly outweighs these.
    bonus = torch.zeros(len(ALPHAS), dtype=torch.float64)
    bonus[0] = 10.0
    assert fit_alpha(first, second, candidates, hits, total=lambda values: values + bonus) == 0.0


@pytest.mark.parametrize("n", [1, 3, 10])
def test_top_labels_rank_every_centroid(n):
    rng = np.random.default_rng(n)
    train_ids, labels = random_set(rng, 60, 25, 8)
    train_ids[::2, 1:3] = torch.tensor([2, 3])
    module = TfidfCentroids.from_training_set(train_ids, labels, 25, pad_id=0, bigrams=True)
    queries = torch.from_numpy(rng.integers(0, 25, (9, 6)))
    queries[0] = 0  # no feature: no label
    top = module.top_labels(queries, n)
    assert top.shape == (9, n) and bool((top[0] == -1).all())
    everything = torch.arange(8).expand(9, -1)
    cosines = module(queries, everything)
    for row in range(1, 9):
        order = sorted((c for c in range(8) if cosines[row, c] > 1e-6), key=lambda c: (-float(cosines[row, c]), c))
        found = [int(label) for label in top[row] if label >= 0]
        assert len(found) == min(n, len(order))
        np.testing.assert_allclose(cosines[row, found].numpy(), cosines[row, order[: len(found)]].numpy(), atol=1e-5)
    copy = TfidfCentroids(25, module.keys.numel(), pad_id=0, num_bigrams=len(module.vocabulary.bigrams))
    copy.top_labels(queries, n)  # a cache made before loading must not survive it
    copy.load_state_dict(module.state_dict())
    assert torch.equal(copy.top_labels(queries, n), top)
