"""The ``xcops`` command: train, evaluate, predict, cluster, bench, demo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


class UsageError(ValueError):
    """A bad flag or config: exit code 2, like argparse's own usage errors."""


def _positive_int(text: str) -> int:
    """argparse type of counts (--k, --batch-size, ...): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value

# Flags that override config fields: (flag, field, type, help).
_TRAIN_FLAGS = [
    ("--data", "data", str, "XC text data directory, or 'synthetic' for the built-in generated set"),
    ("--out", "out", str, "run directory (config, metrics, checkpoint)"),
    ("--model", "model", str, "model to train: bow (default), syncxml or ngame"),
    ("--dim", "dim", int, "embedding dimension"),
    ("--epochs", "epochs", int, "training epochs"),
    ("--batch-size", "batch_size", int, "training batch size"),
    ("--lr", "lr", float, "(peak) learning rate of the dense and sparse Adam optimizers"),
    ("--random-negatives", "random_negatives", int, "uniform random negatives per batch shortlist"),
    ("--max-len", "max_len", int, "tokens kept per text"),
    ("--max-vocab", "max_vocab", int, "vocabulary size cap"),
    ("--min-count", "min_count", int, "training occurrences a word needs to get its own id (else <unk>)"),
    ("--stopwords", "stopwords", str, "drop the words of this list (english) before tokenising"),
    ("--device", "device", str, "auto, cpu, cuda or cuda:N"),
    ("--seed", "seed", int, "random seed (data generation, init, batching)"),
    ("--top-k", "top_k", int, "labels predicted per test text"),
]


def _load_config_file(path: str) -> dict:
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except IsADirectoryError:
        raise UsageError(f"--config {path}: is a directory, not a config file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--config {path}: cannot be read ({err})") from None
    try:
        if path.endswith((".yaml", ".yml")):
            values = yaml.safe_load(text) or {}
        else:
            values = json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        mark = getattr(err, "problem_mark", None)  # YAML: where it broke, and what broke
        problem = (f"line {mark.line + 1}, column {mark.column + 1}: {err.problem}" if mark is not None
                   else " ".join(str(err).split()))
        raise UsageError(f"--config {path}: not valid {'YAML' if path.endswith(('.yaml', '.yml')) else 'JSON'} "
                         f"({problem})") from None
    if not isinstance(values, dict):
        raise UsageError(f"--config {path}: must hold a mapping of config keys, got {type(values).__name__}")
    return values


def _train_config(args):
    from .train import TrainConfig

    values = _load_config_file(args.config) if args.config else {}
    for _, name, _, _ in _TRAIN_FLAGS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.reference_ops:
        values["fused"] = False
    if args.resume:
        values["resume"] = True
    if args.model_args:
        try:
            extra = json.loads(args.model_args)
        except json.JSONDecodeError as err:
            raise UsageError(f"--model-args must be a JSON object: {err}") from None
        if not isinstance(extra, dict):
            raise UsageError(f"--model-args must be a JSON object, got {args.model_args!r}")
        base = values.get("model_args", {})
        values["model_args"] = {**base, **extra} if isinstance(base, dict) else extra
    source = f" (in {args.config} or the flags)" if args.config else ""
    try:
        return TrainConfig.from_dict(values)
    except ValueError as err:
        raise UsageError(f"bad config{source}: {err}") from None


def _add_train_flags(parser):
    parser.add_argument("--config", help="YAML or JSON file of config keys; flags override it")
    for flag, name, kind, help_text in _TRAIN_FLAGS:
        parser.add_argument(flag, dest=name, type=kind, default=None, help=help_text)
    parser.add_argument("--model-args", help='model-specific options as JSON, e.g. \'{"num_clusters": 1024}\'')
    parser.add_argument("--reference-ops", action="store_true",
                        help="use the plain-PyTorch reference ops instead of the fused kernels")
    parser.add_argument("--resume", action="store_true",
                        help="continue a run that died from the state it saved after its last epoch in --out "
                             "(same config and flags)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _summary(title: str, metrics: dict) -> str:
    from .metrics import format_metrics

    return f"\n== {title} ==\n{format_metrics(metrics)}"


def cmd_train(args) -> None:
    from .train import train

    cfg = _train_config(args)
    if args.nproc != 1:  # torchrun starts --nproc copies of this command; see xcops.train_distributed
        from .distributed.launch import SHARDABLE_MODELS, relaunch

        cfg.validate()  # once here, not N times after the processes have started
        if cfg.model not in SHARDABLE_MODELS:
            raise UsageError(f"--nproc: trains the models {list(SHARDABLE_MODELS)}, not {cfg.model!r}")
        raise SystemExit(relaunch(args.nproc, args.argv, cfg.model))
    metrics = train(cfg, progress=not args.quiet)
    print(_summary(f"{cfg.model} on {cfg.data}, run saved to {cfg.out}", metrics))


def cmd_demo(args) -> None:
    from .train import compare_training_speed, train

    cfg = _train_config(args)
    metrics = train(cfg, progress=not args.quiet)
    speed = compare_training_speed(cfg, steps=args.speed_steps, progress=not args.quiet)
    print(_summary(f"{cfg.model} on {cfg.data} ({cfg.epochs} epochs), run saved to {cfg.out}", metrics))
    print(f"\ntraining step, same batches: fused xcops ops {speed['fused_ms_per_step']:.1f} ms, "
          f"PyTorch eager reference {speed['reference_ms_per_step']:.1f} ms "
          f"({speed['speedup']:.2f}x)")


def cmd_evaluate(args) -> None:
    from .data import XCTextDataset, read_sparse
    from .metrics import evaluate, inv_propensity
    from .train import load_run

    model, tokenizer, meta = load_run(args.run, _device_flag(args.device))
    data_dir = Path(args.data or meta["data"])
    test_set = XCTextDataset(data_dir, "tst", tokenizer=tokenizer, max_len=meta["max_len"])
    device = next(model.parameters()).device
    start = time.perf_counter()
    predictions = model.predict(test_set.input_ids, args.k, args.batch_size, device, not args.quiet)
    seconds = time.perf_counter() - start
    train_path = data_dir / "trn_X_Y.txt"
    candidates = [train_path] + [train_path.with_name(train_path.name + ext) for ext in (".xz", ".gz")]
    existing = next((p for p in candidates if p.exists()), None)
    propensity = inv_propensity(read_sparse(existing), args.propensity_a, args.propensity_b) if existing else None
    metrics = evaluate(test_set.labels, predictions, k=(1, 3, 5), inv_propensity=propensity)
    metrics["predict_seconds"] = seconds
    print(_summary(f"{args.run} on {data_dir} (test split)", metrics))
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=1))


def cmd_predict(args) -> None:
    import torch

    from .data.tokenize import encode_texts
    from .train import load_run

    model, tokenizer, meta = load_run(args.run, _device_flag(args.device))
    texts = _read_input(args.input)
    names, names_path = _label_names(meta)
    ids = torch.from_numpy(encode_texts(tokenizer, texts, meta["max_len"]))
    device = next(model.parameters()).device
    top = model.predict(ids, args.k, args.batch_size, device, progress=not args.quiet).tolist()
    largest = max((max(labels) for labels in top if labels), default=-1)
    if names is not None and largest >= len(names):
        raise ValueError(f"{names_path} has {len(names)} label names, but the model predicts label {largest}")
    out = sys.stdout if args.output in (None, "-") else open(args.output, "w", encoding="utf-8")
    for text, labels in zip(texts, top):
        labels = [l for l in labels if l >= 0]
        record = {"text": text, "labels": labels}
        if names is not None:
            record["names"] = [names[l] for l in labels]
        out.write(json.dumps(record, ensure_ascii=False) + "\n")
    if out is not sys.stdout:
        out.close()


def _label_names(meta):
    """``(names, path)`` of the run's Y.txt, or ``(None, None)`` without one."""
    from .data import read_label_names
    from .data.dataset import find_file

    path = find_file(Path(meta["data"]), "Y.txt", required=False) if Path(meta["data"]).is_dir() else None
    if path is None:
        return None, None
    names = read_label_names(path)
    expected = meta["model_config"].get("num_labels")
    if isinstance(expected, int) and len(names) != expected:
        raise ValueError(f"{path} has {len(names)} label names but the model has {expected} labels")
    return names, path


def _read_input(name):
    """The texts of --input (standard input for None or '-'), one per line."""
    if name in (None, "-"):
        content, where = sys.stdin.buffer.read(), "standard input"
    else:
        where = name
        try:
            content = Path(name).read_bytes()
        except IsADirectoryError:
            raise ValueError(f"--input {name}: is a directory, not a text file") from None
        except FileNotFoundError:
            raise ValueError(f"--input {name}: no such file") from None
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as err:
        line = content.count(b"\n", 0, err.start) + 1
        raise ValueError(f"{where}: line {line}: not UTF-8 text") from None
    lines = text.split("\n")
    if lines[-1] == "":  # the final line break ends the last text, it does not start one
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def _device_flag(name):
    from .train import resolve_device

    try:
        return resolve_device(name or "cpu")
    except ValueError as err:
        raise UsageError(f"--{err}") from None


def cmd_cluster(args) -> None:
    import torch

    from .ops.clustering import balanced_kmeans

    x = torch.from_numpy(np.load(args.input)).float().to(_device_flag(args.device))
    start = time.perf_counter()
    assign, centroids = balanced_kmeans(x, num_clusters=args.num_clusters, leaf_size=args.leaf_size,
                                        iters=args.iters, seed=args.seed)
    seconds = time.perf_counter() - start
    sizes = torch.bincount(assign, minlength=centroids.shape[0])
    unit = torch.nn.functional.normalize(x.float(), dim=1)
    cosine = (unit * centroids.float()[assign]).sum(1).mean().item()
    np.savez(args.output, assign=assign.cpu().numpy(), centroids=centroids.float().cpu().numpy())
    print(f"{x.shape[0]} points -> {centroids.shape[0]} clusters of {sizes.min().item()}..{sizes.max().item()} "
          f"points in {seconds:.2f} s; mean cosine to own centroid {cosine:.4f}; written to {args.output}")


def cmd_bench(args) -> None:
    import importlib

    importlib.import_module(f".benchmarks.{args.what}", __package__).main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcops", description="Fused ops and models for extreme classification.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)
    # --debug is taken after the command too; SUPPRESS keeps a subcommand from resetting it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")

    p = sub.add_parser("train", parents=[debug], help="train a model, evaluate it on the test split and save the run")
    _add_train_flags(p)
    p.add_argument("--nproc", type=_positive_int, default=1,
                   help="processes (torchrun): the label head sharded, the rest in DDP; gloo on CPU, NCCL on GPU")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", parents=[debug], help="train the default model on the synthetic set, then time a training "
                                    "step with the fused ops against the PyTorch reference")
    _add_train_flags(p)
    p.add_argument("--speed-steps", type=_positive_int, default=20, help="training steps timed per variant")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("evaluate", parents=[debug], help="P@k, nDCG@k, PSP@k of a saved run on a data set's test split")
    p.add_argument("run", help="run directory written by xcops train")
    p.add_argument("--data", help="data directory (default: the one the run was trained on)")
    p.add_argument("--k", type=_positive_int, default=5, help="labels predicted per text")
    p.add_argument("--batch-size", type=_positive_int, default=1024)
    p.add_argument("--propensity-a", type=float, default=0.55)
    p.add_argument("--propensity-b", type=float, default=1.5)
    p.add_argument("--device", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--json", help="also write the metrics to this file")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("predict", parents=[debug], help="top-k labels (ids and names) for new texts, one JSON line per text")
    p.add_argument("run", help="run directory written by xcops train")
    p.add_argument("--input", help="file with one text per line (default: standard input)")
    p.add_argument("--output", help="output file (default: standard output)")
    p.add_argument("--k", type=_positive_int, default=5)
    p.add_argument("--batch-size", type=_positive_int, default=1024)
    p.add_argument("--device", help="cpu, cuda, ... (default cpu)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("cluster", parents=[debug], help="balanced hierarchical 2-means of the rows of a .npy matrix")
    p.add_argument("input", help=".npy file holding an [N, d] float matrix")
    p.add_argument("--output", default="clusters.npz", help=".npz with assign [N] and centroids [C, d]")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--num-clusters", type=_positive_int, help="a power of two <= N")
    group.add_argument("--leaf-size", type=_positive_int, help="split until clusters have at most this many points")
    p.add_argument("--iters", type=_positive_int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="cpu or cuda (default cpu)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("bench", parents=[debug], help="kernel benchmarks (arguments after the name go to the benchmark)")
    p.add_argument("what", choices=["shortlist", "topk", "clustering"], help="which benchmark")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="its arguments, e.g. --preset cpu --json out.json")
    p.set_defaults(func=cmd_bench)
    return parser


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).strip().splitlines()[:1]) if str(err).strip() else type(err).__name__
    return text


def main(argv=None) -> None:
    """Runs one command. Bad flags or config exit with code 2, bad data or run directories with
    code 1, each with a one-line message naming the flag or file; ``--debug`` shows the
    traceback instead."""
    from .train import ConfigError

    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.func(args)
    except (UsageError, ConfigError) as err:
        if args.debug:
            raise
        print(f"xcops {args.command}: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ValueError, OSError, EOFError) as err:  # bad data or files: a message, not a traceback
        if args.debug:
            raise
        print(f"xcops {args.command}: {_one_line(err)}", file=sys.stderr)
        raise SystemExit(1) from None
    except Exception as err:
        if args.debug:
            raise
        if isinstance(err, RuntimeError) and str(err).startswith("xcops."):  # an op's input check
            print(f"xcops {args.command}: {_one_line(err)}", file=sys.stderr)
            raise SystemExit(1) from None
        print(f"xcops {args.command}: unexpected {type(err).__name__}: {_one_line(err)} "
              "(run with --debug for the traceback)", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
