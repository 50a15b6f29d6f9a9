"""bench/yso_table.py: rows from fake run directories and baseline outputs, and the rebuilt
``xcops train`` command, which must make the same config again."""

import dataclasses
import importlib
import json
import pathlib
import random
import shlex
import subprocess
import sys

import pytest

from xcops.train import TrainConfig

BENCH = pathlib.Path(__file__).resolve().parents[1] / "bench"
METRIC_NAMES = ["P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5", "nDCG@5"]


@pytest.fixture
def yso_table(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("yso_table")


def fake_metrics(rnd):
    return {**{name: rnd.uniform(0, 100) for name in METRIC_NAMES},
            "train_seconds": rnd.uniform(1, 1e4), "predict_seconds": rnd.uniform(1, 1e3)}


def test_rows_from_runs_and_baselines_update_the_table(yso_table, tmp_path, capsys):
    rnd = random.Random()
    run = tmp_path / "run"
    run.mkdir()
    config = dataclasses.replace(TrainConfig(), data=str(tmp_path / "data"), epochs=rnd.randint(2, 50))
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(config)))
    run_metrics = dict(fake_metrics(rnd), processes=2)  # an `xcops train --nproc 2` run
    (run / "metrics.json").write_text(json.dumps(run_metrics))
    baseline = dict(model="pecos", **fake_metrics(rnd), wall_seconds=1.0, settings={}, hardware="h",
                    command="python bench/baseline_pecos.py d", date="2026-12-02 01:00 UTC")
    (tmp_path / "pecos.json").write_text(json.dumps(baseline))
    kept = {key: rnd.random() for key in yso_table.KEYS} | dict(model="kept", hardware="x", command="y", date="z")
    table = tmp_path / "yso_models.json"
    table.write_text(json.dumps([kept, dict(kept, model="pecos")]))

    yso_table.main(["--run", f"ova={run}", "--baseline", str(tmp_path / "pecos.json"), "--hardware", "my box",
                    "--table", str(table)])

    rows = json.loads(table.read_text())
    assert [row["model"] for row in rows] == ["kept", "pecos", "ova"]
    assert rows[0] == kept
    assert all(list(row) == yso_table.KEYS for row in rows[1:])
    for row, source in ((rows[1], baseline), (rows[2], run_metrics)):
        for key, name in yso_table.METRICS.items():
            assert row[key] == source[name]
        assert (row["train_seconds"], row["predict_seconds"]) == (source["train_seconds"], source["predict_seconds"])
    assert {key: rows[1][key] for key in ("hardware", "command", "date")} == \
        {key: baseline[key] for key in ("hardware", "command", "date")}
    assert rows[2]["hardware"] == "my box" and f"--epochs {config.epochs}" in rows[2]["command"]
    assert rows[2]["command"].endswith("--nproc 2")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 + len(rows)
    assert f"| ova | {run_metrics['P@1']:.2f} |" in printed[-1]


def test_run_row_needs_its_metrics(yso_table, tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig())))
    with pytest.raises(FileNotFoundError):
        yso_table.run_row(str(tmp_path), None)


# Stands in for `xcops train`: prints the config that the flags make, without training.
PRINT_CONFIG = ("import dataclasses, json, sys; from xcops.cli import build_parser, _train_config; "
                "print(json.dumps(dataclasses.asdict(_train_config(build_parser().parse_args(sys.argv[1:])))))")


def test_rebuilt_command_makes_the_same_config(yso_table, tmp_path):
    rnd = random.Random()
    config = TrainConfig(data=str(tmp_path / "my data"), out=str(tmp_path / "run"), model="syncxml",
                         model_args={"cluster_size": rnd.randint(2, 64)}, epochs=rnd.randint(2, 50),
                         lr=rnd.uniform(1e-4, 1e-2), batch_size=rnd.randint(1, 512), max_vocab=None,
                         min_count=rnd.randint(2, 5), fused=False, propensity_a=rnd.uniform(0.1, 1.0),
                         seed=rnd.randint(1, 1000))
    command = yso_table.train_command(dataclasses.asdict(config))
    assert command.startswith("xcops train ")
    stand_in = f"{shlex.quote(sys.executable)} -c {shlex.quote(PRINT_CONFIG)} train"
    result = subprocess.run(["bash", "-c", stand_in + command[len("xcops train"):]], capture_output=True,
                            text=True, check=True)
    assert json.loads(result.stdout) == dataclasses.asdict(config)


def test_cited_rows_without_some_figures_print_dashes(yso_table):
    row = dict(model="omikuji-bonsai", p1=38.26, p3=23.47, p5=17.08, psp1=None, psp3=None, psp5=None,
               train_seconds=988, predict_seconds=None, hardware="cited", command="c", date="d")
    line = yso_table.markdown([row]).splitlines()[-1]
    assert line.startswith("| omikuji-bonsai | 38.26 | 23.47 | 17.08 | - | - | - | 988 s | - | cited |")
