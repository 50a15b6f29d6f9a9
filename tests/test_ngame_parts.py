"""NGAME's parts that need no transformer: the curriculum and its learning-rate schedule, the
violator-weighted triplet loss, label centroids, the score fusion and its fit, and the
config fields that NGAME rejects."""

import pytest
import torch

from xcops import cli
from xcops.data.samplers import ClusterBatchSampler
from xcops.losses import triplet_ohnm
from xcops.models.ngame import label_centroids
from xcops.models.score_fusion import ALPHAS, fit_alpha, fused_scores, mean_precision, relevant, union_candidates
from xcops.models.ngame_training import scheduled_steps, train_stage
from xcops.train import ConfigError, TrainConfig

pytestmark = pytest.mark.usefixtures("single_thread")


def random_csr(rng, rows, num_labels, most=4):
    counts = torch.randint(0, most + 1, (rows,), generator=rng)
    indptr = torch.zeros(rows + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    indices = torch.cat([torch.randperm(num_labels, generator=rng)[: int(c)] for c in counts])
    return indptr, indices


@pytest.mark.parametrize("warmup, refresh_interval, double_every", [(0, 1, 1), (1, 2, 1), (2, 1, 2)])
def test_scheduled_steps_counts_every_batch_of_the_curriculum(rng, warmup, refresh_interval, double_every):
    num_items = int(torch.randint(40, 120, (1,), generator=rng))
    sampler = ClusterBatchSampler(num_items, 16, cluster_size=2, max_cluster_size=8, warmup=warmup,
                                  refresh_interval=refresh_interval, double_every=double_every, seed=1)
    epochs = 6
    expected = scheduled_steps(sampler, epochs)
    batches = 0
    for epoch in range(epochs):
        if sampler.refresh_due(epoch):
            sampler.update_clusters(torch.randn(num_items, 4, generator=rng), epoch)
        sampler.set_epoch(epoch)
        batches += sum(1 for _ in sampler)
    assert batches == expected


def test_train_stage_warms_up_decays_and_follows_the_curriculum(rng):
    num_items, epochs = 64, 7
    sampler = ClusterBatchSampler(num_items, 16, cluster_size=2, max_cluster_size=8, warmup=2, refresh_interval=2,
                                  seed=0)
    weight = torch.nn.Parameter(torch.randn(3, generator=rng))
    optimizer = torch.optim.AdamW([weight], lr=0.1, weight_decay=0.0)
    rates, seen, refreshes = [], [], []

    def batch_loss(rows):
        rates.append(optimizer.param_groups[0]["lr"])
        seen.append(rows)
        return (weight**2).sum(), len(rows)

    def embed(epoch):
        refreshes.append((epoch, sampler.cluster_size_at(epoch)))
        return torch.randn(num_items, 4, generator=rng)

    loss = train_stage("T", epochs, sampler, [optimizer], 5, batch_loss, embed, progress=False)
    assert loss is not None and len(rates) == scheduled_steps(sampler, epochs)
    # Random batches first, then clusters re-built every 2 epochs, doubling each time.
    assert refreshes == [(2, 2), (4, 4), (6, 8)]
    # Linear warm-up over 5 steps to the peak, then linear decay to 0 at the last step.
    peak = rates.index(max(rates))
    assert peak == 5 and rates[peak] == pytest.approx(0.1)
    assert all(a < b for a, b in zip(rates[:peak], rates[1 : peak + 1]))
    assert all(a > b for a, b in zip(rates[peak:], rates[peak + 1 :]))
    assert rates[-1] == pytest.approx(0.1 / (len(rates) - 5))
    # Every item once per epoch.
    per_epoch = torch.cat(seen).view(epochs, num_items).sort(1).values
    assert torch.equal(per_epoch, torch.arange(num_items).expand(epochs, -1))


def test_softmax_over_the_violators_only(rng):
    batch, columns, k, margin, tau = 6, 9, 4, 0.3, 0.1
    query = torch.nn.functional.normalize(torch.randn(batch, 5, generator=rng), dim=1)
    labels = torch.nn.functional.normalize(torch.randn(columns, 5, generator=rng), dim=1)
    positive = torch.arange(batch)
    positives = (torch.arange(batch + 1), torch.arange(batch))
    got = triplet_ohnm(query, labels, positive, positives, k, margin, tau, violators_only=True)
    scores = query @ labels.T
    anchor = scores.diagonal()[:, None]
    negatives = scores.masked_fill(torch.eye(batch, columns, dtype=torch.bool), float("-inf")).topk(k, 1).values
    violation = torch.relu(negatives - anchor + margin)
    logits = (negatives / tau).masked_fill(violation == 0, float("-inf"))
    want = (violation * torch.softmax(logits, 1).nan_to_num(0)).sum() / (batch * k)
    assert torch.allclose(got, want, atol=1e-6)
    # Over all negatives, some weight goes to non-violators, whose loss is 0.
    assert got >= triplet_ohnm(query, labels, positive, positives, k, margin, tau) - 1e-7


def test_label_centroids_are_normalised_means_of_the_chosen_rows(rng):
    rows_total, num_labels, dim = 30, 12, 6
    indptr, indices = random_csr(rng, rows_total, num_labels)
    queries = torch.randn(rows_total, dim, generator=rng)
    fallback = torch.nn.functional.normalize(torch.randn(num_labels, dim, generator=rng), dim=1)
    rows = torch.randperm(rows_total, generator=rng)[:20].sort().values
    got = label_centroids(queries, indptr, indices, rows, num_labels, fallback)
    for label in range(num_labels):
        tagged = [r for r in rows.tolist() if label in indices[indptr[r] : indptr[r + 1]].tolist()]
        want = torch.nn.functional.normalize(queries[tagged].sum(0), dim=0) if tagged else fallback[label]
        assert torch.allclose(got[label], want, atol=1e-6), label


def test_union_candidates_keeps_each_label_once(rng):
    first = torch.randint(0, 15, (5, 6), generator=rng)
    second = torch.randint(0, 15, (5, 6), generator=rng)
    second[0, :2] = -1  # padding from an index with fewer labels than asked for
    merged = union_candidates(first, second)
    for row in range(5):
        kept = merged[row][merged[row] >= 0].tolist()
        assert len(kept) == len(set(kept))
        assert set(kept) == (set(first[row].tolist()) | set(second[row].tolist())) - {-1}


def test_relevant_and_mean_precision(rng):
    candidates = torch.tensor([[3, 1, -1, 7], [2, 5, 0, 4]])
    indptr, indices = torch.tensor([0, 2, 3]), torch.tensor([1, 7, 9])
    hits = relevant(candidates, indptr, indices, num_labels=10)
    assert hits.tolist() == [[False, True, False, True], [False, False, False, False]]
    scores = fused_scores(0.5, torch.tensor([[0.9, 0.8, 0.0, 0.1], [0.1, 0.2, 0.3, 0.4]]),
                          torch.tensor([[0.9, 0.8, 5.0, 0.1], [0.1, 0.2, 0.3, 0.4]]), candidates)
    assert scores[0, 2] == float("-inf")  # padding never ranks, however high its scores
    # Row 0 ranks 3, 1, 7: P@1 0, P@3 2/3, P@5 2/5; row 1 has no hit.
    assert mean_precision(scores, hits) == pytest.approx((0 + 2 / 3 / 2 + 2 / 5 / 2) / 3)


@pytest.mark.parametrize("informative", ["embedding", "classifier"])
def test_fit_alpha_follows_the_informative_score(rng, informative):
    rows, width = 200, 12
    candidates = torch.arange(width).expand(rows, -1).clone()
    hits = torch.zeros(rows, width, dtype=torch.bool)
    hits[torch.arange(rows), torch.randint(0, width, (rows,), generator=rng)] = True
    signal = hits.float() + 0.3 * torch.randn(rows, width, generator=rng)
    noise = torch.randn(rows, width, generator=rng)
    scores = (signal, noise) if informative == "embedding" else (noise, signal)
    alpha = fit_alpha(*scores, candidates, hits)
    assert alpha in ALPHAS
    assert alpha >= 0.7 if informative == "embedding" else alpha <= 0.3


def test_fit_alpha_prefers_an_even_mix_when_nothing_differs(rng):
    scores = torch.randn(10, 8, generator=rng)
    assert fit_alpha(scores, scores, torch.arange(8).expand(10, -1), torch.zeros(10, 8, dtype=torch.bool)) == 0.5


@pytest.mark.parametrize("key, value, hint", [("epochs", 3, "m1_epochs"), ("lr", 1e-3, "lr_encoder"),
                                              ("dim", 128, "encoder")])
def test_ngame_rejects_the_fields_it_does_not_use(key, value, hint, capsys):
    with pytest.raises(ConfigError, match=rf"^{key}: the ngame model does not use it .*{hint}"):
        TrainConfig.from_dict(dict(model="ngame", **{key: value}))
    TrainConfig.from_dict(dict(model="ngame", **{key: getattr(TrainConfig(), key)}))  # the default is fine
    TrainConfig.from_dict(dict(model="bow", **{key: value}))  # and other models use it
    flag = "--" + key
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "ngame", flag, str(value)])
    assert exit_info.value.code == 2 and hint in capsys.readouterr().err
