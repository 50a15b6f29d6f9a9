"""TF-IDF label centroids (SyncXML's fusion) against the same cosines computed densely with scipy."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xcops.models.label_features import pifa, row_normalize, token_counts
from xcops.models.score_fusion import ALPHAS, fit_alpha
from xcops.models.tfidf_centroids import TfidfCentroids

pytestmark = pytest.mark.usefixtures("single_thread")


def random_set(rng, rows, vocab, num_labels, length=7):
    ids = torch.from_numpy(rng.integers(0, vocab, (rows, length)))  # 0 is padding; repeats happen
    ids[rng.random((rows, length)) < 0.3] = 0
    dense = rng.random((rows, num_labels)) < 0.15
    return ids, sp.csr_matrix(dense.astype(np.float32))


def dense_cosines(train_ids, labels, vocab, queries, candidates):
    counts = token_counts(train_ids, vocab, 0)
    df = np.bincount(counts.indices, minlength=vocab)
    idf = np.log((1.0 + counts.shape[0]) / (1.0 + df)).astype(np.float32)
    centroids = pifa(labels, row_normalize(counts @ sp.diags(idf))).toarray()
    query = row_normalize(token_counts(queries, vocab, 0) @ sp.diags(idf)).toarray()
    full = query @ centroids.T
    expected = np.take_along_axis(full, np.maximum(candidates.numpy(), 0), 1)
    return np.where(candidates.numpy() < 0, 0.0, expected)


@pytest.mark.parametrize("rows, vocab, num_labels, batch, width", [(1, 5, 1, 1, 1), (40, 30, 7, 9, 7),
                                                                   (129, 200, 50, 17, 12)])
def test_cosines_match_the_dense_computation(rows, vocab, num_labels, batch, width):
    rng = np.random.default_rng(rows + vocab)
    train_ids, labels = random_set(rng, rows, vocab, num_labels)
    # Test titles may hold ids that no training title has (idf > 0, no centroid weight).
    queries = torch.from_numpy(rng.integers(0, vocab, (batch, 9)))
    candidates = torch.from_numpy(rng.integers(-1, num_labels, (batch, width)))
    module = TfidfCentroids.from_training_set(train_ids, labels, vocab, pad_id=0)
    got = module(queries, candidates)
    expected = dense_cosines(train_ids, labels, vocab, queries, candidates)
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
    module = TfidfCentroids.from_training_set(train_ids, labels, 20, pad_id=0)
    copy = TfidfCentroids(20, module.keys.numel(), pad_id=0)
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
