"""The retrain loop: each cycle trains and evaluates through vlmsweep.pipeline.stages, then mines failures,
synthesises targeted data and oversamples it into the next cycle's training set; its state makes it resumable.

One job per module: cycle (the policy, run_loop), mining (mining, synthesis, oversampling), state (loop_state.json,
the fixed splits, resume), noise (the seed-noise band), guard (the regression guard), report (report.md and its plot).
Which tag is fixed by data and which by a config change: vlmsweep.evaluate.remedies.
"""

from vlmsweep.loop.cycle import run_loop

__all__ = ["run_loop"]
