"""Hypothesis budgets shared by the property and fuzz tests.

CI runs a few hundred examples per test (the whole hypothesis part stays well under a
minute on 2 cores); ``bash tasks.sh fuzz`` raises ``XCOPS_FUZZ_EXAMPLES`` for a long run.
No example database is written: a failure prints its minimal example and seed instead.
"""

import os

from hypothesis import HealthCheck, settings

_common = dict(deadline=None, database=None, derandomize=False, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FUZZ = settings(max_examples=int(os.environ.get("XCOPS_FUZZ_EXAMPLES", "400")), **_common)
PROPERTY = settings(max_examples=int(os.environ.get("XCOPS_PROPERTY_EXAMPLES", "60")), **_common)
