"""Per-epoch training state, so that a run that dies (a crash, a killed job, a lost machine)
continues from its last finished epoch with ``xcops train ... --resume`` instead of starting
over.

After every epoch each process writes ``<out>/resume/state-rank<R>-epoch<E>.pt``: the model's
state dict, the optimizers' and schedulers' states, the batching generator and the global RNG
states. ``<out>/resume/state.json`` holds the config it belongs to and the epochs done, so
that ``--resume`` under another config is refused before any training. The files are written
whole before they are named (write, then rename), hold only tensors and plain values (loaded
with ``weights_only=True``: no pickled code runs), and are deleted once the run is saved.

A resumed run continues exactly as the uninterrupted one would have on the same machine and
thread count: the weights after the last epoch are the same bits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path
from typing import Optional

import torch
import torch.distributed as dist

STATE_DIR = "resume"
SUMMARY = "state.json"
# Config fields that may change between a run and its resumption: they do not shape training.
_FREE_FIELDS = ("resume",)


def training_fingerprint(cfg) -> dict:
    """The config fields a resumed run must share with the run that saved the state."""
    values = dataclasses.asdict(cfg)
    for name in _FREE_FIELDS:
        values.pop(name, None)
    return json.loads(json.dumps(values))  # as state.json reads back (tuples become lists)


def state_directory(out) -> Path:
    """Where run directory ``out`` keeps its training state."""
    return Path(out) / STATE_DIR


def saved_summary(directory) -> Optional[dict]:
    """``state.json`` of state directory ``directory``, or None when it holds no state."""
    path = Path(directory) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(summary, dict) or not {"config", "epochs_done", "world_size"} <= set(summary):
        raise ValueError(f"{path}: not a training state written by xcops")
    return summary


def require_saved_state(directory) -> dict:
    """``state.json`` of state directory ``directory``; ValueError when there is none."""
    summary = saved_summary(directory)
    if summary is None:
        raise ValueError(f"resume: {directory} holds no saved training state (a run saves one after each "
                         "epoch); run without --resume to start afresh")
    return summary


def check_resumable(cfg, directory) -> dict:
    """``state.json`` of ``directory``; ValueError unless it was saved under config ``cfg``
    (the config the model trains under: in a ``--nproc`` run, with the per-process batch
    size)."""
    summary = require_saved_state(directory)
    saved, wanted = summary["config"], training_fingerprint(cfg)
    changed = sorted(key for key in set(saved) | set(wanted) if saved.get(key) != wanted.get(key))
    if changed:
        details = ", ".join(f"{key}: saved {saved.get(key)!r}, now {wanted.get(key)!r}" for key in changed)
        raise ValueError(f"resume: the state in {directory} was saved by another config ({details})")
    return summary


def discard_state(out) -> None:
    """Deletes the training state of run directory ``out`` (once the finished run is saved)."""
    shutil.rmtree(state_directory(out), ignore_errors=True)


class _GeneratorState:
    """A ``torch.Generator`` seen through ``state_dict``/``load_state_dict``."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


class EpochCheckpoints:
    """Saves and restores the training state of one model's epoch loop::

        checkpoints = EpochCheckpoints(cfg, state_dir, model=model, optimizer=opt, batches=loader_generator)
        for epoch in range(checkpoints.restore(), cfg.epochs):
            ...  # one epoch
            checkpoints.save(epoch + 1)

    Keyword arguments name the things to save: modules, optimizers, schedulers (anything with
    ``state_dict``/``load_state_dict``), lists of them, or ``torch.Generator``\\ s. The global
    torch RNG (dropout) is saved too. :meth:`restore` returns the epochs already done: 0 unless
    ``cfg.resume``. With ``directory`` None (a model's ``fit`` called outside ``xcops.train``)
    nothing is saved.

    Each epoch's files are new ones (``state-rank<R>-epoch<E>.pt``); ``state.json`` moves on to
    them once every rank has written its own, and only then are the previous epoch's deleted.
    So a process killed at any moment leaves ``state.json`` naming a complete set.
    """

    def __init__(self, cfg, directory: Optional[Path], **objects):
        self.cfg = cfg
        self.directory = None if directory is None else Path(directory)
        self.objects = {}
        for name, value in objects.items():
            items = value if isinstance(value, (list, tuple)) else [value]
            for index, item in enumerate(items):
                key = f"{name}.{index}" if isinstance(value, (list, tuple)) else name
                self.objects[key] = _GeneratorState(item) if isinstance(item, torch.Generator) else item
        self.rank, self.world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)

    def path(self, epochs_done: int) -> Path:
        return self.directory / f"state-rank{self.rank}-epoch{epochs_done}.pt"

    def save(self, epochs_done: int) -> None:
        if self.directory is None:
            return
        state = {name: item.state_dict() for name, item in self.objects.items()}
        state["torch_rng"] = torch.get_rng_state()
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda_rng"] = torch.cuda.get_rng_state_all()
        state["epochs_done"] = epochs_done
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.path(epochs_done).with_suffix(".partial")
        torch.save(state, partial)
        os.replace(partial, self.path(epochs_done))
        self._barrier()
        if self.rank == 0:
            summary = dict(config=training_fingerprint(self.cfg), epochs_done=epochs_done, world_size=self.world)
            partial = self.directory / (SUMMARY + ".partial")
            partial.write_text(json.dumps(summary, indent=1))
            os.replace(partial, self.directory / SUMMARY)
        self._barrier()
        for old in self.directory.glob(f"state-rank{self.rank}-epoch*.pt"):
            if old != self.path(epochs_done):
                old.unlink(missing_ok=True)

    def _barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def restore(self) -> int:
        """Loads the saved state into the objects when ``cfg.resume``; returns the epochs done."""
        if not self.cfg.resume:
            return 0
        if self.directory is None:
            raise ValueError("resume: this training loop was given no state directory to resume from")
        summary = check_resumable(self.cfg, self.directory)
        if summary["world_size"] != self.world:
            raise ValueError(f"resume: the state in {self.directory} was saved by {summary['world_size']} "
                             f"process(es), this run has {self.world}")
        path = self.path(summary["epochs_done"])
        if not path.is_file():
            raise ValueError(f"resume: {path} is missing")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # torch raises several kinds for a truncated or foreign file
            reason = (str(err).strip() or type(err).__name__).splitlines()[0]
            raise ValueError(f"{path}: truncated or damaged ({reason})") from None
        if state.get("epochs_done") != summary["epochs_done"]:
            raise ValueError(f"resume: {path} holds epoch {state.get('epochs_done')}, "
                             f"{self.directory / SUMMARY} epoch {summary['epochs_done']}")
        missing = sorted(set(self.objects) - set(state))
        if missing:
            raise ValueError(f"resume: {path} lacks the state of {missing}")
        for name, item in self.objects.items():
            item.load_state_dict(state[name])
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        return state["epochs_done"]
