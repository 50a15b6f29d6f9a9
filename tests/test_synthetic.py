"""The synthetic XC generator: deterministic, power-law labels, learnable, written in the
repository layout."""

import numpy as np
import pytest
import scipy.sparse as sp

from xcops.data import SimpleTokenizer, generate, make_synthetic, read_label_names, read_sparse, read_text
from xcops.metrics import evaluate

SMALL = dict(num_train=1500, num_test=400, num_labels=150)


def same(a, b):
    return (
        a.train_texts == b.train_texts
        and a.test_texts == b.test_texts
        and a.label_names == b.label_names
        and (a.train_Y != b.train_Y).nnz == 0
        and (a.test_Y != b.test_Y).nnz == 0
    )


def test_deterministic_by_seed():
    assert same(make_synthetic(**SMALL, seed=5), make_synthetic(**SMALL, seed=5))
    assert not same(make_synthetic(**SMALL, seed=5), make_synthetic(**SMALL, seed=6))


def test_shapes_and_labels_per_point():
    data = make_synthetic(**SMALL, labels_per_point=(2, 5), text_len=(6, 12), seed=1)
    assert data.train_Y.shape == (1500, 150) and data.test_Y.shape == (400, 150)
    assert len(data.train_texts) == 1500 and len(data.test_texts) == 400
    assert len(set(data.label_names)) == 150
    per_point = np.diff(data.train_Y.indptr)
    assert per_point.min() >= 2 and per_point.max() <= 5
    assert 3.0 < per_point.mean() < 4.0
    assert set(np.unique(data.train_Y.data)) == {1.0}
    lengths = [len(t.split()) for t in data.train_texts]
    assert min(lengths) >= 6 and max(lengths) <= 12


def test_label_frequencies_follow_a_power_law():
    data = make_synthetic(num_train=4000, num_test=0, num_labels=300, power=1.0, seed=2)
    freq = np.sort(np.asarray(data.train_Y.sum(axis=0)).ravel())[::-1]
    head = freq[: len(freq) // 10].sum() / freq.sum()
    assert head > 0.4  # a uniform prior would give the top 10% of labels 10%
    rank = np.arange(1, len(freq) + 1)
    fitted = freq >= 5
    slope = np.polyfit(np.log(rank[fitted]), np.log(freq[fitted]), 1)[0]
    assert -1.3 < slope < -0.7
    flatter = make_synthetic(num_train=4000, num_test=0, num_labels=300, power=0.3, seed=2)
    flat_freq = np.sort(np.asarray(flatter.train_Y.sum(axis=0)).ravel())[::-1]
    assert flat_freq[: len(flat_freq) // 10].sum() / flat_freq.sum() < head


def bag_of_words(tokenizer, texts):
    ids = tokenizer.encode(texts, 64)
    rows = np.repeat(np.arange(len(ids)), ids.shape[1])
    X = sp.csr_matrix((np.ones(ids.size), (rows, ids.ravel())), shape=(len(ids), len(tokenizer)))
    X.data[:] = 1
    return X


def test_learnable_by_word_label_counts():
    data = make_synthetic(**SMALL, seed=3)
    tok = SimpleTokenizer.fit(data.train_texts)
    X_train, X_test = bag_of_words(tok, data.train_texts), bag_of_words(tok, data.test_texts)
    # score(label) = sum over the words of P(label | word) - P(label): a counting classifier
    cooc = (X_train.T @ data.train_Y).toarray()
    word_count = np.maximum(np.asarray(X_train.sum(axis=0)).ravel(), 1)
    prior = np.asarray(data.train_Y.mean(axis=0)).ravel()
    scores = X_test @ (cooc / word_count[:, None] - prior)
    learned = evaluate(data.test_Y, np.argsort(-scores, axis=1)[:, :5])
    popular = np.argsort(-prior)[:5]
    baseline = evaluate(data.test_Y, np.tile(popular, (len(data.test_texts), 1)))
    assert learned["P@1"] > 80 and learned["P@1"] > baseline["P@1"] + 30
    assert learned["P@3"] > 2 * baseline["P@3"]


def test_generate_writes_repository_layout(tmp_path):
    data = generate(tmp_path / "synth", **SMALL, seed=4)
    names = sorted(p.name for p in (tmp_path / "synth").iterdir())
    assert names == ["Y.txt", "trn_X.txt", "trn_X_Y.txt", "tst_X.txt", "tst_X_Y.txt"]
    assert read_text(tmp_path / "synth" / "trn_X.txt") == data.train_texts
    assert read_text(tmp_path / "synth" / "tst_X.txt") == data.test_texts
    assert read_label_names(tmp_path / "synth" / "Y.txt") == data.label_names
    assert (read_sparse(tmp_path / "synth" / "trn_X_Y.txt") != data.train_Y).nnz == 0
    assert (read_sparse(tmp_path / "synth" / "tst_X_Y.txt") != data.test_Y).nnz == 0


@pytest.mark.parametrize(
    "kwargs", [dict(labels_per_point=(0, 3)), dict(labels_per_point=(4, 2)), dict(text_len=(0, 5)), dict(num_labels=0)]
)
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        make_synthetic(**{**SMALL, **kwargs})
