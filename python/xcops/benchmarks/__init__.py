"""Kernel benchmarks: xcops ops against what a user would otherwise write, same run, same
inputs. ``xcops bench`` and the scripts in ``bench/`` run them."""
