"""Shortlist ops vs PyTorch eager; see xcops/benchmarks/shortlist.py (same as `xcops bench shortlist`)."""

from xcops.benchmarks.shortlist import main

if __name__ == "__main__":
    main()
