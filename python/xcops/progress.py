"""Progress bars that read well both on a terminal and in a log file.

On a terminal a tqdm bar redraws itself in place with carriage returns, many times a second.
Under ``nohup``, in CI or with stderr sent to a file, every one of those redraws lands in the
log. So when stderr is not a terminal (and not a notebook), a bar becomes a plain line at
most every :data:`LOG_INTERVAL` seconds plus a last one when it finishes, without any ``\\r``.
Every bar of xcops is made here.
"""

from __future__ import annotations

import re
import sys
import time

from tqdm import autonotebook, std
from tqdm.auto import tqdm as interactive_tqdm

LOG_INTERVAL = 5.0  # seconds between two lines of one bar when stderr is not a terminal


class _LineStream:
    """The file tqdm writes to when stderr is not a terminal: each redraw (``"\\r" + status``
    padded with spaces) becomes one line of stderr; empty redraws (tqdm clearing a bar) vanish.
    stderr is looked up at each write, so redirections made after the bar started still apply."""

    encoding = "ascii"  # tqdm then draws its bar with '#' instead of block characters

    def write(self, text: str) -> None:
        for line in re.split(r"[\r\n]", text):
            line = line.rstrip()
            if line:
                sys.stderr.write(line + "\n")
        sys.stderr.flush()

    def flush(self) -> None:
        sys.stderr.flush()


class _LogBar(std.tqdm):
    """A bar whose postfix and description changes wait for the next timed line: tqdm redraws
    on every ``set_postfix`` call by default, which in a training loop is every step."""

    def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
        super().set_postfix(ordered_dict, refresh=False, **kwargs)

    def set_description(self, desc=None, refresh=True):
        super().set_description(desc, refresh=False)


def stderr_is_interactive() -> bool:
    """True on a terminal or in a notebook, where bars may redraw in place."""
    if autonotebook.tqdm is not std.tqdm:  # tqdm found a notebook front end
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def progress_bar(iterable=None, **kwargs) -> std.tqdm:
    """A ``tqdm`` bar over ``iterable`` (keyword arguments as for tqdm) that redraws in place on
    a terminal and writes a plain line every :data:`LOG_INTERVAL` seconds otherwise.

    Example:
        >>> from xcops.progress import progress_bar
        >>> total = 0
        >>> for i in progress_bar(range(3), desc="demo", disable=True):
        ...     total += i
        >>> total
        3
    """
    if kwargs.get("disable") or stderr_is_interactive():
        return interactive_tqdm(iterable, **kwargs)
    kwargs.setdefault("mininterval", LOG_INTERVAL)
    return _LogBar(iterable, file=_LineStream(), **kwargs)


class TrainingMeter:
    """The postfix of a training bar: the smoothed loss, the learning rate and examples per
    second since the meter started, as ``bar.set_postfix(meter.update(loss, rows, lr))``."""

    def __init__(self, smoothing: float = 0.05):
        self.smoothing = smoothing
        self.loss: float | None = None
        self.examples = 0
        self.start = time.perf_counter()

    def update(self, loss: float, rows: int, lr: float) -> dict:
        self.loss = loss if self.loss is None else (1 - self.smoothing) * self.loss + self.smoothing * loss
        self.examples += rows
        rate = self.examples / max(time.perf_counter() - self.start, 1e-9)
        return {"loss": f"{self.loss:.4f}", "lr": f"{lr:.2e}", "ex/s": f"{rate:.0f}"}

    def state_dict(self) -> dict:
        """The smoothed loss (examples per second restart with the process)."""
        return {"loss": self.loss}

    def load_state_dict(self, state: dict) -> None:
        self.loss = state["loss"]
