"""`cifarctl eval`: evaluation of trained checkpoints (issue 6).

    from cifarctl.evaluation.run import resolve_target, evaluate_target, log_result

Modules: `scores` (shot groups, ECE: pure, torch-free, shared with `report`), `corruptions`
(batched image corruptions, torch), `target` (the checkpoint and its run), `run` (checkpoint ->
results -> the run's eval_* metrics).
This package module stays torch-free: the CLI builds its help from `CORRUPTION_NAMES`.
"""

# The corruptions of SPEC 1.4 in display order; `corruptions.CORRUPTIONS` defines each one.
CORRUPTION_NAMES = ("gaussian_noise", "blur", "contrast", "low_pass", "high_pass",
                    "phase_noise", "jpeg")
SEVERITIES = 5  # each corruption at levels 1..5 (`eval_corruption_<name>_s<k>`)
