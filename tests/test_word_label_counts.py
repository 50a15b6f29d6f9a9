import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from xcops.data import generate
from xcops.metrics import evaluate
from xcops.models.syncxml import SyncXMLOptions
from xcops.models.word_label_counts import SHARE_FLOOR, WordLabelCounts
from xcops.train import TrainConfig, load_run, load_splits, train

PAD, UNK = 0, 1


def reference_terms(title, label, titles, labels):
    """The two shares by plain Python over sets of words (padding, the unknown word and words no
    training title holds left out)."""
    words = {w for w in title if w not in (PAD, UNK) and any(w in t for t in titles)}
    with_word = {w: [i for i, t in enumerate(titles) if w in t] for w in words}
    pair = {w: sum(label in labels[i] for i in rows) for w, rows in with_word.items()}
    best = max((pair[w] / (len(with_word[w]) + 1) for w in words), default=0.0)
    seen = sum(pair[w] > 0 for w in words) / max(len(words), 1)
    return best, seen


@pytest.mark.parametrize("seed", [0, 1])
def test_terms_match_a_python_reference(seed):
    rng = np.random.default_rng(seed)
    vocab, num_labels = 13, 7
    titles = [list(rng.integers(0, vocab, rng.integers(1, 6))) for _ in range(40)]
    labels = [set(rng.choice(num_labels, rng.integers(1, 3), replace=False).tolist()) for _ in titles]
    width = max(map(len, titles))
    ids = torch.tensor([t + [PAD] * (width - len(t)) for t in titles])
    rows = [i for i, ls in enumerate(labels) for _ in ls]
    cols = [label for ls in labels for label in ls]
    matrix = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(titles), num_labels))
    counts = WordLabelCounts.build(ids, matrix, vocab + 1, ignored_ids=(PAD, UNK))  # word 13: in no title
    queries = torch.tensor([[2, 3, 4, PAD], [UNK, PAD, PAD, PAD], [5, 5, 13, 7], [8, 9, UNK, 3]])
    candidates = torch.tensor([[0, 1, 2, 6], [3, -1, -1, -1], [4, 5, 6, 0], [1, 1, 2, -1]])
    best, seen = counts(queries, candidates)
    for row in range(len(queries)):
        title = {w for w in queries[row].tolist()}
        for slot, label in enumerate(candidates[row].tolist()):
            expected = reference_terms(title, label, titles, labels) if label >= 0 else (0.0, 0.0)
            for term, value in zip((best, seen), expected):
                assert float(term[row, slot]) == pytest.approx(math.log(max(value, SHARE_FLOOR)), abs=1e-5)


def test_a_word_outside_the_table_and_no_titles_count_as_nothing():
    ids = torch.tensor([[2, 3], [3, PAD]])
    labels = sp.csr_matrix(np.array([[1, 0], [1, 1]], dtype=np.float32))
    counts = WordLabelCounts.build(ids, labels, vocab_size=6, ignored_ids=(PAD, UNK))
    best, seen = counts(torch.tensor([[5, 9], [3, 2]]), torch.tensor([[0, 1], [0, 1]]))
    assert torch.equal(best[0], torch.full((2,), math.log(SHARE_FLOOR)))
    assert float(best[1, 0]) == pytest.approx(math.log(2 / 3)) and float(seen[1, 0]) == pytest.approx(0.0)
    assert float(seen[1, 1]) == pytest.approx(math.log(0.5))
    empty = WordLabelCounts.build(torch.full((2, 2), PAD), labels, vocab_size=6, ignored_ids=(PAD, UNK))
    assert empty.keys.numel() == 0
    assert torch.equal(empty(torch.tensor([[2, 3]]), torch.tensor([[0, 1]]))[0], torch.full((1, 2), math.log(SHARE_FLOOR)))


def test_options_are_checked():
    with pytest.raises(ValueError, match="word_counts .* learned_mix"):
        SyncXMLOptions.parse({"word_counts": True, "centroid_fusion": True})
    with pytest.raises(ValueError, match="word_counts"):
        SyncXMLOptions.parse({"word_counts": 1})


@pytest.mark.usefixtures("single_thread")
def test_syncxml_ranks_with_word_counts_and_round_trips(tmp_path):
    data = tmp_path / "data"
    generate(data, num_train=1200, num_test=300, num_labels=48, seed=7)
    args = dict(embed_dim=64, num_filters=8, cluster_size=8, top_clusters=4, centroid_fusion=True,
                learned_mix=True, ranker_hidden=8, word_counts=True)
    cfg = TrainConfig(model="syncxml", max_len=16, batch_size=64, epochs=2, model_args=args, seed=1,
                      data=str(data), out=str(tmp_path / "run"))
    metrics = train(cfg, progress=False)
    model = load_run(cfg.out)[0]
    # The centroids and the model's score, the meta probability, then the two word-count shares.
    assert model.ranker.num_terms == 5 and model.word_counts.keys.numel() > 0
    _, test_set = load_splits(cfg, data)
    predictions = model.predict(test_set.input_ids, 5, 64, torch.device("cpu"), progress=False)
    assert evaluate(test_set.labels, predictions, k=(1,))["P@1"] == pytest.approx(metrics["P@1"], abs=1e-9)
