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
- optionally ``SCHEDULERS``: ``{name: f}`` for ``raysign sweep <sweep> --scheduler <name>``,
  ``f(quick) -> (TrialScheduler, param_space)`` (a scheduler such as PBT comes with the search
  space it needs); such a run sets no concurrency limit, so the scheduler sees every trial.
- optionally ``PATH_FIELDS`` (default ``("data_dir",)``): the fields whose ``raysign sweep
  --set FIELD=PATH`` value is made absolute (a trial runs in its own folder), and
  ``check_fixed(fixed: dict) -> None``: checks the ``--set`` entries (e.g. reads the user's
  file) on the driver before Ray starts, raising ``ValueError`` with one line.
- optionally ``MAX_FAILURES`` (default 0): how often Tune restarts a failed trial, from the
  last checkpoint it reported (``ray.tune.report(metrics, checkpoint=...)``); a trainable that
  reports checkpoints resumes from ``ray.tune.get_checkpoint()``.
"""


def one_device_per_trial(cpus: float, gpus: float) -> dict[str, float]:
    """``trial_resources`` of a sweep whose trial runs in one process: one CPU, and one GPU
    when the cluster has a GPU for every trial that fits its CPUs (so as many trials run at
    once as there are CPUs: ``raysign sweep``'s default concurrency)."""
    return {"cpu": 1, "gpu": 1 if gpus >= cpus else 0}
