import math

import pytest
import torch

from xcops.data import SimpleTokenizer, generate
from xcops.metrics import evaluate
from xcops.models.label_names import NAME_FLOOR, STEM_LENGTH, LabelNameMatch
from xcops.models.syncxml import SyncXMLOptions
from xcops.train import TrainConfig, load_run, load_splits, train

TITLES = ["fish farming in lakes", "temperature of lakes", "salmon farms", "regulation of rivers", "lakes"]
NAMES = ["fish farms", "temperature regulation", "lakes", "", "volcanoes"]


def tokenized(titles, tokenizer, max_len=6):
    return torch.from_numpy(tokenizer.encode(titles, max_len))


def reference_shares(title: str, name: str, tokenizer, stem_titles) -> tuple[float, float]:
    """The two shares by plain Python over the stems of words (unknown words match nothing)."""
    stem = lambda word: word[:STEM_LENGTH]
    held = {stem(word) for word in tokenizer.split(title) if word in tokenizer.ids}
    name_stems = sorted({stem(word) for word in tokenizer.split(name)})
    if not name_stems:
        return 0.0, 0.0
    idf = {s: math.log((len(stem_titles) + 1) / (sum(s in t for t in stem_titles) + 1)) for s in name_stems}
    matched = [s for s in name_stems if s in held]
    return len(matched) / len(name_stems), sum(idf[s] for s in matched) / max(sum(idf.values()), 1e-12)


def test_shares_match_a_python_reference():
    tokenizer = SimpleTokenizer.fit(TITLES + ["river regulations"], stopwords=("of", "in"))
    train_ids = tokenized(TITLES, tokenizer)
    names = LabelNameMatch.build(tokenizer.words, NAMES, tokenizer.split, train_ids,
                                 (tokenizer.pad_token_id, tokenizer.unk_token_id))
    queries = ["fish farms regulations", "lakes temperature regulation", "unseenword volcanoes", "farmed fish"]
    candidates = torch.tensor([[0, 1, 2, 3, 4], [1, 2, 0, -1, -1], [4, 0, 3, 2, -1], [0, 0, -1, -1, -1]])
    shares = names(tokenized(queries, tokenizer), candidates)
    stem_titles = [{w[:STEM_LENGTH] for w in tokenizer.split(t) if w in tokenizer.ids} for t in TITLES]
    for row, query in enumerate(queries):
        for slot, label in enumerate(candidates[row].tolist()):
            expected = reference_shares(query, NAMES[label], tokenizer, stem_titles) if label >= 0 else (0.0, 0.0)
            for term, value in zip(shares, expected):
                assert float(term[row, slot]) == pytest.approx(math.log(max(value, NAME_FLOOR)), abs=1e-5)
    # "regulations" holds the first six letters of "regulation"; "volcanoes" is in no title, and
    # "farmed" is no known word, so neither matches.
    assert float(shares[0][0, 0]) == pytest.approx(0.0) and float(shares[0][0, 1]) == pytest.approx(math.log(0.5))
    assert float(shares[0][2, 0]) == pytest.approx(math.log(NAME_FLOOR))
    assert float(shares[0][3, 0]) == pytest.approx(math.log(0.5))
    assert float(shares[0][1, 3]) == pytest.approx(math.log(NAME_FLOOR))  # padding


def test_options_are_checked():
    for bad, match in (({"label_names": True, "centroid_fusion": True}, "label_names .* learned_mix"),
                       ({"label_names": True, "centroid_fusion": True, "learned_mix": True, "pretrained": "minilm"},
                        "label_names .* pretrained"),
                       ({"label_names": 1}, "label_names")):
        with pytest.raises(ValueError, match=match):
            SyncXMLOptions.parse(bad)


def name_args(**extra):
    return dict(embed_dim=64, num_filters=8, cluster_size=8, top_clusters=4, centroid_fusion=True,
                tfidf_neighbours=True, tfidf_k=7, learned_mix=True, ranker_hidden=8, label_names=True, **extra)


@pytest.mark.usefixtures("single_thread")
def test_syncxml_ranks_with_label_names_and_round_trips(tmp_path):
    data = tmp_path / "data"
    generate(data, num_train=1200, num_test=300, num_labels=48, seed=7)
    cfg = TrainConfig(model="syncxml", max_len=16, batch_size=64, epochs=2, model_args=name_args(), seed=1,
                      data=str(data), out=str(tmp_path / "run"))
    metrics = train(cfg, progress=False)
    model = load_run(cfg.out)[0]
    # Two mixed terms and the model's score, the meta probability, then the two name shares.
    assert model.ranker.num_terms == 6 and model.label_names is not None
    assert model.label_names.name_stems.numel() > 0
    _, test_set = load_splits(cfg, data)
    predictions = model.predict(test_set.input_ids, 5, 64, torch.device("cpu"), progress=False)
    assert evaluate(test_set.labels, predictions, k=(1,))["P@1"] == pytest.approx(metrics["P@1"], abs=1e-9)


@pytest.mark.usefixtures("single_thread")
def test_label_names_without_a_names_file_is_named(tmp_path):
    data = tmp_path / "data"
    generate(data, num_train=200, num_test=50, num_labels=16, seed=3)
    (data / "Y.txt").unlink()
    cfg = TrainConfig(model="syncxml", max_len=16, batch_size=64, epochs=1, model_args=name_args(), seed=1,
                      data=str(data), out=str(tmp_path / "run"))
    with pytest.raises(ValueError, match="label_names .* no Y.txt"):
        train(cfg, progress=False)
