import pytest
import scipy.sparse as sp
import torch

from xcops.metrics import evaluate
from xcops.models.candidate_ranker import FEATURES_PER_TERM, CandidateRanker
from xcops.models.score_fusion import fit_weights, mean_precision, mixed_scores
from xcops.models.syncxml import SyncXMLOptions
from xcops.data import generate
from xcops.train import TrainConfig, load_run, load_splits, train

NUM_LABELS = 40


def banded_rows(rows, width, seed):
    """Candidates whose positives are those with a middling first score (no monotone mix of the
    logs can rank them first) and a label from the first half (the frequent ones)."""
    generator = torch.Generator().manual_seed(seed)
    candidates = torch.stack([torch.randperm(NUM_LABELS, generator=generator)[:width] for _ in range(rows)])
    candidates[:, -2:] = -1  # padding
    first = torch.rand(rows, width, generator=generator)
    second = torch.rand(rows, width, generator=generator)
    hits = (first > 0.4) & (first < 0.6) & (candidates >= 0) & (candidates < NUM_LABELS // 2)
    terms = [first.clamp_min(1e-6).log(), second.clamp_min(1e-6).log()]
    return terms, candidates, hits


def ranker_with_counts(hidden=16):
    ranker = CandidateRanker(2, NUM_LABELS, hidden)
    # Labels of the first half are 20x as frequent in "training".
    counts = torch.cat([torch.full((NUM_LABELS // 2,), 20), torch.ones(NUM_LABELS // 2, dtype=torch.int64)])
    ranker.set_label_counts(sp.csr_matrix(torch.diag(counts).numpy()))
    return ranker


def test_the_ranker_learns_what_no_log_linear_mix_can():
    fit_terms, fit_candidates, fit_hits = banded_rows(400, 12, seed=0)
    terms, candidates, hits = banded_rows(400, 12, seed=1)
    weights = fit_weights(fit_terms, fit_candidates, fit_hits)
    mix = mean_precision(mixed_scores(weights, terms, candidates), hits, ks=(1,))
    ranker = ranker_with_counts()
    loss = ranker.fit(fit_terms, fit_candidates, fit_hits, steps=300, seed=0)
    with torch.no_grad():
        learned = mean_precision(ranker(terms, candidates), hits, ks=(1,))
    assert loss > 0
    assert learned > mix + 0.25, (learned, mix)


def test_fit_is_deterministic_and_padding_ranks_last():
    terms, candidates, hits = banded_rows(50, 7, seed=2)
    first, second = ranker_with_counts(), ranker_with_counts()
    torch.manual_seed(123)
    first.fit(terms, candidates, hits, steps=20, seed=4)
    torch.manual_seed(456)  # the global seed does not matter, the fit's does
    second.fit(terms, candidates, hits, steps=20, seed=4)
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        scores = first(terms, candidates)
    assert scores.shape == (50, 7)
    assert torch.isinf(scores[:, -2:]).all() and torch.isfinite(scores[:, :-2]).all()
    assert first.features(terms, candidates).shape == (50, 7, FEATURES_PER_TERM * 2 + 1)


def test_summing_over_ranks_fits_as_one_process():
    """Two ranks holding the same rows (``total`` doubles every sum) fit the same ranker as one."""
    terms, candidates, hits = banded_rows(60, 9, seed=3)
    alone, doubled = ranker_with_counts(), ranker_with_counts()
    alone.fit(terms, candidates, hits, steps=30, seed=0)
    doubled.fit(terms, candidates, hits, steps=30, seed=0, total=lambda values: 2 * values)
    for (name, a), b in zip(alone.state_dict().items(), doubled.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)


def test_bad_inputs_are_named():
    ranker = ranker_with_counts()
    terms, candidates, _ = banded_rows(3, 5, seed=0)
    with pytest.raises(ValueError, match="fitted on 2 score terms, got 1"):
        ranker(terms[:1], candidates)
    with pytest.raises(ValueError, match="labels has 3 columns, the ranker 40 labels"):
        ranker.set_label_counts(sp.csr_matrix((2, 3)))
    for bad, match in (({"learned_mix": True}, "learned_mix .* there are none"),
                       ({"learned_mix": True, "centroid_fusion": True, "fusion_alpha": 0.5}, "learned_mix .* drop"),
                       ({"ranker_hidden": 0}, "ranker_hidden")):
        with pytest.raises(ValueError, match=match):
            SyncXMLOptions.parse(bad)


@pytest.mark.usefixtures("single_thread")
def test_syncxml_with_a_learned_mix_trains_predicts_and_round_trips(tmp_path):
    data = tmp_path / "data"
    generate(data, num_train=1200, num_test=300, num_labels=48, seed=7)
    args = dict(embed_dim=64, num_filters=8, cluster_size=8, top_clusters=4, centroid_fusion=True,
                tfidf_neighbours=True, tfidf_k=7, tfidf_candidates=2, title_neighbours=True, neighbour_dim=16,
                neighbour_k=5, learned_mix=True, ranker_hidden=8)
    cfg = TrainConfig(model="syncxml", max_len=16, batch_size=64, epochs=3, model_args=args, seed=1,
                      data=str(data), out=str(tmp_path / "run"))
    metrics = train(cfg, progress=False)
    assert metrics["ranker_loss"] > 0 and metrics["fusion_fit_rows"] > 0
    model = load_run(cfg.out)[0]
    # Three mixed terms, the model's score and the meta probability apart.
    assert model.ranker is not None and model.ranker.num_terms == 5 and model.ranker.net[0].out_features == 8
    # The label frequencies are those of the titles that create learned from (held-out ones left out).
    assert 0 < float(model.ranker.label_log_count.exp().sub(1).sum()) < len(load_splits(cfg, data)[0]) * 10
    _, test_set = load_splits(cfg, data)
    predictions = model.predict(test_set.input_ids, 5, 64, torch.device("cpu"), progress=False)
    assert evaluate(test_set.labels, predictions, k=(1,))["P@1"] == pytest.approx(metrics["P@1"], abs=1e-9)
