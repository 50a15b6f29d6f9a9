"""Training, evaluation and prediction of the default model (:class:`BowXC`) on text XC data.

``xcops train`` drives :func:`train`; a run directory holds ``config.json``, ``metrics.json``,
the checkpoint (``model.safetensors`` + ``model.json``) and the tokenizer vocabulary.
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
from .metrics import evaluate, inv_propensity
from .models.bow import BowXC
from .models.heads import masked_bce_with_logits
from .ops.dense_topk import dense_topk


@dataclass
class TrainConfig:
    """Everything a run needs; ``xcops train --config`` files and flags set these fields."""

    data: str = "synthetic"  # an XC text data directory, or "synthetic" for the built-in set
    out: str = "runs/latest"
    model: str = "bow"
    dim: int = 256
    epochs: int = 8
    batch_size: int = 256
    lr: float = 5e-3
    random_negatives: int = 256  # uniform negatives added to the in-batch shortlist
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


def batch_shortlist(indptr, indices, num_labels, random_negatives, generator):
    """Shortlist shared by the rows of a batch: the labels of every row in the batch (in-batch
    negatives, popularity weighted) plus uniform random labels. Returns the padded ``[B, K]``
    shortlist and its 0/1 targets."""
    rows = torch.repeat_interleave(torch.arange(len(indptr) - 1), indptr[1:] - indptr[:-1])
    random = torch.randint(0, num_labels, (random_negatives,), generator=generator)
    candidates = torch.unique(torch.cat([indices, random]))
    shortlist = candidates.expand(len(indptr) - 1, -1)
    # A (row, label) pair is positive when row * L + label is one of the batch's pairs.
    positive_keys = rows * num_labels + indices
    keys = torch.arange(len(indptr) - 1).unsqueeze(1) * num_labels + shortlist
    return shortlist.contiguous(), torch.isin(keys, positive_keys).float()


def make_optimizers(model: BowXC, lr: float):
    sparse_ids = {id(p) for p in model.sparse_parameters()}
    dense = [p for p in model.parameters() if id(p) not in sparse_ids]
    return [torch.optim.Adam(dense, lr=lr), torch.optim.SparseAdam(model.sparse_parameters(), lr=lr)]


def train_step(model, optimizers, ids, indptr, indices, cfg, generator, device):
    shortlist, targets = batch_shortlist(indptr, indices, model.config["num_labels"], cfg.random_negatives, generator)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        logits = model(ids.to(device), shortlist.to(device))
    loss = masked_bce_with_logits(logits, targets.to(device))
    for opt in optimizers:
        opt.zero_grad(set_to_none=True)
    loss.backward()
    for opt in optimizers:
        opt.step()
    return loss.detach()


@torch.no_grad()
def predict_topk(model: BowXC, input_ids: torch.Tensor, k: int, batch_size: int, device, progress=True):
    """Exact top-k labels of every row over all labels (``dense_topk``; the bias rides along as
    one more dimension: ``<[q, 1], [w, b]> = <q, w> + b``)."""
    model.eval()
    head = model.classifier
    weight = torch.cat([head.weight, head.bias.unsqueeze(1)], 1).contiguous()
    out = []
    for start in tqdm(range(0, len(input_ids), batch_size), desc="predict", unit="batch", disable=not progress):
        query = model.encode(input_ids[start : start + batch_size].to(device))
        query = torch.cat([query, torch.ones_like(query[:, :1])], 1)
        out.append(dense_topk(query, weight, min(k, weight.shape[0]))[1].cpu())
    model.train()
    return torch.cat(out) if out else torch.empty(0, k, dtype=torch.int64)


def _set_seeds(seed: int) -> torch.Generator:
    torch.manual_seed(seed)
    np.random.seed(seed)
    return torch.Generator().manual_seed(seed)


def load_splits(cfg: TrainConfig, data_dir: Path):
    train_set = XCTextDataset(data_dir, "trn", max_len=cfg.max_len, min_count=cfg.min_count, max_vocab=cfg.max_vocab)
    test_set = XCTextDataset(data_dir, "tst", tokenizer=train_set.tokenizer, max_len=cfg.max_len)
    return train_set, test_set


def build_model(cfg: TrainConfig, vocab_size: int, num_labels: int) -> BowXC:
    if cfg.model != "bow":
        raise ValueError(f"unknown model {cfg.model!r}; available: 'bow'")
    return BowXC(vocab_size, num_labels, cfg.dim, fused=cfg.fused)


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Trains, evaluates on the test split, saves the run; returns the metrics dict."""
    generator = _set_seeds(cfg.seed)
    device = resolve_device(cfg.device)
    data_dir = resolve_data(cfg)
    train_set, test_set = load_splits(cfg, data_dir)
    model = build_model(cfg, len(train_set.tokenizer), train_set.num_labels).to(device)
    optimizers = make_optimizers(model, cfg.lr)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=cfg.batch_size, shuffle=True, collate_fn=XCTextDataset.collate, generator=generator
    )
    start = time.perf_counter()
    for epoch in range(cfg.epochs):
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", disable=not progress)
        running = None
        for ids, indptr, indices in bar:
            loss = train_step(model, optimizers, ids, indptr, indices, cfg, generator, device).item()
            running = loss if running is None else 0.95 * running + 0.05 * loss
            bar.set_postfix(loss=f"{running:.4f}")
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    predictions = predict_topk(model, test_set.input_ids, cfg.top_k, cfg.eval_batch_size, device, progress)
    predict_seconds = time.perf_counter() - start
    propensity = inv_propensity(train_set.labels, cfg.propensity_a, cfg.propensity_b)
    metrics = evaluate(test_set.labels, predictions, k=(1, 3, 5), inv_propensity=propensity)
    metrics.update(train_seconds=train_seconds, predict_seconds=predict_seconds,
                   test_queries_per_second=len(test_set) / max(predict_seconds, 1e-9))
    save_run(cfg, model, train_set.tokenizer, metrics, data_dir)
    return metrics


def save_run(cfg: TrainConfig, model: BowXC, tokenizer: SimpleTokenizer, metrics: dict, data_dir: Path) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    (out / "vocab.json").write_text(tokenizer.to_json())
    save_checkpoint(out, model, dict(model=cfg.model, model_config=model.config, data=str(data_dir),
                                     max_len=cfg.max_len, fused=cfg.fused))


def load_run(run_dir, device="cpu"):
    """``(model, tokenizer, metadata)`` of a saved run, ready for prediction."""
    state, meta = load_checkpoint(run_dir)
    if meta.get("model") != "bow":
        raise ValueError(f"{run_dir}: unsupported model {meta.get('model')!r}")
    model = BowXC(**meta["model_config"])
    model.load_state_dict(state)
    tokenizer = SimpleTokenizer.from_json((Path(run_dir) / "vocab.json").read_text())
    return model.to(resolve_device(device)), tokenizer, meta


def compare_training_speed(cfg: TrainConfig, steps: int = 20, progress: bool = True) -> dict:
    """Milliseconds per training step of the default model with the fused xcops ops and with
    the plain-PyTorch reference ops (gather + multiply, dense weight gradient), on the same
    batches from the same initial weights."""
    device = resolve_device(cfg.device)
    train_set, _ = load_splits(cfg, resolve_data(cfg))
    batches = list(
        zip(range(steps + 2), torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                                          collate_fn=XCTextDataset.collate,
                                                          generator=torch.Generator().manual_seed(cfg.seed)))
    )
    result = {}
    for fused in (True, False):
        variant = dataclasses.replace(cfg, fused=fused)
        _set_seeds(cfg.seed)
        model = build_model(variant, len(train_set.tokenizer), train_set.num_labels).to(device)
        optimizers = make_optimizers(model, cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        elapsed = 0.0
        name = "fused" if fused else "reference"
        for step, (ids, indptr, indices) in tqdm(batches, desc=f"speed ({name})", disable=not progress):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            train_step(model, optimizers, ids, indptr, indices, variant, generator, device).item()
            if step >= 2:  # the first steps warm up allocators and caches
                elapsed += time.perf_counter() - start
        result[f"{name}_ms_per_step"] = 1e3 * elapsed / max(1, len(batches) - 2)
    result["speedup"] = result["reference_ms_per_step"] / result["fused_ms_per_step"]
    return result
