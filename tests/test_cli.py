"""The xcops command end to end on a tiny synthetic set."""

import json
import subprocess
import sys

import numpy as np
import pytest

from xcops import cli

TINY = dict(
    synthetic=dict(num_train=300, num_test=60, num_labels=40),
    epochs=2,
    dim=32,
    batch_size=64,
    random_negatives=16,
)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    config = root / "tiny.json"
    config.write_text(json.dumps(TINY))
    run = root / "run"
    cli.main(["train", "--config", str(config), "--out", str(run), "--quiet", "--seed", "3"])
    return run


def test_train_writes_a_complete_run(run_dir):
    for name in ("config.json", "metrics.json", "model.safetensors", "model.json", "vocab.json"):
        assert (run_dir / name).exists(), name
    config = json.loads((run_dir / "config.json").read_text())
    assert config["epochs"] == 2 and config["seed"] == 3  # file values and flag overrides
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert {"P@1", "P@5", "nDCG@3", "PSP@1", "train_seconds"} <= set(metrics)
    assert 0 <= metrics["P@1"] <= 100


def test_evaluate_reloads_the_checkpoint_and_reproduces_the_metrics(run_dir, tmp_path, capsys):
    out = tmp_path / "eval.json"
    cli.main(["evaluate", str(run_dir), "--json", str(out), "--quiet"])
    assert "P " in capsys.readouterr().out
    evaluated = json.loads(out.read_text())
    trained = json.loads((run_dir / "metrics.json").read_text())
    for key in ("P@1", "P@3", "P@5", "nDCG@5", "PSP@5"):
        assert evaluated[key] == pytest.approx(trained[key], abs=1e-9), key


def test_predict_handles_empty_and_long_texts(run_dir, tmp_path):
    texts = ["", "word " * 5000, "some text"]
    source = tmp_path / "in.txt"
    source.write_text("\n".join(texts) + "\n")
    out = tmp_path / "out.jsonl"
    cli.main(["predict", str(run_dir), "--input", str(source), "--output", str(out), "--k", "3", "--quiet"])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["text"] for r in records] == texts
    for r in records:
        assert len(r["labels"]) == 3 and len(r["names"]) == 3
        assert all(0 <= label < 40 for label in r["labels"])


def test_demo_reports_both_speeds(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text("\n".join(f"{k}: {json.dumps(v)}" for k, v in TINY.items()))
    cli.main(["demo", "--config", str(config), "--out", str(tmp_path / "run"), "--quiet", "--speed-steps", "2"])
    out = capsys.readouterr().out
    assert "fused xcops ops" in out and "PyTorch eager reference" in out and "P " in out


def test_speed_comparison_reuses_a_short_training_set(tmp_path):
    """One batch of training data still times every requested step (it used to divide by 0)."""
    from xcops.train import TrainConfig, compare_training_speed

    cfg = TrainConfig.from_dict(dict(TINY, batch_size=512, out=str(tmp_path / "run")))
    speed = compare_training_speed(cfg, steps=2, progress=False)
    assert speed["fused_ms_per_step"] > 0 and speed["reference_ms_per_step"] > 0


def test_bench_smoke(capsys):
    cli.main(["bench", "shortlist", "--preset", "smoke", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "forward" in out and "fwd+bwd" in out and "top-10" in out
    cli.main(["bench", "topk", "--preset", "smoke", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "dense_topk" in out and "hard_negatives" in out
    cli.main(["bench", "clustering", "--device", "cpu", "--problem", "0", "--scale", "0.002"])
    assert "xcops" in capsys.readouterr().out


def test_cluster_writes_balanced_assignments(tmp_path, capsys):
    points = tmp_path / "x.npy"
    np.save(points, np.random.default_rng(0).normal(size=(100, 8)).astype(np.float32))
    out = tmp_path / "clusters.npz"
    cli.main(["cluster", str(points), "--leaf-size", "16", "--output", str(out)])
    result = np.load(out)
    sizes = np.bincount(result["assign"], minlength=8)
    assert result["centroids"].shape == (8, 8) and sizes.min() >= 12 and sizes.max() <= 13
    assert "100 points -> 8 clusters" in capsys.readouterr().out


def test_bad_config_key_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "bad.json"
    config.write_text(json.dumps({"epochz": 3}))
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["train", "--config", str(config), "--out", str(tmp_path / "run")])
    assert exit_info.value.code == 2
    assert "unknown config keys ['epochz']" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "xcops.cli", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "usage: xcops" in result.stdout, result.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "cluster", "bench", "demo"])
def test_every_command_has_help(command, capsys):
    # In-process: a subprocess per command spent 3 s each importing torch, for the same parser.
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0 and f"usage: xcops {command}" in capsys.readouterr().out
