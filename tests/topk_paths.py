"""Shared by the top-k tests: both top-k paths of the CPU build, and a peak-memory probe."""

import contextlib

import pytest


@pytest.fixture(params=["specialised", "generic"], autouse=True)
def topk_path(request, monkeypatch):
    """Every test runs the CPU's own top-k and the device-generic one the GPU uses."""
    if request.param == "generic":
        monkeypatch.setenv("XCOPS_GENERIC_TOPK", "1")
    else:
        monkeypatch.delenv("XCOPS_GENERIC_TOPK", raising=False)


def _peak_rss_kib():
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))


@contextlib.contextmanager
def peak_rss_growth():
    """Yields a dict whose "mib" is, on exit, how far the peak resident memory rose inside."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # resets VmHWM to the current resident size (Linux >= 4.0)
    except OSError:
        pytest.skip("needs Linux /proc/self/clear_refs to measure peak memory")
    before = _peak_rss_kib()
    result = {}
    yield result
    result["mib"] = (_peak_rss_kib() - before) / 1024

