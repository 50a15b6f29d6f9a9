"""Progress bars: in-place on a terminal, plain timed lines in logs and pipes."""

import io
import json
import subprocess
import sys

from xcops import progress
from xcops.progress import progress_bar


class FakeStderr(io.StringIO):
    def __init__(self, tty):
        super().__init__()
        self.tty = tty

    def isatty(self):
        if self.closed:
            raise ValueError("I/O operation on closed file")
        return self.tty


def redirect_stderr(monkeypatch, tty=False):
    """Replaces stderr inside the test body (pytest's capture re-installs its own between a
    fixture's set-up and the test call)."""
    stream = FakeStderr(tty)
    monkeypatch.setattr(sys, "stderr", stream)
    return stream


def test_log_bar_writes_lines_not_redraws(monkeypatch):
    log_stderr = redirect_stderr(monkeypatch)
    monkeypatch.setattr(progress, "LOG_INTERVAL", 3600.0)
    bar = progress_bar(range(500), desc="epoch 1/1", unit="batch")
    for step in bar:
        bar.set_postfix(loss=f"{1 / (step + 1):.4f}")  # every step, as the training loops do
    text = log_stderr.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    # One line when the bar starts and one when it ends: the postfix waits for a timed line.
    assert len(lines) == 2, lines
    assert lines[0].startswith("epoch 1/1:   0%") and "500/500" in lines[-1] and "loss=0.0020" in lines[-1]


def test_log_bar_prints_a_line_per_interval(monkeypatch):
    log_stderr = redirect_stderr(monkeypatch)
    clock = iter(range(0, 10_000, 2))  # every call to the bar's clock advances 2 s
    monkeypatch.setattr(progress, "LOG_INTERVAL", 5.0)
    bar = progress_bar(range(40), desc="predict")
    bar._time = lambda: next(clock)  # noqa: SLF001  (tqdm's clock, so the test takes no real time)
    bar.start_t = bar.last_print_t = bar._time()
    for _ in bar:
        pass
    lines = log_stderr.getvalue().splitlines()
    # 40 steps of 2 s with at most a line per 5 s: about 40 * 2 / 6 timed lines, never one per step.
    assert 5 <= len(lines) <= 20, lines
    assert all(line.startswith("predict:") for line in lines)


def test_terminal_bar_redraws_in_place(monkeypatch):
    stream = redirect_stderr(monkeypatch, tty=True)
    assert progress.stderr_is_interactive()
    for _ in progress_bar(range(3), desc="tty", file=stream, mininterval=0):
        pass
    assert "\r" in stream.getvalue()


def test_disabled_bar_writes_nothing(monkeypatch):
    log_stderr = redirect_stderr(monkeypatch)
    assert list(progress_bar(range(4), desc="quiet", disable=True)) == [0, 1, 2, 3]
    assert log_stderr.getvalue() == ""


def test_a_closed_stderr_is_not_a_terminal(monkeypatch):
    redirect_stderr(monkeypatch, tty=True).close()
    assert not progress.stderr_is_interactive()


def test_train_with_stderr_in_a_file_logs_plain_lines(tmp_path):
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(dict(synthetic=dict(num_train=200, num_test=40, num_labels=30), epochs=3,
                                      dim=16, batch_size=8, random_negatives=8)))
    log = tmp_path / "train.log"
    with open(log, "w") as stderr:
        result = subprocess.run([sys.executable, "-m", "xcops.cli", "train", "--config", str(config), "--out",
                                 str(tmp_path / "run"), "--device", "cpu"], stderr=stderr, stdout=subprocess.PIPE,
                                text=True, timeout=300)
    text = log.read_text()
    assert result.returncode == 0, text
    assert "\r" not in text
    epoch_lines = [line for line in text.splitlines() if line.startswith("epoch ")]
    # 25 steps per epoch, each with a postfix update: a start and an end line per epoch
    # (plus a timed one on a slow machine), not one per step.
    assert {f"epoch {e}/3" for e in (1, 2, 3)} == {line.split(":")[0] for line in epoch_lines}
    assert len(epoch_lines) <= 3 * 4, epoch_lines
