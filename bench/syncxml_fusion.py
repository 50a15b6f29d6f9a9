"""Adds the TF-IDF label-centroid fusion, the training-title neighbours or the TF-IDF neighbours
to a trained SyncXML run, and scores it without and with them.

    python bench/syncxml_fusion.py runs/yso-syncxml --out runs/yso-syncxml-fused
    python bench/syncxml_fusion.py runs/yso-syncxml-fused5 --neighbours --out runs/yso-syncxml-knn5
    python bench/syncxml_fusion.py runs/yso-cfg --tfidf-neighbours --centroid-bigrams --out runs/yso-tfidf

Without ``--neighbours``: adds the centroids to a run trained without them. That run saw all
training titles, so the weight is fitted on ``--fit-rows`` training titles that the model *did*
train on (drawn with ``--seed``). The model ranks those better than test titles (62% against 35%
P@1 on yso-finna-en), which biases the fitted weight towards the model: the figure this gives is
a lower bound of what a held-out fit would give, and the script says which rows it used.

With ``--neighbours``: the run must have held rows out of training to fit its mix (trained with
``"centroid_fusion": true``). The script rebuilds that split, indexes the titles the model
trained on (:meth:`xcops.models.syncxml.SyncXML.add_neighbours`; a run trained with
``"title_neighbours": true`` keeps its own index) and fits all weights on the held-out titles
that repeat no other training title, as ``xcops train`` does after the same training with
``"title_neighbours": true`` added to the same model_args (the written config). Several
``--neighbour-k``, ``--neighbour-temperature`` or ``--neighbour-candidates`` values are each
fitted, and the best on the held-out titles is kept.

``--tfidf-neighbours`` (the TF-IDF kNN, :class:`xcops.models.tfidf_neighbours.TfidfNeighbours`),
``--centroid-bigrams`` (centroids rebuilt with bigrams) and ``--centroid-candidates`` need the
same held-out split. Both
are built from the training titles less the held-out ones, as :meth:`SyncXML.create` builds
them with ``"tfidf_neighbours": true`` or ``"centroid_bigrams": true``; their settings
(``--tfidf-k``, ``--tfidf-temperature``, ``--tfidf-candidates``, ``--centroid-candidates``) join
the same grid.

Prints P@1/3/5 and PSP@1/3/5 on the whole test split without (the run's own metrics.json when it
has them) and with the addition, and writes
the result as a run directory (``--out``) that ``xcops predict`` / ``xcops evaluate`` load.
Not a test.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from xcops.data import XCTextDataset
from xcops.distributed.training import training_rows
from xcops.metrics import evaluate, inv_propensity
from xcops.models.candidate_ranker import CandidateRanker
from xcops.models.score_fusion import fit_weights, mean_precision, mixed_scores
from xcops.models.syncxml import SyncXMLOptions, held_out_rows, unseen_titles
from xcops.train import TrainConfig, load_run, resolve_data, resolve_device, save_run

KEYS = ("P@1", "P@3", "P@5", "PSP@1", "PSP@3", "PSP@5")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="an xcops train run directory of a syncxml model")
    parser.add_argument("--data", type=Path, help="its data directory (default: the one in its config.json)")
    parser.add_argument("--out", type=Path, required=True, help="where to write the fused run")
    parser.add_argument("--fit-rows", type=int, default=5000,
                        help="training titles to fit the centroids' weight on (not with --neighbours)")
    parser.add_argument("--neighbours", action="store_true",
                        help="add the training-title neighbours to a run that held rows out (see above)")
    parser.add_argument("--neighbour-dim", type=int, default=128)
    parser.add_argument("--neighbour-k", type=int, nargs="+", default=[20],
                        help="neighbours that vote; with several values (here or in --neighbour-temperature) "
                             "each pair is fitted and the best on the held-out titles is kept")
    parser.add_argument("--neighbour-temperature", type=float, nargs="+", default=[0.1])
    parser.add_argument("--neighbour-candidates", type=int, nargs="+", default=[0],
                        help="nearest titles whose labels join the shortlist's candidates (0: none)")
    parser.add_argument("--tfidf-neighbours", action="store_true",
                        help="add the TF-IDF neighbours to a run that held rows out")
    parser.add_argument("--tfidf-k", type=int, nargs="+", default=[50])
    parser.add_argument("--tfidf-temperature", type=float, nargs="+", default=[0.2])
    parser.add_argument("--tfidf-candidates", type=int, nargs="+", default=[0],
                        help="nearest titles by TF-IDF whose labels join the candidates (0: none)")
    parser.add_argument("--centroid-bigrams", action="store_true",
                        help="rebuild the run's centroids with bigrams (a run that held rows out)")
    parser.add_argument("--centroid-candidates", type=int, nargs="+",
                        help="labels of the nearest centroids that join the candidates (a run that held rows out)")
    parser.add_argument("--learned-mix", action="store_true",
                        help="also fit a CandidateRanker over the mix's terms, and keep it where it beats the "
                             "log-linear mix on half of the held-out titles when fitted on the other half")
    parser.add_argument("--ranker-hidden", type=int, nargs="+", default=[32],
                        help="hidden units of the ranker; with several, the best on the held-out half is kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)

    cfg = TrainConfig.from_dict(json.loads((args.run / "config.json").read_text()))
    if cfg.model != "syncxml":
        raise SystemExit(f"{args.run} is a {cfg.model} run; the fusion is SyncXML's")
    device = resolve_device(args.device)
    model, tokenizer, meta = load_run(args.run, device)
    data = args.data or resolve_data(cfg)
    train_set = XCTextDataset(data, "trn", tokenizer=tokenizer, max_len=meta["max_len"])
    test_set = XCTextDataset(data, "tst", tokenizer=tokenizer, max_len=meta["max_len"])
    propensity = inv_propensity(train_set.labels, cfg.propensity_a, cfg.propensity_b)

    def score():
        start = time.perf_counter()
        predictions = model.predict(test_set.input_ids, cfg.top_k, cfg.eval_batch_size, device)
        metrics = evaluate(test_set.labels, predictions, k=(1, 3, 5), inv_propensity=propensity)
        return dict(metrics, predict_seconds=time.perf_counter() - start)

    recorded = metrics_of(args.run)
    plain = recorded if all(key in recorded for key in (*KEYS, "predict_seconds")) else score()
    start = time.perf_counter()
    held_out_fit = (args.neighbours or args.tfidf_neighbours or args.centroid_bigrams or args.learned_mix
                    or args.centroid_candidates is not None)
    if held_out_fit:
        held_out, trained = held_out_split(cfg, metrics_of(args.run), len(train_set))
        added = add_label_terms(model, train_set, held_out, tokenizer, args)
        if args.neighbours and model.neighbours is None:
            model.add_neighbours(train_set.input_ids[trained], train_set.labels[trained.numpy()], device,
                                 args.neighbour_dim, args.neighbour_k[0], args.neighbour_temperature[0], cfg.seed,
                                 cfg.eval_batch_size, progress=True)
        elif model.neighbours is not None and len(model.neighbours.vectors) != len(trained):
            raise SystemExit(f"{args.run} indexes {len(model.neighbours.vectors)} titles, but trained on "
                             f"{len(trained)}")
        rows = unseen_titles(train_set.input_ids, held_out).numpy()
        fitted_on = "training titles held out of training that repeat no other training title"
        added.update(choose_settings(model, train_set, rows, args, cfg, device))
        if args.learned_mix:
            kept = np.setdiff1d(np.arange(len(train_set)), held_out.numpy())
            added.update(choose_ranker(model, train_set, rows, kept, args, cfg, device))
    else:
        model.add_centroids(train_set.input_ids, train_set.labels)
        rows = np.sort(np.random.default_rng(args.seed).choice(len(train_set), min(args.fit_rows, len(train_set)),
                                                               replace=False))
        fitted_on, added = "training titles the model trained on", dict(centroid_fusion=True)
    weights = model.fit_fusion(train_set.input_ids[rows], train_set.labels[rows], cfg.top_k, cfg.eval_batch_size,
                               device, cfg.seed)
    fit_seconds = time.perf_counter() - start
    fused = score()
    fused.update(weights, fusion_rows=len(rows), fusion_fit_seconds=fit_seconds, fusion_fitted_on=fitted_on,
                 source_run=str(args.run), **{key: value for key, value in metrics_of(args.run).items()
                                              if key in ("train_seconds", "train_steps", "processes")})
    # Weights fitted on held-out rows are refitted by a rerun; the others are fixed in the config.
    out_cfg = dataclasses.replace(cfg, out=str(args.out),
                                  model_args={**cfg.model_args, **added, **({} if held_out_fit else weights)})
    save_run(out_cfg, model, tokenizer, fused, data)

    terms = (("neighbours", args.neighbours), ("TF-IDF neighbours", args.tfidf_neighbours),
             ("learned mix", model.ranker is not None),
             ("centroid bigrams", args.centroid_bigrams), ("centroid candidates", args.centroid_candidates))
    name = " + ".join(term for term, on in terms if on) or "centroid fusion"
    print(f"\n{args.run}: weights {weights} fitted on {len(rows)} {fitted_on} ({fit_seconds:.0f} s)")
    print("| model | " + " | ".join(KEYS) + " | predict s |")
    print("|---" * (len(KEYS) + 2) + "|")
    for row, metrics in ((args.run.name, plain), (f"{args.run.name} + {name}", fused)):
        print(f"| {row} | " + " | ".join(f"{metrics[key]:.2f}" for key in KEYS)
              + f" | {metrics['predict_seconds']:.1f} |")


def add_label_terms(model, train_set, held_out, tokenizer, args) -> dict:
    """Builds ``--centroid-bigrams`` and ``--tfidf-neighbours`` from the training titles less the
    ``held_out`` rows (what :meth:`SyncXML.create` learns from) and returns their model_args."""
    kept = np.setdiff1d(np.arange(len(train_set)), held_out.numpy())
    ids, labels = train_set.input_ids[kept], train_set.labels[kept]
    unknown_id = getattr(tokenizer, "unk_token_id", None)
    added = {}
    if args.centroid_bigrams:
        if model.centroids is None:
            raise SystemExit("--centroid-bigrams rebuilds the centroids of a run trained with centroid_fusion")
        model.add_centroids(ids, labels, bigrams=True, unknown_id=unknown_id)
        added.update(centroid_bigrams=True)
    if args.tfidf_neighbours:
        model.add_tfidf_neighbours(ids, labels, args.tfidf_k[0], args.tfidf_temperature[0], unknown_id)
        added.update(tfidf_neighbours=True)
    return added


# A grid setting (its --option, model_args key and model.config key): the index it belongs to,
# and its attribute on that index (None: an attribute of the model, of the same name).
SETTINGS = {"neighbour_k": ("neighbours", "k"), "neighbour_temperature": ("neighbours", "temperature"),
            "neighbour_candidates": ("neighbours", None), "tfidf_k": ("tfidf_neighbours", "k"),
            "tfidf_temperature": ("tfidf_neighbours", "temperature"), "tfidf_candidates": ("tfidf_neighbours", None),
            "centroid_candidates": ("centroids", None)}


def choose_settings(model, train_set, rows, args, cfg, device) -> dict:
    """The settings of the neighbours that this run adds or refits (``--neighbours``,
    ``--tfidf-neighbours``) and the ``--centroid-candidates``, of those given, whose fitted mix
    has the best mean P@1/3/5 on the held-out ``rows``; the model is left with them, and they
    are returned as model_args. With several, prints each one's score."""
    chosen = {"neighbours": args.neighbours, "tfidf_neighbours": args.tfidf_neighbours,
              "centroids": args.centroid_candidates is not None}
    names = [name for name, (index, _) in SETTINGS.items() if chosen[index]]
    grid = [dict(zip(names, values)) for values in itertools.product(*(getattr(args, name) for name in names))]
    scores = []
    for settings in grid if len(grid) > 1 else []:
        apply_settings(model, settings)
        weights = model.fit_fusion(train_set.input_ids[rows], train_set.labels[rows], cfg.top_k,
                                   cfg.eval_batch_size, device)
        found = model.predict(train_set.input_ids[rows], cfg.top_k, cfg.eval_batch_size, device, progress=False)
        metrics = evaluate(train_set.labels[rows], found, k=(1, 3, 5))
        scores.append(sum(metrics[f"P@{i}"] for i in (1, 3, 5)) / 3)
        print("held-out: " + ", ".join(f"{name} {value}" for name, value in settings.items())
              + f": mean P@1/3/5 {scores[-1]:.2f}, P@1 {metrics['P@1']:.2f}, weights {weights}", flush=True)
    best = grid[max(range(len(scores)), key=scores.__getitem__)] if scores else grid[0]
    apply_settings(model, best)
    if args.neighbours:
        best.update(title_neighbours=True, neighbour_dim=model.neighbours.basis.shape[1])
    return best


def choose_ranker(model, train_set, rows, kept, args, cfg, device) -> dict:
    """Fits the log-linear mix and a ranker of each ``--ranker-hidden`` size on one half of the
    held-out ``rows`` (drawn with ``--seed``), prints each one's P@1 and mean P@1/3/5 on the
    other half, and leaves the model with the best ranker (to be fitted on all rows by
    ``fit_fusion``), or with none where the mix is best. Returns the model_args of that choice.
    ``kept``: the training rows that give the labels' frequencies, as in ``SyncXML.create``."""
    candidates, terms, hits = model.mix_inputs(train_set.input_ids[rows], train_set.labels[rows], cfg.top_k,
                                               cfg.eval_batch_size, device)
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(args.seed))
    halves = [(candidates[half], [term[half] for term in terms], hits[half])
              for half in (order[: len(order) // 2], order[len(order) // 2:])]
    (fit_candidates, fit_terms, fit_hits), (check_candidates, check_terms, check_hits) = halves
    # The mix weighs the ranker's first terms, not the meta probability and name shares after them
    # (SyncXML._ranker_terms).
    mixed = len(model._mix_names())
    weights = fit_weights(fit_terms[:mixed], fit_candidates, fit_hits)
    rankings = {"log-linear mix": mixed_scores(weights, check_terms[:mixed], check_candidates)}
    for hidden in args.ranker_hidden:
        ranker = CandidateRanker(len(terms), len(model.label_cluster), hidden)
        ranker.set_label_counts(train_set.labels[kept])
        with torch.enable_grad():
            ranker.fit(fit_terms, fit_candidates, fit_hits, seed=cfg.seed)
        with torch.no_grad():
            rankings[hidden] = ranker(check_terms, check_candidates)
    scores = {name: mean_precision(ranking, check_hits) for name, ranking in rankings.items()}
    print(f"held-out, fitted on {len(halves[0][0])} titles and scored on {len(halves[1][0])}: | ranking | P@1 | "
          "mean P@1/3/5 |")
    for name, ranking in rankings.items():
        label = name if isinstance(name, str) else f"ranker, {name} hidden"
        print(f"| {label} | {100 * mean_precision(ranking, check_hits, ks=(1,)):.2f} | {100 * scores[name]:.2f} |",
              flush=True)
    best = max(scores, key=scores.__getitem__)
    if isinstance(best, str):
        # A run trained with learned_mix loses its ranker, and its config says so.
        model.ranker = None
        model.config.update(ranker_terms=0)
        return dict(learned_mix=False)
    model.add_ranker(train_set.labels[kept], len(terms), best)
    return dict(learned_mix=True, ranker_hidden=best)


def apply_settings(model, settings: dict) -> None:
    for name, value in settings.items():
        index, attribute = SETTINGS[name]
        setattr(model if attribute is None else getattr(model, index), attribute or name, value)
        model.config[name] = value
    for index, candidates, k in (("neighbours", "neighbour_candidates", "neighbour_k"),
                                 ("tfidf_neighbours", "tfidf_candidates", "tfidf_k")):
        if getattr(model, index) is not None and getattr(model, candidates) > getattr(model, index).k:
            raise SystemExit(f"--{candidates.replace('_', '-')} {getattr(model, candidates)} is more than "
                             f"--{k.replace('_', '-')} {getattr(model, index).k}")


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def held_out_split(cfg: TrainConfig, metrics: dict, num_rows: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(held_out, trained)`` training rows of a run that fitted its mix on held-out rows,
    rebuilt as ``xcops train`` split them (the processes' shares less the held-out rows)."""
    options = SyncXMLOptions.parse(cfg.model_args)
    if not metrics.get("fusion_rows"):
        raise SystemExit(f"{cfg.out} held no rows out of training (train it with \"centroid_fusion\": true and "
                         "no fusion_alpha); --neighbours would fit on titles the index holds")
    world = metrics.get("processes", 1)
    held_out = held_out_rows(num_rows, options, cfg.seed, world)
    shares = [training_rows(num_rows, rank, world) for rank in range(world)]
    rebuilt = int(torch.isin(shares[0], held_out).sum())
    if rebuilt != metrics["fusion_rows"]:
        raise SystemExit(f"rebuilt {rebuilt} held-out rows of the first process, but the run held out "
                         f"{metrics['fusion_rows']}")
    trained = torch.cat(shares).sort().values
    trained = trained[~torch.isin(trained, held_out)]
    return held_out, trained


if __name__ == "__main__":
    main()
