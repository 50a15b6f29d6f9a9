"""Checkpoints as safetensors plus JSON metadata: loading never executes pickled code."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

WEIGHTS = "model.safetensors"
METADATA = "model.json"


def save_checkpoint(run_dir: str | os.PathLike, model: torch.nn.Module, metadata: dict[str, Any]) -> Path:
    """Writes ``model.safetensors`` (the state dict) and ``model.json`` (``metadata``)."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous().cpu() for name, t in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    (out / METADATA).write_text(json.dumps(metadata, indent=1, sort_keys=True))
    return out


# model.json keys every run has, and their types.
_REQUIRED = {"model": str, "model_config": dict, "data": str, "max_len": int}
_KIND_NAMES = {str: "a string", dict: "an object", int: "an integer"}


def load_checkpoint(run_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a run directory written by :func:`save_checkpoint`.

    A missing file raises FileNotFoundError; a truncated or damaged file, metadata with
    missing keys or wrong types, and weights holding NaN or Inf (a diverged model, which would
    rank its labels arbitrarily) raise ValueError naming the file.
    """
    run = Path(run_dir)
    if not run.is_dir():
        raise FileNotFoundError(f"{run} is not an xcops run directory (no such directory)")
    for name in (WEIGHTS, METADATA):
        if not (run / name).is_file():
            raise FileNotFoundError(f"{run} is not an xcops run directory: {name} is missing")
    meta = _load_metadata(run / METADATA)
    try:
        state = load_file(str(run / WEIGHTS))
    except Exception as err:  # safetensors raises its own error types for damaged files
        raise ValueError(f"{run / WEIGHTS}: truncated or damaged ({str(err).strip() or type(err).__name__})") from None
    for key, tensor in state.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{run / WEIGHTS}: tensor {key!r} holds NaN or Inf values (the model "
                             "diverged); its scores would rank labels arbitrarily")
    return state, meta


def _load_metadata(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: must hold a JSON object, got {type(meta).__name__}")
    for key, kind in _REQUIRED.items():
        if key not in meta:
            raise ValueError(f"{path}: missing key {key!r}")
        if not isinstance(meta[key], kind) or isinstance(meta[key], bool):
            raise ValueError(f"{path}: {key!r} must be {_KIND_NAMES[kind]}, got {meta[key]!r}")
    if meta["max_len"] < 1:
        raise ValueError(f"{path}: 'max_len' must be >= 1, got {meta['max_len']}")
    return meta
