"""NGAME against the frozen-encoder label-centroid kNN on a fixed subset of an XC text set
(issue 14: on 50k yso-finna-en training titles, NGAME must beat the frozen baseline by >= 3 P@1).

    python bench/ngame_subset.py ../shared/data/yso-finna-en --out runs/ngame-subset
    python bench/ngame_subset.py DATA --train 2000 --test 500 --model-args '{"m1_epochs": 1}'

The subset is drawn once with a fixed seed (``--train`` training and ``--test`` test titles,
all labels, label ids unchanged) and written to ``OUT/data``. Then, on the same rows:

- ``frozen``: NGAME's encoder untrained (all-MiniLM-L6-v2 by default), each label the
  normalised mean of the embeddings of its training titles, top-k by inner product
  (``dense_topk``): the no-training baseline of DESIGN.md.
- ``ngame``: ``xcops train --model ngame`` with its defaults (or ``--model-args``).

Prints P@1/3/5 and PSP@1/3/5 (propensities from the subset's training labels) and the seconds
of each; ``OUT/results.json`` keeps them. Not a test: a full run takes hours on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from xcops.data import read_sparse, read_text, write_sparse, write_text
from xcops.data.dataset import find_file
from xcops.data.formats import read_bytes
from xcops.metrics import evaluate, inv_propensity
from xcops.models.ngame import NGAME, NGAMEOptions, encoder_folder, label_centroids
from xcops.models.text_encoder import TextEncoder
from xcops.ops.dense_topk import dense_topk
from xcops.train import TrainConfig, load_splits, resolve_device, train

KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")


def build_subset(data: Path, out: Path, num_train: int, num_test: int, seed: int) -> Path:
    """``out`` holding ``num_train`` / ``num_test`` rows of ``data``'s splits drawn with
    ``seed`` (kept in file order), and its ``Y.txt``; reused when already built alike."""
    params = dict(data=str(data.resolve()), train=num_train, test=num_test, seed=seed)
    stamp = out / "subset.json"
    if stamp.exists() and json.loads(stamp.read_text()) == params:
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for split, size in (("trn", num_train), ("tst", num_test)):
        texts = read_text(find_file(data, f"{split}_X.txt"))
        labels = read_sparse(find_file(data, f"{split}_X_Y.txt"))
        if size > len(texts):
            raise SystemExit(f"{split}: asked for {size} rows, {data} has {len(texts)}")
        rows = np.sort(rng.choice(len(texts), size, replace=False))
        write_text(out / f"{split}_X.txt", [texts[i] for i in rows])
        write_sparse(out / f"{split}_X_Y.txt", labels[rows])
    (out / "Y.txt").write_bytes(read_bytes(find_file(data, "Y.txt")))
    stamp.write_text(json.dumps(params))
    return out


@torch.no_grad()
def frozen_centroid_knn(cfg: TrainConfig, data: Path) -> dict:
    options = NGAMEOptions.parse(cfg.model_args)
    device = resolve_device(cfg.device)
    train_set, test_set = load_splits(cfg, data, NGAME.make_tokenizer(cfg))
    encoder = TextEncoder.from_folder(encoder_folder(options.encoder), options.pooling,
                                      train_set.pad_token_id).to(device)
    start = time.perf_counter()
    queries = encoder.embed(train_set.input_ids, cfg.eval_batch_size, device, desc="frozen: train titles")
    indptr = torch.from_numpy(train_set.labels.indptr).long()
    indices = torch.from_numpy(train_set.labels.indices).long()
    # Labels without a training title keep a zero vector: they are never preferred.
    centroids = label_centroids(queries, indptr, indices, torch.arange(len(train_set)), train_set.num_labels,
                                torch.zeros(train_set.num_labels, queries.shape[1], device=device))
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    tests = encoder.embed(test_set.input_ids, cfg.eval_batch_size, device, desc="frozen: test titles")
    predictions = torch.cat([dense_topk(chunk, centroids, cfg.top_k)[1] for chunk in tests.split(cfg.eval_batch_size)])
    metrics = evaluate(test_set.labels, predictions.cpu(), k=(1, 3, 5),
                       inv_propensity=inv_propensity(train_set.labels, cfg.propensity_a, cfg.propensity_b))
    return dict(metrics, train_seconds=train_seconds, predict_seconds=time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="an XC text data directory with Y.txt")
    parser.add_argument("--out", type=Path, default=Path("runs/ngame-subset"))
    parser.add_argument("--train", type=int, default=50_000, help="training titles in the subset")
    parser.add_argument("--test", type=int, default=20_000, help="test titles in the subset")
    parser.add_argument("--seed", type=int, default=0, help="seed of the subset (and of the ngame run)")
    parser.add_argument("--model-args", default="{}", help="ngame model_args as JSON (default: its defaults)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--skip-ngame", action="store_true", help="only the frozen baseline")
    args = parser.parse_args(argv)

    data = build_subset(args.data, args.out / "data", args.train, args.test, args.seed)
    cfg = TrainConfig.from_dict(dict(model="ngame", data=str(data), out=str(args.out / "ngame"), seed=args.seed,
                                     device=args.device, model_args=json.loads(args.model_args)))
    results = {"frozen": frozen_centroid_knn(cfg, data)}
    if not args.skip_ngame:
        results["ngame"] = train(cfg)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.train} training / {args.test} test titles of {args.data} (seed {args.seed}), "
          f"model_args {cfg.model_args}")
    print("| model | " + " | ".join(KEYS) + " | train s | predict s |")
    print("|---" * (len(KEYS) + 3) + "|")
    for name, metrics in results.items():
        cells = [f"{metrics[key]:.2f}" for key in KEYS] + [f"{metrics[key]:.0f}" for key in
                                                           ("train_seconds", "predict_seconds")]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
