"""The yso-finna-en model table of bench/RESULTS.md: updates bench/results/yso_models.json from
``xcops train`` run directories and the ``--json`` files of the baseline scripts, then prints
the whole table as Markdown.

    python bench/yso_table.py --run runs/yso-syncxml --run inceptionxml-ova=runs/yso-ova \
        --baseline bench/results/pecos.json --baseline bench/results/omikuji-bonsai.json

A row replaces the row of the same model. A run's command is rebuilt from its config.json
(flags for the fields that have one, an inline ``--config`` for the rest); its date is that of
its metrics.json and its hardware this machine's, unless ``--hardware`` says otherwise.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
from pathlib import Path

import baseline_common

TABLE = Path(__file__).resolve().parent / "results" / "yso_models.json"
METRICS = {"p1": "P@1", "p3": "P@3", "p5": "P@5", "psp1": "PSP@1", "psp3": "PSP@3", "psp5": "PSP@5"}
KEYS = ["model", *METRICS, "train_seconds", "predict_seconds", "hardware", "command", "date"]


def train_command(config: dict, processes: int = 1) -> str:
    """An ``xcops train`` command that makes this config.json again (``processes``: its
    ``--nproc``, which metrics.json records)."""
    from xcops.cli import _TRAIN_FLAGS
    from xcops.train import TrainConfig

    defaults = dataclasses.asdict(TrainConfig())
    flags = {name: flag for flag, name, _, _ in _TRAIN_FLAGS}
    words, unflagged = ["xcops", "train"], {}
    for key, value in config.items():
        if key in defaults and value == defaults[key]:
            continue
        if key in flags and value is not None:
            words += [flags[key], str(value)]
        elif key == "model_args":
            words += ["--model-args", json.dumps(value)]
        elif key == "fused" and value is False:
            words.append("--reference-ops")
        else:
            unflagged[key] = value
    if processes > 1:
        words += ["--nproc", str(processes)]
    command = shlex.join(words)
    if unflagged:  # bash process substitution: still one command, from a fresh clone
        command += f" --config <(echo {shlex.quote(json.dumps(unflagged))})"
    return command


def run_row(spec: str, hardware: str | None) -> dict:
    """The row of a run directory given as ``DIR`` or ``NAME=DIR``."""
    name, _, directory = spec.rpartition("=")
    run = Path(directory)
    config = json.loads((run / "config.json").read_text())
    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    return dict(model=name or config["model"], **{key: metrics[source] for key, source in METRICS.items()},
                train_seconds=metrics["train_seconds"], predict_seconds=metrics["predict_seconds"],
                hardware=hardware or baseline_common.cpu_name(),
                command=train_command(config, metrics.get("processes", 1)),
                date=baseline_common.utc_date(metrics_file.stat().st_mtime))


def baseline_row(path: Path) -> dict:
    """The row of a baseline script's ``--json`` file."""
    record = json.loads(path.read_text())
    return {key: record[METRICS.get(key, key)] for key in KEYS}


def merge(rows: list[dict], new_rows: list[dict]) -> list[dict]:
    """``rows`` with each new row replacing the row of its model (in place) or appended."""
    merged = {row["model"]: row for row in rows}
    merged.update((row["model"], row) for row in new_rows)
    return list(merged.values())


def seconds(value: float | None) -> str:
    if value is None:  # a figure cited from elsewhere that gave no such number
        return "-"
    return f"{value:.0f} s" if value >= 100 else f"{value:.1f} s"


def markdown(rows: list[dict]) -> str:
    lines = ["| model | P@1 | P@3 | P@5 | PSP@1 | PSP@3 | PSP@5 | train | predict | hardware | date | command |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        cells = [row["model"], *("-" if row[key] is None else f"{row[key]:.2f}" for key in METRICS), seconds(row["train_seconds"]),
                 seconds(row["predict_seconds"]), row["hardware"], row["date"], f"`{row['command']}`"]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", action="append", default=[], metavar="[NAME=]DIR",
                        help="an xcops train run directory; NAME (default: its model) names the row")
    parser.add_argument("--baseline", action="append", default=[], type=Path, metavar="JSON",
                        help="the --json output of bench/baseline_pecos.py or bench/baseline_omikuji.py")
    parser.add_argument("--hardware", help="the machine the runs trained on (default: this one's CPU)")
    parser.add_argument("--table", type=Path, default=TABLE, help=f"the JSON table to update (default {TABLE})")
    args = parser.parse_args(argv)
    rows = json.loads(args.table.read_text()) if args.table.exists() else []
    new_rows = [run_row(spec, args.hardware) for spec in args.run] + [baseline_row(p) for p in args.baseline]
    if new_rows:
        rows = merge(rows, new_rows)
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(json.dumps(rows, indent=1) + "\n")
    print(markdown(rows))


if __name__ == "__main__":
    main()
