"""One Ray Tune sweep per file. ``raysign sweep <name>`` runs ``tune_configs/<name>.py``.

A sweep module defines:

- ``DESCRIPTION``: one line.
- ``METRIC`` and ``MODE``: what the trials report and whether to maximise or minimise it.
- ``param_space(quick: bool) -> dict``: the search space (``quick`` gives a small one for
  tests and laptops).
- ``trainable(config: dict) -> None``: one trial; reports with ``ray.tune.report``.
- ``trial_resources(cpus: float, gpus: float) -> dict | PlacementGroupFactory``: what one trial
  reserves, given the resources of the cluster. A trial that starts actors must reserve them
  with a ``PlacementGroupFactory`` or Tune deadlocks on a small machine.
  It may also be a function of the trial's config returning either (Tune's
  ``with_resources`` accepts both), e.g. when the number of actors is swept.
- optionally ``NUM_SAMPLES`` (default 1), ``scheduler() -> TrialScheduler`` and
  ``max_concurrent_trials(cpus, gpus) -> int`` (default: as many trials as fit).
"""


def one_device_per_trial(cpus: float, gpus: float) -> dict[str, float]:
    """``trial_resources`` of a sweep whose trial runs in one process: one CPU, and one GPU
    when the cluster has a GPU for every trial that fits its CPUs (so as many trials run at
    once as there are CPUs: ``raysign sweep``'s default concurrency)."""
    return {"cpu": 1, "gpu": 1 if gpus >= cpus else 0}
