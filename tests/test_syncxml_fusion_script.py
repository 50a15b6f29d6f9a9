"""bench/syncxml_fusion.py: it rebuilds the held-out split of a run as `xcops train` made it, and
adds the title neighbours, the TF-IDF neighbours and the centroid bigrams to a trained run."""

import dataclasses
import importlib.util
import json
import pathlib

import pytest
import torch

from xcops.data import generate
from xcops.distributed.training import training_rows
from xcops.models.syncxml import SyncXML, SyncXMLOptions, held_out_rows
from xcops.train import TrainConfig, load_run, load_splits, train

PATH = pathlib.Path(__file__).resolve().parents[1] / "bench" / "syncxml_fusion.py"
ARGS = {"centroid_fusion": True, "fusion_rows": 50}


def load_script():
    spec = importlib.util.spec_from_file_location("syncxml_fusion", PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("world", [1, 2, 3])
def test_the_rebuilt_split_is_what_each_process_trained_and_held_out(world):
    script = load_script()
    cfg = TrainConfig(model="syncxml", out="run", seed=3, model_args=ARGS)
    num_rows = 301
    held = held_out_rows(num_rows, SyncXMLOptions.parse(ARGS), cfg.seed, world)
    per_process = len(held) // world
    held_out, trained = script.held_out_split(cfg, {"fusion_rows": per_process, "processes": world}, num_rows)
    shares = [training_rows(num_rows, rank, world) for rank in range(world)]
    # What SyncXML.fit does in each process: its share, less the rows of it that are held out.
    fitted = [share[~torch.isin(share, held)] for share in shares]
    assert torch.equal(held_out, held) and torch.equal(trained, torch.cat(fitted).sort().values)
    assert len(set(map(len, fitted))) == 1  # every process steps as often
    with pytest.raises(SystemExit, match="held out 1"):
        script.held_out_split(cfg, {"fusion_rows": 1, "processes": world}, num_rows)
    with pytest.raises(SystemExit, match="held no rows"):
        script.held_out_split(cfg, {"fusion_rows": 0, "processes": world}, num_rows)


def test_a_run_with_its_own_neighbours_keeps_its_index_and_fits_the_candidate_titles(tmp_path, capsys):
    script = load_script()
    data = tmp_path / "data"
    generate(data, num_train=600, num_test=100, num_labels=40, seed=2)
    model_args = dict(ARGS, embed_dim=64, num_filters=8, cluster_size=8, top_clusters=2, title_neighbours=True,
                      neighbour_dim=8, neighbour_k=5)
    cfg = TrainConfig(model="syncxml", data=str(data), out=str(tmp_path / "run"), max_len=8, batch_size=64, epochs=1,
                      seed=3, model_args=model_args)
    trained = train(cfg, progress=False)
    index = load_run(tmp_path / "run")[0].neighbours.vectors
    script.main([str(tmp_path / "run"), "--neighbours", "--neighbour-k", "5", "--neighbour-temperature", "0.1",
                 "--neighbour-candidates", "0", "2", "--out", str(tmp_path / "fused")])
    printed = capsys.readouterr().out
    assert "neighbour_candidates 0:" in printed and "neighbour_candidates 2:" in printed
    # The row without the addition is the run's own result, not a second prediction.
    assert f"| run | {trained['P@1']:.2f} |" in printed
    fused_model, _, _ = load_run(tmp_path / "fused")
    assert torch.equal(fused_model.neighbours.vectors, index)
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert config["model_args"]["neighbour_candidates"] == fused_model.neighbour_candidates in (0, 2)

    # The TF-IDF terms are built as `xcops train` would have built them, and their settings fitted;
    # the run's own title neighbours keep their settings.
    script.main([str(tmp_path / "run"), "--tfidf-neighbours", "--centroid-bigrams", "--tfidf-k", "4",
                 "--tfidf-candidates", "0", "3", "--centroid-candidates", "0", "2", "--out", str(tmp_path / "tfidf")])
    printed = capsys.readouterr().out
    assert "tfidf_candidates 3, centroid_candidates 2:" in printed and "neighbour_k" not in printed
    with_tfidf = dataclasses.replace(cfg, model_args=dict(model_args, tfidf_neighbours=True, tfidf_k=4,
                                                          centroid_bigrams=True))
    expected = SyncXML.create(with_tfidf, load_splits(with_tfidf, data)[0])
    tfidf_model = load_run(tmp_path / "tfidf")[0]
    for part in ("centroids", "tfidf_neighbours"):
        for name, buffer in getattr(expected, part).state_dict().items():
            assert torch.equal(getattr(tfidf_model, part).state_dict()[name], buffer), (part, name)
    config = json.loads((tmp_path / "tfidf" / "config.json").read_text())["model_args"]
    assert config["tfidf_neighbours"] and config["centroid_bigrams"] and config["tfidf_k"] == 4
    assert config["tfidf_candidates"] == tfidf_model.tfidf_candidates in (0, 3) and config["neighbour_k"] == 5
    assert config["centroid_candidates"] == tfidf_model.centroid_candidates in (0, 2)
    assert torch.equal(tfidf_model.neighbours.vectors, index)

    # The learned mix: compared with the log-linear one on the held-out halves, kept only if better.
    script.main([str(tmp_path / "tfidf"), "--learned-mix", "--ranker-hidden", "4", "8", "--out",
                 str(tmp_path / "ranked")])
    printed = capsys.readouterr().out
    assert "| log-linear mix |" in printed and "| ranker, 4 hidden |" in printed and "| ranker, 8 hidden |" in printed
    ranked = load_run(tmp_path / "ranked")[0]
    config = json.loads((tmp_path / "ranked" / "config.json").read_text())["model_args"]
    if ranked.ranker is None:
        assert config["learned_mix"] is False
    else:
        assert config["learned_mix"] and config["ranker_hidden"] == ranked.ranker.net[0].out_features in (4, 8)
        assert ranked.ranker.num_terms == 4
