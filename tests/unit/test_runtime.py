"""The services' process tuning: garbage collector and scheduling priority."""

import gc
import os
import subprocess
import sys

from meterflow.runtime import YOUNG_GENERATION_THRESHOLD, tune_garbage_collector


def test_start_up_objects_are_frozen_and_young_collections_are_rarer() -> None:
    before = gc.get_threshold()
    try:
        tune_garbage_collector()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_lowering_priority_adds_to_the_niceness_of_that_process_only() -> None:
    probe = (
        "import os; from meterflow.runtime import lower_priority; "
        "before = os.nice(0); print(lower_priority(3) - before)"
    )
    ours = os.nice(0)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "3"
    assert os.nice(0) == ours
