"""The pieces SyncXML is trained with: stop words, fast dropout, the shortlist targets, the
randomized SVD and the label-SVD word vectors."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xcops.data.stopwords import ENGLISH, stopword_list
from xcops.data.tokenize import SimpleTokenizer
from xcops.models.dropout import Dropout
from xcops.models.label_features import randomized_svd
from xcops.models.heads import shortlist_targets


def test_stopwords_are_dropped_before_the_vocabulary_and_survive_a_round_trip():
    texts = ["The history of the world", "A world of art", "art and the sea"]
    tokenizer = SimpleTokenizer.fit(texts, stopwords=stopword_list("english"))
    assert not {"the", "of", "a", "and"} & set(tokenizer.words)
    ids = tokenizer.encode(["history of art"], 4)[0].tolist()
    assert ids == [tokenizer.ids["history"], tokenizer.ids["art"], 0, 0]
    again = SimpleTokenizer.from_json(tokenizer.to_json())
    assert again.stopwords == ENGLISH and again.fingerprint() == tokenizer.fingerprint()
    assert SimpleTokenizer.fit(texts).fingerprint() != tokenizer.fingerprint()
    assert stopword_list(None) == frozenset()
    with pytest.raises(ValueError, match="unknown stopword list 'klingon'"):
        stopword_list("klingon")


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5])
def test_dropout_keeps_the_expectation_and_masks_the_gradient(p):
    layer = Dropout(p)
    x = torch.rand(400, 300) + 0.5
    x.requires_grad_(True)
    y = layer(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.01
    torch.testing.assert_close(y[kept], (x * (1 / (1 - p)))[kept])
    y.sum().backward()
    torch.testing.assert_close(x.grad, kept.float() / (1 - p))
    layer.eval()
    assert layer(x) is x
    with pytest.raises(ValueError, match="dropout probability"):
        Dropout(1.0)


@pytest.mark.parametrize("batch,width,num_labels", [(1, 1, 3), (7, 5, 20), (33, 129, 1000)])
def test_shortlist_targets_match_isin(batch, width, num_labels):
    counts = torch.randint(0, 4, (batch,))
    rows = torch.repeat_interleave(torch.arange(batch), counts)
    labels = torch.randint(0, num_labels, (len(rows),))
    shortlist = torch.randint(-1, num_labels, (batch, width))
    keys = torch.arange(batch).unsqueeze(1) * num_labels + shortlist
    expected = torch.isin(keys, rows * num_labels + labels)
    assert torch.equal(shortlist_targets(shortlist, rows, labels, num_labels), expected)
    none = shortlist_targets(shortlist, rows[:0], labels[:0], num_labels)
    assert none.shape == shortlist.shape and not none.any()


def test_randomized_svd_recovers_a_low_rank_matrix():
    rng = np.random.default_rng(0)
    left, right = rng.standard_normal((60, 5)), rng.standard_normal((5, 90))
    dense = (left @ right).astype(np.float32)
    dense[np.abs(dense) < 0.5] = 0.0  # sparse, and so no longer of rank 5: check the top singular values
    matrix = sp.csr_matrix(dense)
    u, s, v = randomized_svd(matrix, 8, seed=1)
    exact = np.linalg.svd(dense, compute_uv=False)[:8]
    np.testing.assert_allclose(s, exact, rtol=1e-3)
    assert u.shape == (60, 8) and v.shape == (90, 8)
    np.testing.assert_allclose(u.T @ u, np.eye(8), atol=1e-4)
    u, s, v = randomized_svd(matrix, 200)  # rank capped by the shape
    assert s.shape == (60,)
    np.testing.assert_allclose(u @ np.diag(s) @ v.T, dense, atol=1e-3)
