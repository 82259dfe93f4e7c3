"""Prompt trials: versions x a test set for any prompt the pipeline uses, stored and reopened (ARCHITECTURE.md,
"Prompt trials"). From a notebook:

    from workbench.analysis.trials import TestSet, run_trial, Trial, list_trials, promote
    ts = TestSet.random(ws, "qa", rows=5, seed=0, assertions=["non-empty"])
    trial = run_trial(ws, "qa", ["current", "prompts/qa_short.j2"], ts, budget_usd=0.50)
    trial.matrix(); trial.metrics(); trial.failed; trial.errors
    Trial.load(ws, trial.id); list_trials(ws); promote(ws, "qa", "prompts/qa_short.j2")
"""

from workbench.analysis.trials.promote import promote, uses_now
from workbench.analysis.trials.run import Trial, list_trials, run_trial
from workbench.analysis.trials.stages import candidates, current_prompt, stage_keys
from workbench.analysis.trials.testset import TestSet, list_test_sets
from workbench.analysis.trials.versions import Version, diff_versions

__all__ = ["TestSet", "Trial", "Version", "candidates", "current_prompt", "diff_versions", "list_test_sets",
           "list_trials", "promote", "run_trial", "stage_keys", "uses_now"]
