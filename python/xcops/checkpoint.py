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


def load_checkpoint(run_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(state_dict, metadata)`` of a run directory written by :func:`save_checkpoint`."""
    run = Path(run_dir)
    for name in (WEIGHTS, METADATA):
        if not (run / name).exists():
            raise FileNotFoundError(f"{run} is not an xcops run directory: {name} is missing")
    return load_file(str(run / WEIGHTS)), json.loads((run / METADATA).read_text())
