"""Training, evaluation and run directories for every model of ``xcops train``.

A run directory holds ``config.json``, ``metrics.json``, the checkpoint (``model.safetensors``
+ ``model.json``) and the tokenizer (``vocab.json`` for xcops' SimpleTokenizer, or a
``tokenizer/`` folder for a ``transformers`` one).
"""

from __future__ import annotations

import dataclasses
import inspect
import itertools
import json
import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from .checkpoint import METADATA, WEIGHTS, load_checkpoint, save_checkpoint
from .data import SimpleTokenizer, XCTextDataset, generate
from .data.stopwords import STOPWORDS
from .data.synthetic import make_synthetic
from .distributed.launch import launched_world_size
from .metrics import evaluate, inv_propensity
from .models import MODELS, get_model
from .models.ngame import UNUSED_TRAIN_FIELDS as NGAME_UNUSED_FIELDS, NGAMEOptions
from .models.syncxml import SyncXMLOptions
from .progress import progress_bar
from .training_state import discard_state, require_saved_state, state_directory


class ConfigError(ValueError):
    """A config key, flag or option with a bad type or value: a usage error, found before
    any work is done."""


# Model name -> parser of its model_args (raising ValueError on unknown or bad keys); the
# default model takes none.
_MODEL_OPTIONS = {"syncxml": SyncXMLOptions.parse, "ngame": NGAMEOptions.parse}
# Model name -> {config field it does not use: what to set instead}. Such a field set to
# anything but its default is an error rather than silently ignored.
_UNUSED_FIELDS = {"ngame": NGAME_UNUSED_FIELDS}


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
    stopwords: Optional[str] = None  # "english": drop English function words (SimpleTokenizer only)
    fused: bool = True  # False: the plain-PyTorch reference ops (for speed comparisons)
    resume: bool = False  # continue from the training state saved after each epoch in `out`
    device: str = "auto"
    seed: int = 0
    eval_batch_size: int = 1024
    top_k: int = 5
    propensity_a: float = 0.55
    propensity_b: float = 1.5
    synthetic: dict = field(default_factory=lambda: dict(num_train=20_000, num_test=2_000, num_labels=2_000))

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        """A validated config (see :meth:`validate`); bad keys or values raise ConfigError."""
        if not isinstance(values, dict):
            raise ConfigError(f"a config is a mapping of keys to values, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config keys {unknown}; known keys: {sorted(known)}")
        cfg = cls(**values)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """Raises ConfigError naming the first key with a wrong type or value, and checks
        everything a run needs up front (model options, device, ``out``), so nothing fails
        after training and nothing is written before the config is known to be good."""
        for key, (kind, low) in _FIELD_RULES.items():
            _check_field(key, getattr(self, key), kind, low)
        if self.model not in MODELS:
            raise ConfigError(f"model: unknown model {self.model!r}; available: {sorted(MODELS)}")
        if self.model in _MODEL_OPTIONS:
            try:
                _MODEL_OPTIONS[self.model](self.model_args)
            except ValueError as err:
                raise ConfigError(f"model_args: {err}") from None
        elif self.model_args:
            raise ConfigError(f"model_args: the {self.model} model takes no model_args, got "
                              f"{sorted(self.model_args)}")
        for key, instead in _UNUSED_FIELDS.get(self.model, {}).items():
            if getattr(self, key) != _DEFAULTS[key]:
                raise ConfigError(f"{key}: the {self.model} model does not use it (got {getattr(self, key)!r}); "
                                  f"{instead}")
        allowed = set(inspect.signature(make_synthetic).parameters) - {"seed"}
        for key, value in self.synthetic.items():
            if key not in allowed:
                raise ConfigError(f"synthetic: unknown key {key!r}; known: {sorted(allowed)}")
        if self.stopwords is not None and self.stopwords not in STOPWORDS:
            raise ConfigError(f"stopwords: unknown list {self.stopwords!r}; known: {sorted(STOPWORDS)} or null")
        resolve_device(self.device)
        out = Path(self.out)
        if out.exists() and not out.is_dir():
            raise ConfigError(f"out: {out} exists and is not a directory")
        if self.resume:
            if not get_model(self.model).resumable:
                raise ConfigError(f"resume: {self.model} runs save no per-epoch training state to resume from; "
                                  "start the run afresh")
            try:
                require_saved_state(state_directory(out))
            except ValueError as err:
                raise ConfigError(str(err)) from None


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig) if f.default is not dataclasses.MISSING}

# field -> (type, smallest allowed value or None); bool is never taken for a number.
_FIELD_RULES = {
    "data": (str, None), "out": (str, None), "model": (str, None), "model_args": (dict, None),
    "dim": (int, 1), "epochs": (int, 1), "batch_size": (int, 1), "lr": (float, 0.0),
    "random_negatives": (int, 0), "max_len": (int, 1), "min_count": (int, 1),
    "max_vocab": ("optional int", 2), "stopwords": ("optional str", None), "fused": (bool, None),
    "resume": (bool, None), "device": (str, None),
    "seed": (int, 0), "eval_batch_size": (int, 1), "top_k": (int, 1),
    "propensity_a": (float, None), "propensity_b": (float, None), "synthetic": (dict, None),
}


def _check_field(key: str, value, kind, low) -> None:
    if kind in ("optional int", "optional str"):
        if value is None:
            return
        kind = int if kind == "optional int" else str
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        expected = "a finite number"
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        expected = "an integer"
    else:
        ok = isinstance(value, kind)
        expected = {str: "a string", dict: "a mapping", bool: "true or false"}[kind]
    if not ok:
        raise ConfigError(f"{key} must be {expected}, got {value!r}")
    if low is not None:
        if kind is float and low == 0.0 and value <= 0:
            raise ConfigError(f"{key} must be > 0, got {value!r}")
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value!r}")
    if key == "seed" and value >= 2**32:
        raise ConfigError(f"seed must be < 2^32, got {value!r}")


def resolve_device(name: str) -> torch.device:
    """``auto``, ``cpu``, ``cuda`` or ``cuda:N`` as a device that exists here (ConfigError
    otherwise)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device: {name!r} is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(f"device: {name!r} asked for, but no CUDA GPU is available")
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device: {name!r} asked for, but only {count} CUDA GPU(s) exist")
    elif device.type != "cpu":
        raise ConfigError(f"device: {name!r} is not supported (use auto, cpu, cuda or cuda:N)")
    return device


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
                              min_count=cfg.min_count, max_vocab=cfg.max_vocab, stopwords=cfg.stopwords)
    test_set = XCTextDataset(data_dir, "tst", tokenizer=train_set.tokenizer, max_len=cfg.max_len)
    return train_set, test_set


def train(cfg: TrainConfig, progress: bool = True) -> dict:
    """Trains ``cfg.model``, evaluates it on the test split, saves the run; returns the metrics."""
    cfg.validate()
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
    stats = model.fit(cfg, train_set, device, progress, **state_dir_argument(model_cls, cfg))
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
    discard_state(cfg.out)
    return metrics


def state_dir_argument(model_cls, cfg: TrainConfig) -> dict:
    """The ``state_dir`` keyword of ``model_cls.fit`` in run ``cfg.out`` (none for a model that
    saves no training state)."""
    return dict(state_dir=state_directory(cfg.out)) if model_cls.resumable else {}


def save_run(cfg: TrainConfig, model, tokenizer, metrics: dict, data_dir: Path) -> None:
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    # A reused run directory must not keep the tokenizer of an earlier run.
    if isinstance(tokenizer, SimpleTokenizer):
        kind = VOCAB
        shutil.rmtree(out / HF_TOKENIZER, ignore_errors=True)
        (out / VOCAB).write_text(tokenizer.to_json())
    else:
        kind = HF_TOKENIZER
        (out / VOCAB).unlink(missing_ok=True)
        shutil.rmtree(out / HF_TOKENIZER, ignore_errors=True)
        tokenizer.save_pretrained(str(out / HF_TOKENIZER))
    save_checkpoint(out, model, dict(model=model.name, model_config=model.metadata(), data=str(data_dir),
                                     max_len=cfg.max_len, tokenizer=kind))


VOCAB, HF_TOKENIZER = "vocab.json", "tokenizer"


def load_run(run_dir, device="cpu"):
    """``(model, tokenizer, metadata)`` of a saved run, ready for prediction. A damaged or
    inconsistent run directory raises ValueError naming the file."""
    target = resolve_device(device)
    run = Path(run_dir)
    state, meta = load_checkpoint(run)
    where = run / METADATA
    if meta["model"] not in MODELS:
        raise ValueError(f"{where}: unknown model {meta['model']!r}; available: {sorted(MODELS)}")
    try:
        model = get_model(meta["model"]).from_metadata(meta["model_config"])
    except Exception as err:  # any constructor failure means model.json is not what we wrote
        raise ValueError(f"{where}: model_config does not fit the {meta['model']} model ({_first_line(err)})") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{run / WEIGHTS} does not match {where} ({_first_line(err)})") from None
    return model.to(target).eval(), _load_tokenizer(run, meta.get("tokenizer")), meta


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _load_tokenizer(run: Path, kind: Optional[str]):
    # Runs saved before model.json named their tokenizer: whichever of the two exists.
    if kind is None:
        kind = VOCAB if (run / VOCAB).exists() else HF_TOKENIZER
    if kind not in (VOCAB, HF_TOKENIZER):
        raise ValueError(f"{run / METADATA}: unknown tokenizer {kind!r} (expected {VOCAB} or {HF_TOKENIZER})")
    path = run / kind
    if not path.exists():
        raise ValueError(f"{run} has no tokenizer: {kind} is missing")
    if kind == VOCAB:
        try:
            return SimpleTokenizer.from_json(path.read_text(encoding="utf-8"))
        except (ValueError, TypeError, KeyError, AttributeError) as err:
            raise ValueError(f"{path}: not a vocabulary written by xcops ({_first_line(err)})") from None
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except Exception as err:  # transformers raises many kinds for a broken folder
        raise ValueError(f"{path}: not a loadable tokenizer folder ({_first_line(err)})") from None


def compare_training_speed(cfg: TrainConfig, steps: int = 20, progress: bool = True) -> dict:
    """Milliseconds per training step of the default (bow) model with the fused xcops ops and
    with the plain-PyTorch reference ops (gather + multiply, dense weight gradient), on the
    same batches from the same initial weights."""
    device = resolve_device(cfg.device)
    train_set, _ = load_splits(cfg, resolve_data(cfg))
    loader = torch.utils.data.DataLoader(train_set, batch_size=cfg.batch_size, shuffle=True,
                                         collate_fn=XCTextDataset.collate,
                                         generator=torch.Generator().manual_seed(cfg.seed))
    # A training set of fewer batches than steps + 2 is reused, so every variant times `steps`.
    batches = list(itertools.islice(itertools.cycle(loader), steps + 2))
    result = {}
    for fused in (True, False):
        set_seeds(cfg.seed)
        model = get_model("bow").create(dataclasses.replace(cfg, fused=fused), train_set).to(device)
        optimizers = model.make_optimizers(cfg.lr)
        generator = torch.Generator().manual_seed(cfg.seed)
        name = "fused" if fused else "reference"
        elapsed = 0.0
        for step, batch in enumerate(progress_bar(batches, desc=f"speed ({name})", disable=not progress)):
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            model.train_step(optimizers, batch, cfg.random_negatives, generator, device).item()
            if step >= 2:  # the first steps warm up allocators and caches
                elapsed += time.perf_counter() - start
        result[f"{name}_ms_per_step"] = 1e3 * elapsed / steps
    result["speedup"] = result["reference_ms_per_step"] / result["fused_ms_per_step"]
    return result
