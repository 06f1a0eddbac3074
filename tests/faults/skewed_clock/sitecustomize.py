"""Loaded by any Python process whose PYTHONPATH starts here: its clock (time.time) runs
ASKQ_TEST_CLOCK_SKEW_S seconds off, as a host with a badly set clock would."""

import os
import time

_skew = float(os.environ.get("ASKQ_TEST_CLOCK_SKEW_S", "0"))
if _skew:
    _real_time = time.time

    def _skewed() -> float:
        return _real_time() + _skew

    time.time = _skewed
