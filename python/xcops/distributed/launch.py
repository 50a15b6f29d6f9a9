"""Starting N copies of an ``xcops`` command under ``torch.distributed.run`` (torchrun)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import List


def launched_world_size() -> int:
    """The ``WORLD_SIZE`` torchrun set for this process (1 when not launched by it)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def without_flag(argv: List[str], flag: str) -> List[str]:
    """``argv`` without ``flag VALUE`` / ``flag=VALUE``."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == flag:
            skip = True
        elif not arg.startswith(flag + "="):
            out.append(arg)
    return out


# The models whose classifier head xcops.train_distributed knows how to shard.
SHARDABLE_MODELS = ("bow", "syncxml")


def relaunch(nproc: int, argv: List[str], model: str) -> int:
    """Runs ``xcops ARGV`` (``--nproc`` removed) in ``nproc`` local processes under torchrun
    with a free rendezvous port; only rank 0's output is shown. Returns the exit status."""
    if nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {nproc}")
    if model not in SHARDABLE_MODELS:
        raise ValueError(f"--nproc trains the models {list(SHARDABLE_MODELS)}, not {model!r}")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "--local-ranks-filter=0", "-m", "xcops.cli", *without_flag(argv, "--nproc")]
    return subprocess.call(command)
