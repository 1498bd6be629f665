"""Which attempt at a Ray trial this is: a retry after a lost node resumes, and says so.

    retries = begin_attempt(uri, run_id, submission)  # 0 the first time; tags node, attempt

Ray runs a task again, with the same arguments, when its worker or node dies
(`ray_backend.MAX_RETRIES`). The task cannot ask Ray which attempt it is, so the run keeps
count: `cifarctl.attempt` = "<submission>:<n>" (`TrialTask.submission` is new for every
submission of the sweep, so a rerun of the sweep starts again at 1), and a retry sets
`cifarctl.retries` and resumes from the checkpoint the lost attempt uploaded.
"""

from __future__ import annotations

from cifarctl.names import ATTEMPT_TAG, RAY_NODE_TAG, RETRIES_TAG


def attempt_number(tag: str, submission: str) -> int:
    """The attempt a run's `cifarctl.attempt` tag records for `submission` (0: none yet)."""
    seen, _, n = tag.partition(":")
    return int(n) if seen == submission and n.isdigit() else 0


def ray_node() -> str | None:
    """The id of the Ray node this process runs on (None outside Ray)."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else None
    except Exception:  # noqa: BLE001 - where it runs is a courtesy, not a need
        return None


def begin_attempt(tracking_uri: str, run_id: str, submission: str) -> int:
    """Record this attempt at a submission on the trial's run; how many came before it."""
    from cifarctl.tracking.runstore import RunStore

    store = RunStore(tracking_uri)
    before = attempt_number(store.get_run(run_id).tags.get(ATTEMPT_TAG, ""), submission)
    tags = {ATTEMPT_TAG: f"{submission}:{before + 1}"}
    node = ray_node()
    if node:
        tags[RAY_NODE_TAG] = node
    if before:
        tags[RETRIES_TAG] = str(before)
    store.set_tags(run_id, tags)
    return before
