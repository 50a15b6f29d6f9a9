"""One SyncXML training step with the fused xcops ops against the same step with the
plain-PyTorch reference ops (``--reference-ops``: gather the shortlisted label rows, multiply,
dense weight gradient), at the settings of a config file, on the same batches from the same
initial weights.

    python bench/bench_syncxml_step.py configs/syncxml-yso.yaml --data ../shared/data/yso-finna-en
    python bench/bench_syncxml_step.py --smoke      # the built-in synthetic set: checks the script runs

The model is built on ``--rows`` training rows (clustering the labels of the full set takes
minutes and does not change the cost of a step). Each variant runs ``--warmup`` untimed steps,
then ``--steps`` timed ones; ``--rounds`` alternates the variants and keeps each one's best
round, since the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
import yaml

from xcops.data import XCTextDataset
from xcops.models import get_model
from xcops.train import TrainConfig, load_splits, resolve_data, set_seeds


def build(cfg: TrainConfig, rows: int):
    train_set, _ = load_splits(cfg, resolve_data(cfg), get_model(cfg.model).make_tokenizer(cfg))
    keep = np.sort(np.random.default_rng(cfg.seed).permutation(len(train_set))[:rows])
    train_set.input_ids, train_set.labels = train_set.input_ids[keep], train_set.labels[keep]
    set_seeds(cfg.seed)
    fused = get_model(cfg.model).create(cfg, train_set)
    reference = get_model(cfg.model)(**fused.metadata(), fused=False)
    reference.load_state_dict(fused.state_dict())
    return train_set, {"fused": fused, "reference": reference}


def time_steps(model, batches, warmup: int) -> float:
    """Seconds per step over ``batches[warmup:]``; the model and its optimizers start afresh."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    optimizers = model.make_optimizers(1e-3)
    model.train()
    torch.manual_seed(0)
    for step, batch in enumerate(batches):
        if step == warmup:
            start = time.perf_counter()
        model.train_step(optimizers, batch, detach_extreme=False)
    elapsed = (time.perf_counter() - start) / (len(batches) - warmup)
    model.load_state_dict(state)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", help="YAML/JSON config of a syncxml run")
    parser.add_argument("--data", help="data directory (overrides the config's)")
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()
    values = yaml.safe_load(open(args.config)) if args.config else {"model": "syncxml"}
    if args.data:
        values["data"] = args.data
    if args.smoke:
        values.update(data="synthetic", out="runs/bench-syncxml-smoke", max_len=16, batch_size=32,
                      model_args=dict(values.get("model_args", {}), embed_dim=64, num_filters=8, cluster_size=8,
                                      top_clusters=4, feature_dim=16))
        values.pop("predict_clusters", None)
        args.rows, args.steps, args.warmup, args.rounds = 2000, 3, 1, 1
    cfg = TrainConfig.from_dict(values)
    train_set, models = build(cfg, args.rows)
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True, drop_last=True,
                                         collate_fn=XCTextDataset.collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    batches = [batch for _, batch in zip(range(args.warmup + args.steps), loader)]
    best = {name: float("inf") for name in models}
    for _ in range(args.rounds):
        for name, model in models.items():
            best[name] = min(best[name], time_steps(model, batches, args.warmup))
    result = dict(threads=torch.get_num_threads(), batch_size=cfg.batch_size, max_len=cfg.max_len,
                  model_args=cfg.model_args, rows=len(train_set), steps=args.steps,
                  fused_ms_per_step=1e3 * best["fused"], reference_ms_per_step=1e3 * best["reference"],
                  speedup=best["reference"] / best["fused"], date=time.strftime("%Y-%m-%d"))
    print(f"| ops | ms/step | ratio |\n|---|---|---|\n| fused (xcops) | {result['fused_ms_per_step']:.1f} | "
          f"{result['speedup']:.2f}x |\n| reference (PyTorch) | {result['reference_ms_per_step']:.1f} | 1.00x |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
