"""``xcops train --nproc 2``: label head sharded over 2 gloo processes, the rest in DDP."""

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from xcops import cli
from xcops.checkpoint import load_checkpoint
from xcops.models.score_fusion import ALPHAS
from xcops.training_state import saved_summary, state_directory

SMALL = dict(synthetic=dict(num_train=2400, num_test=500, num_labels=240), epochs=3, dim=48,
             batch_size=128, random_negatives=64)


def _xcops(*args):
    done = subprocess.run([sys.executable, "-m", "xcops.cli", *args], capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory, single_thread):
    root = tmp_path_factory.mktemp("nproc")
    config = root / "small.json"
    config.write_text(json.dumps(SMALL))
    one, two = root / "one", root / "two"
    cli.main(["train", "--config", str(config), "--out", str(one), "--quiet"])
    _xcops("train", "--config", str(config), "--out", str(two), "--quiet", "--nproc", "2")
    return [json.loads((run / "metrics.json").read_text()) for run in (one, two)], two


def test_two_processes_match_one_within_noise(runs):
    (one, two), _ = runs
    assert two["processes"] == 2
    tests = SMALL["synthetic"]["num_test"]
    for key in ("P@1", "P@3", "P@5", "nDCG@5"):
        # Different shortlists per step (in-batch labels of half a batch) but the same data and
        # global batch size: allow 3 binomial standard deviations of the test metric, plus 1.
        p = one[key] / 100
        allowed = 100 * 3 * math.sqrt(p * (1 - p) / tests) + 1
        assert abs(one[key] - two[key]) <= allowed, (key, one[key], two[key], allowed)


def test_saved_run_reloads_as_single_process_model(runs):
    (_, two), run = runs
    cli.main(["evaluate", str(run), "--json", str(run / "again.json"), "--quiet"])
    again = json.loads((run / "again.json").read_text())
    assert again["P@1"] == pytest.approx(two["P@1"])


def test_nproc_rejects_unsupported_model_before_launching(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--model", "ngame", "--out", str(tmp_path / "r"), "--nproc", "2", "--quiet"])
    assert exit_info.value.code == 2  # a usage error
    assert "--nproc: trains the models ['bow', 'syncxml'], not 'ngame'" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_syncxml_trains_in_two_processes(tmp_path):
    """The meta head and encoder in DDP, the extreme head sharded; inference through it, mixed
    with the centroids and both neighbour kNNs: each rank holds out its share of rows, the
    neighbours are the titles that both ranks trained on (their labels, the TF-IDF neighbours'
    and the centroids' also join the candidates), and all ranks fit the same weights. (Without the fusions it is the same path less the mix, which
    the bow runs above and the single-process tests cover: 15 s of CI saved.)"""
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(SMALL, synthetic=dict(num_train=800, num_test=100, num_labels=120), epochs=2)))
    run = tmp_path / "run"
    _xcops("train", "--config", str(config), "--model", "syncxml", "--out", str(run), "--quiet", "--nproc", "2",
           "--model-args", json.dumps(dict(num_filters=4, embed_dim=64, feature_dim=16, top_clusters=4,
                                           centroid_fusion=True, title_neighbours=True, neighbour_dim=8,
                                           neighbour_candidates=3, centroid_bigrams=True, tfidf_neighbours=True,
                                           tfidf_candidates=2, centroid_candidates=2)))
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["num_clusters"] > 1
    # each rank's 400 rows: a fifth held out
    assert metrics["fusion_rows"] == 80 and metrics["fusion_alpha"] in ALPHAS
    assert metrics["neighbour_titles"] == 800 - 2 * 80 and metrics["neighbour_weight"] in ALPHAS
    assert metrics["tfidf_titles"] == 800 - 2 * 80 and metrics["tfidf_weight"] in ALPHAS
    cli.main(["evaluate", str(run), "--json", str(tmp_path / "again.json"), "--quiet"])
    assert json.loads((tmp_path / "again.json").read_text())["P@1"] == pytest.approx(metrics["P@1"])


def test_a_killed_two_process_run_resumes_to_the_same_weights(runs, tmp_path):
    """Each rank saves its own state (its head shard, its optimizers) after every epoch; the
    run killed mid-way and resumed ends with the uninterrupted run's weights."""
    _, whole = runs
    config = tmp_path / "small.json"
    config.write_text(json.dumps(SMALL))
    run = tmp_path / "run"
    args = ["train", "--config", str(config), "--out", str(run), "--quiet", "--nproc", "2"]
    process = subprocess.Popen([sys.executable, "-m", "xcops.cli", *args], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while saved_summary(state_directory(run)) is None and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    # As the SIGSEGVs seen in gloo's thread: one rank dies, torchrun then stops the other.
    os.kill(_worker_pid(process.pid, rank=1), signal.SIGKILL)
    assert process.wait(timeout=120) != 0
    summary = saved_summary(state_directory(run))
    assert summary is not None and 1 <= summary["epochs_done"] < SMALL["epochs"], summary
    assert not (run / "model.safetensors").exists()
    _xcops(*args, "--resume")
    expected, got = load_checkpoint(whole)[0], load_checkpoint(run)[0]
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[key], got[key]) for key in expected)
    assert json.loads((run / "metrics.json").read_text())["resumed_at_epoch"] == summary["epochs_done"]


def _worker_pid(launcher: int, rank: int) -> int:
    """The pid of torchrun's worker of ``rank`` below process ``launcher`` (Linux /proc)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    for pid in parents:
        ancestor = parents.get(pid)
        while ancestor not in (None, 0, 1, launcher):
            ancestor = parents.get(ancestor)
        if ancestor == launcher:
            try:
                environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return pid
    raise AssertionError(f"no worker of rank {rank} below process {launcher}")
