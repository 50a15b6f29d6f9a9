"""Training, evaluation and run directories for every model of ``xcops train``.

A run directory holds ``config.json``, ``metrics.json``, the checkpoint (``model.safetensors``
+ ``model.json``) and the tokenizer (``vocab.json`` for xcops' SimpleTokenizer, or a
``tokenizer/`` folder for a ``transformers`` one).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch
from tqdm.auto import tqdm

from .checkpoint import load_checkpoint, save_checkpoint
from .data import SimpleTokenizer, XCTextDataset, generate
from .distributed.launch import launched_world_size
from .metrics import evaluate, inv_propensity
from .models import get_model


@dataclass
class TrainConfig:
    """Everything a run needs; ``xcops train --config`` files and flags set these fields."""

    data: str = "synthetic"  # an XC text data directory, or "synthetic" for the built-in set
    out: str = "runs/latest"
    model: str = "bow"
    model_args: dict = field(default_factory=dict)  # model-specific options, see each model
    dim: int = 256
    epochs: int = 8
    batch_size: int = 256
    lr: float = 5e-3
    random_negatives: int = 256  # uniform negatives added to the in-batch shortlist (bow)
    max_len: int = 32
    min_count: int = 1
    max_vocab: Optional[int] = 200_000
    fused: bool = True  # False: the plain-PyTorch reference ops (for speed comparisons)
    device: str = "auto"
    seed: int = 0
    eval_batch_size: int = 1024
    top_k: int = 5
    propensity_a: float = 0.55
    propensity_b: float = 1.5
    synthetic: dict = field(default_factory=lambda: dict(num_train=20_000, num_test=2_000, num_labels=2_000))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_data(cfg: TrainConfig) -> Path:
    """The data directory; the synthetic set is generated once per parameter set and seed."""
    if cfg.data != "synthetic":
        return Path(cfg.data)
    params = dict(cfg.synthetic, seed=cfg.seed)
    name = "-".join(f"{k}{v}" for k, v in sorted(params.items()))
    directory = Path(cfg.out).parent / "synthetic" / name
    if not (directory / "Y.txt").exists():
        generate(directory, **params)
    return directory


def set_seeds(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def load_splits(cfg: TrainConfig, data_dir: Path, tokenizer=None):
    train_set = XCTextDataset(data_dir, "trn", tokenizer=tokenizer, max_len=cfg.max_len,
                              min_count=cfg.min_count, max_vocab=cfg.max_vocab)
    test_set = XCTextDataset(data_dir, "tst", tokenizer=train_set.tokenizer, max_len=cfg.max_len)
    return train_set, test_set


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Trains ``cfg.model``, evaluates it on the test split, saves the run; returns the metrics."""
    if launched_world_size() > 1:  # one of the processes of `xcops train --nproc N`
        from .train_distributed import train_distributed

        return train_distributed(cfg, progress)
    set_seeds(cfg.seed)
    device = resolve_device(cfg.device)
    data_dir = resolve_data(cfg)
    model_cls = get_model(cfg.model)
    train_set, test_set = load_splits(cfg, data_dir, model_cls.make_tokenizer(cfg))
    model = model_cls.create(cfg, train_set).to(device)

    start = time.perf_counter()
    stats = model.fit(cfg, train_set, device, progress)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predictions = model.predict(test_set.input_ids, cfg.top_k, cfg.eval_batch_size, device, progress)
    predict_seconds = time.perf_counter() - start
    propensity = inv_propensity(train_set.labels, cfg.propensity_a, cfg.propensity_b)
    metrics = evaluate(test_set.labels, predictions, k=(1, 3, 5), inv_propensity=propensity)
    metrics.update(stats)
    metrics.update(train_seconds=train_seconds, predict_seconds=predict_seconds,
                   test_queries_per_second=len(test_set) / max(predict_seconds, 1e-9))
    save_run(cfg, model, train_set.tokenizer, metrics, data_dir)
    return metrics


def save_run(cfg: TrainConfig, model, tokenizer, metrics: dict, data_dir: Path) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    if isinstance(tokenizer, SimpleTokenizer):
        (out / "vocab.json").write_text(tokenizer.to_json())
    else:
        tokenizer.save_pretrained(str(out / "tokenizer"))
    save_checkpoint(out, model, dict(model=model.name, model_config=model.metadata(), data=str(data_dir),
                                     max_len=cfg.max_len))


def load_run(run_dir, device="cpu"):
    """``(model, tokenizer, metadata)`` of a saved run, ready for prediction."""
    state, meta = load_checkpoint(run_dir)
    model = get_model(meta["model"]).from_metadata(meta["model_config"])
    model.load_state_dict(state)
    run = Path(run_dir)
    if (run / "vocab.json").exists():
        tokenizer = SimpleTokenizer.from_json((run / "vocab.json").read_text())
    else:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(run / "tokenizer"))
    return model.to(resolve_device(device)).eval(), tokenizer, meta


def compare_training_speed(cfg: TrainConfig, steps: int = 20, progress: bool = True) -> dict:
    """Milliseconds per training step of the default (bow) model with the fused xcops ops and
    with the plain-PyTorch reference ops (gather + multiply, dense weight gradient), on the
    same batches from the same initial weights."""
    device = resolve_device(cfg.device)
    train_set, _ = load_splits(cfg, resolve_data(cfg))
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                         collate_fn=XCTextDataset.collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    batches = [batch for _, batch in zip(range(steps + 2), loader)]
    result = {}
    for fused in (True, False):
        set_seeds(cfg.seed)
        model = get_model("bow").create(dataclasses.replace(cfg, fused=fused), train_set).to(device)
        optimizers = model.make_optimizers(cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        name = "fused" if fused else "reference"
        elapsed = 0.0
        for step, batch in enumerate(tqdm(batches, desc=f"speed ({name})", disable=not progress)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.train_step(optimizers, batch, cfg.random_negatives, generator, device).item()
            if step >= 2:  # the first steps warm up allocators and caches
                elapsed += time.perf_counter() - start
        result[f"{name}_ms_per_step"] = 1e3 * elapsed / max(1, len(batches) - 2)
    result["speedup"] = result["reference_ms_per_step"] / result["fused_ms_per_step"]
    return result
