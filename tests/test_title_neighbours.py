"""TitleNeighbours (the kNN label votes of SyncXML's fusion) and the multi-term weight fit."""

import pytest
import scipy.sparse as sp
import torch

from xcops.models.score_fusion import fit_alpha, fit_weights, mixed_scores, weight_grid
from xcops.models.title_neighbours import TitleNeighbours

pytestmark = pytest.mark.usefixtures("single_thread")


def random_labels(generator, rows, num_labels, per_row=3):
    cols = torch.randint(0, num_labels, (rows, per_row), generator=generator)
    matrix = sp.csr_matrix((torch.ones(rows * per_row).numpy(), (torch.arange(rows).repeat_interleave(per_row).numpy(),
                                                                cols.flatten().numpy())), shape=(rows, num_labels))
    matrix.data[:] = 1.0  # repeated (row, label) pairs were summed
    return matrix


def reference_votes(module, queries, candidates, labels):
    """Brute force: every training title scored, the k best softmax-weighted, labels looked up densely."""
    cosines = module.project(queries) @ module.vectors.T
    best, titles = cosines.topk(min(module.k, len(module.vectors)), dim=1)
    weights = torch.softmax(best / module.temperature, dim=1)
    dense = torch.from_numpy(labels.toarray()).bool()
    carried = dense[titles.unsqueeze(1), candidates.clamp_min(0).unsqueeze(2)]  # [B, C, k]
    return (carried * weights.unsqueeze(1)).sum(2).masked_fill(candidates < 0, 0.0)


@pytest.mark.parametrize("num_titles,dim,k", [(1, 4, 1), (7, 3, 20), (129, 8, 5)])
def test_votes_match_a_brute_force_knn(num_titles, dim, k):
    generator = torch.Generator().manual_seed(num_titles)
    num_labels, width = 11, 6
    train_queries = torch.randn(num_titles, width, generator=generator)
    labels = random_labels(generator, num_titles, num_labels)
    module = TitleNeighbours.build(lambda x: train_queries[x[:, 0]], torch.arange(num_titles).unsqueeze(1), labels,
                                   dim, k=k, temperature=0.2, batch_size=5)
    assert module.vectors.shape == (num_titles, min(dim, width))
    # Unit rows, except a lone title, which is the mean and so projects to 0.
    assert torch.allclose(module.vectors.norm(dim=1), torch.full((num_titles,), float(num_titles > 1)), atol=1e-5)
    queries = torch.randn(9, width, generator=generator)
    candidates = torch.randint(-1, num_labels, (9, 7), generator=generator)
    votes = module(queries, candidates)
    assert torch.allclose(votes, reference_votes(module, queries, candidates, labels), atol=1e-5)
    assert bool((votes >= 0).all()) and bool((votes <= 1 + 1e-5).all())
    assert bool((votes[candidates < 0] == 0).all())


@pytest.mark.parametrize("num_titles,per_row", [(1, 1), (7, 3), (129, 5)])
def test_labels_of_nearest_titles_are_their_label_sets(num_titles, per_row):
    generator = torch.Generator().manual_seed(num_titles)
    num_labels = 13
    labels = random_labels(generator, num_titles, num_labels, per_row).tolil()
    labels[num_titles - 1] = 0  # a title without labels contributes padding only
    labels = labels.tocsr()
    labels.eliminate_zeros()
    train_queries = torch.randn(num_titles, 6, generator=generator)
    module = TitleNeighbours.build(lambda x: train_queries[x[:, 0]], torch.arange(num_titles).unsqueeze(1), labels, 4)
    titles = torch.randint(0, num_titles, (9, 3), generator=generator)
    found = module.labels_of(titles)
    assert found.shape[0] == 9 and found.shape[1] % 3 == 0
    for row in range(9):
        expected = sorted(int(label) for title in titles[row] for label in labels[int(title)].indices)
        assert sorted(int(label) for label in found[row] if label >= 0) == expected
    assert module.labels_of(titles[:, :0]).shape == (9, 0)


def test_nearest_then_votes_is_forward():
    generator = torch.Generator().manual_seed(2)
    train_queries = torch.randn(40, 8, generator=generator)
    labels = random_labels(generator, 40, 9)
    module = TitleNeighbours.build(lambda x: train_queries[x[:, 0]], torch.arange(40).unsqueeze(1), labels, 8, k=4)
    queries, candidates = torch.randn(5, 8, generator=generator), torch.randint(-1, 9, (5, 6), generator=generator)
    weights, titles = module.nearest(queries)
    assert weights.shape == titles.shape == (5, 4) and torch.allclose(weights.sum(1), torch.ones(5))
    assert torch.equal(module.votes((weights, titles), candidates), module(queries, candidates))


def test_the_projection_keeps_the_top_principal_directions_and_is_deterministic():
    generator = torch.Generator().manual_seed(0)
    # Variance 100 along the first two axes, 1 along the other six.
    queries = torch.randn(500, 8, generator=generator) * torch.tensor([10.0, 10.0] + [1.0] * 6)
    labels = random_labels(generator, 500, 5)
    def build():
        return TitleNeighbours.build(lambda x: queries[x[:, 0]], torch.arange(500).unsqueeze(1), labels, 2)

    module = build()
    assert module.basis[2:].abs().max() < 0.2 and module.basis[:2].abs().sum(0).min() > 0.9
    again = build()
    assert all(torch.equal(a, b) for a, b in zip(module.state_dict().values(), again.state_dict().values()))


def test_a_title_that_is_its_own_neighbour_votes_for_its_labels():
    generator = torch.Generator().manual_seed(1)
    queries = torch.randn(50, 16, generator=generator)
    labels = random_labels(generator, 50, 30)
    module = TitleNeighbours.build(lambda x: queries[x[:, 0]], torch.arange(50).unsqueeze(1), labels, 16, k=3,
                                   temperature=1e-3)
    own = torch.from_numpy(labels[7].indices).long().unsqueeze(0)
    assert torch.allclose(module(queries[7:8], own), torch.ones(own.shape), atol=1e-4)


def test_build_rejects_an_empty_training_set():
    with pytest.raises(ValueError, match="at least one training title"):
        TitleNeighbours.build(lambda x: x.float(), torch.zeros(0, 1, dtype=torch.long), sp.csr_matrix((0, 3)), 4)


def test_weight_grid_covers_the_simplex():
    for terms in (1, 2, 3):
        grid = weight_grid(terms)
        assert all(len(w) == terms and abs(sum(w) - 1) < 1e-12 and min(w) >= 0 for w in grid)
        assert len(set(grid)) == len(grid)
    assert len(weight_grid(2)) == 21 and len(weight_grid(3)) == 231


def test_fit_weights_finds_the_informative_term_among_three():
    generator = torch.Generator().manual_seed(2)
    hits = torch.rand(200, 10, generator=generator) < 0.2
    noise = [torch.randn(200, 10, generator=generator) for _ in range(2)]
    informative = hits.float() + 0.1 * torch.randn(200, 10, generator=generator)
    candidates = torch.arange(10).expand(200, -1)
    weights = fit_weights([noise[0], informative, noise[1]], candidates, hits)
    assert weights[1] == max(weights) and weights[1] >= 0.5
    # Two terms: the same fit as fit_alpha, and the mix is the weighted sum.
    assert fit_weights([informative, noise[0]], candidates, hits)[0] == fit_alpha(informative, noise[0], candidates,
                                                                                    hits)
    mixed = mixed_scores((0.25, 0.75), (informative, noise[0]), candidates.masked_fill(candidates == 3, -1))
    assert torch.isinf(mixed[:, 3]).all()
    assert torch.allclose(mixed[:, 0], 0.25 * informative[:, 0] + 0.75 * noise[0][:, 0])


def test_indexing_shows_a_progress_bar_on_request(capsys):
    generator = torch.Generator().manual_seed(3)
    queries = torch.randn(40, 6, generator=generator)
    ids = torch.arange(40).unsqueeze(1)
    labels = random_labels(generator, 40, 9)
    quiet = TitleNeighbours.build(lambda x: queries[x[:, 0]], ids, labels, 4, batch_size=8)
    assert "indexing training titles" not in capsys.readouterr().err
    shown = TitleNeighbours.build(lambda x: queries[x[:, 0]], ids, labels, 4, batch_size=8, progress=True)
    assert "indexing training titles" in capsys.readouterr().err
    assert torch.equal(quiet.vectors, shown.vectors)
