"""The configuration of one distributed signSGD run (``raysign signsgd``, the scripts and Tune).

Every field is validated on construction, so a bad value fails before Ray starts, with a
message naming the field and the allowed values.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from raysign.config import ConfigError, check_choice, check_path_exists, check_range
from raysign.data import LOADERS, default_data_dir
from raysign.signsgd.aggregators import AGGREGATORS as FP32_AGGREGATORS
from raysign.signsgd.aggregators import (
    BYZFL_PREFIX,
    SLICEWISE,
    check_aggregator,
    make_aggregator,
)
from raysign.signsgd.attacks import ALL_ATTACKS, check_attack
from raysign.signsgd.models import MODELS
from raysign.signsgd.user_callables import import_path_of, is_import_path
from raysign.storage import check_location, is_uri

# "vote": majority vote of packed signs; the rest aggregate fp32 messages
# (raysign.signsgd.aggregators).
AGGREGATORS = ("vote", *FP32_AGGREGATORS)
# How messages travel: "objects" - each worker returns its S messages as Ray objects and the
# driver hands the references to the vote actors; "direct" - each worker sends message s
# straight to vote actor s and gets the vote back as the call's return value
# (``raysign.actors.vote.DirectVoteActor``).
TRANSPORTS = ("objects", "direct")
# Autocast of the forward pass and loss (``torch.autocast``); parameters, gradients, momentum
# and the update stay fp32. fp16 scales the loss by ``raysign.signsgd.workload.FP16_LOSS_SCALE``.
PRECISIONS = ("fp32", "bf16", "fp16")
# Learning-rate schedules of the command line (``raysign.signsgd.workload.scheduled_lr``); a
# library user may pass any torch scheduler as ``Workload.lr_scheduler_fn`` instead.
LR_SCHEDULES = ("constant", "cosine", "step")


@dataclass(frozen=True)
class SignSGDConfig:
    """One distributed signSGD run. Every field is validated on construction."""

    dataset: str = "fashion-mnist"
    data_dir: str = ""
    model: str = "cnn"
    num_workers: int = 7
    # "vote", a name of FP32_AGGREGATORS, a ByzFL chain "byzfl:NNM+TrMean" or a user's
    # "package.module:name" (a function given here is stored as its import path).
    aggregator: str = "vote"
    vote_shards: int = 1
    transport: str = "direct"
    # Overlap the vote with the backward pass (direct transport): message s leaves as soon as
    # its slice of the gradient is final (``raysign.actors.worker.SignWorker.exchange``).
    # Where that cannot keep the sequential round's semantics the worker falls back to it and
    # says so (``raysign.actors.worker.overlap_fallback``).
    overlap: bool = False
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    lr_warmup_steps: int = 0
    lr_decay_steps: int = 0
    lr_min: float = 0.0
    lr_step_size: int = 0
    lr_gamma: float = 0.1
    batch_size: int = 32
    accumulation_steps: int = 1
    precision: str = "fp32"
    clip_grad_norm: float = 0.0
    epochs: float = 2.0
    max_steps: int = 0
    num_byzantine: int = 0
    # A name of ALL_ATTACKS or a user's "package.module:name" (a function: its import path).
    attack: str = "negate"
    attack_scale: float = 10.0
    clip_tau: float = 10.0
    seed: int = 0
    eval_every: int = 0
    checksum_every: int = 25
    checkpoint_every: int = 0
    train_subset: int = 0
    test_subset: int = 0
    results_dir: str = "runs"
    name: str = "signsgd"

    def __post_init__(self) -> None:
        check_choice("dataset", self.dataset, LOADERS)
        if not self.data_dir:
            object.__setattr__(self, "data_dir", str(default_data_dir()))
        check_location("data_dir", self.data_dir, "s3://bucket/data or file:///shared/data")
        if not is_uri(self.data_dir):  # a URI is checked where it is read (the driver)
            check_path_exists("data_dir", self.data_dir, "the folder with mnist/ and "
                              "fashion-mnist/, see shared/data/README.md")
        check_choice("model", self.model, MODELS)
        check_range("num_workers", self.num_workers, 1, 1024)
        self._store_callable("aggregator")
        if not self._is_plugin(self.aggregator):
            check_choice("aggregator", self.aggregator, AGGREGATORS)
        check_range("vote_shards", self.vote_shards, 1, 1024)
        check_choice("transport", self.transport, TRANSPORTS)
        if not isinstance(self.overlap, bool):
            raise ConfigError(f"overlap={self.overlap!r} must be True or False")
        check_range("lr", self.lr, 0, None, low_open=True)
        check_range("momentum", self.momentum, 0, 1, high_open=True)
        check_range("weight_decay", self.weight_decay, 0, None)
        check_range("batch_size", self.batch_size, 1, None)
        check_range("accumulation_steps", self.accumulation_steps, 1, None)
        check_choice("precision", self.precision, PRECISIONS)
        check_range("clip_grad_norm", self.clip_grad_norm, 0, None)
        self._check_lr_schedule()
        check_range("epochs", self.epochs, 0, None, low_open=True)
        check_range("max_steps", self.max_steps, 0, None)
        # Majority vote tolerates any fraction of adversaries below one half.
        check_range("num_byzantine", self.num_byzantine, 0, self.num_workers / 2, high_open=True)
        self._store_callable("attack")
        if is_import_path(self.attack):
            try:
                check_attack(self.attack, self.num_workers, self.num_byzantine)
            except ValueError as err:
                raise ConfigError(str(err)) from None
        else:
            check_choice("attack", self.attack, ALL_ATTACKS)
        check_range("attack_scale", self.attack_scale, 0, None, low_open=True)
        check_range("clip_tau", self.clip_tau, 0, None, low_open=True)
        if self.aggregator not in ("vote", *SLICEWISE) and self.vote_shards != 1:
            raise ConfigError(f"vote_shards={self.vote_shards} but aggregator="
                              f"{self.aggregator!r} needs the whole vector: use vote_shards=1 "
                              f"(slice-wise aggregators: {['vote', *SLICEWISE]})")
        if self._is_plugin(self.aggregator):
            try:
                check_aggregator(self.make_aggregator(), self.aggregator, self.num_workers)
            except (ValueError, ImportError) as err:
                raise ConfigError(str(err)) from None
        elif self.aggregator != "vote":
            try:
                self.make_aggregator()
            except ValueError as err:
                raise ConfigError(f"num_byzantine={self.num_byzantine} with aggregator="
                                  f"{self.aggregator!r}: {err}") from None
        check_range("eval_every", self.eval_every, 0, None)
        check_range("checksum_every", self.checksum_every, 1, None)
        check_range("checkpoint_every", self.checkpoint_every, 0, None)
        check_range("train_subset", self.train_subset, 0, None)
        check_range("test_subset", self.test_subset, 0, None)
        check_location("results_dir", self.results_dir)

    @staticmethod
    def _is_plugin(aggregator: str) -> bool:
        """A ByzFL chain or a user's import path rather than a built-in name."""
        return aggregator.startswith(BYZFL_PREFIX) or is_import_path(aggregator)

    def _store_callable(self, field: str) -> None:
        """A function given for ``field`` is kept as its import path (configs are serialised
        with ``to_dict`` and imported again in every Ray process)."""
        value = getattr(self, field)
        if callable(value):
            try:
                object.__setattr__(self, field, import_path_of(value, field))
            except ValueError as err:
                raise ConfigError(str(err)) from None
        elif not isinstance(value, str):
            raise ConfigError(f"{field}={value!r} must be a name, an import path "
                              "'package.module:name' or a function")

    def _check_lr_schedule(self) -> None:
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_range("lr_warmup_steps", self.lr_warmup_steps, 0, None)
        check_range("lr_decay_steps", self.lr_decay_steps, 0, None)
        check_range("lr_min", self.lr_min, 0, self.lr)
        check_range("lr_step_size", self.lr_step_size, 0, None)
        check_range("lr_gamma", self.lr_gamma, 0, 1, low_open=True)
        if self.lr_schedule == "cosine" and not (self.lr_decay_steps or self.max_steps):
            raise ConfigError("lr_schedule='cosine' decays over lr_decay_steps, else max_steps, "
                              "but both are 0: set --lr-decay-steps or --max-steps")
        if self.lr_schedule == "step" and not self.lr_step_size:
            raise ConfigError("lr_schedule='step' multiplies lr by lr_gamma every lr_step_size "
                              "steps, but lr_step_size=0: set --lr-step-size to 1 or more")

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def make_aggregator(self):
        """The fp32 aggregator of this run (``raysign.signsgd.aggregators``), told
        ``num_byzantine``."""
        options: dict = {}
        if self.aggregator == "centered_clipping":
            options = {"tau": self.clip_tau}
        elif self.aggregator.startswith(BYZFL_PREFIX):
            options = {"seed": self.seed}
        return make_aggregator(self.aggregator, self.num_byzantine, **options)

    def byzantine_ranks(self) -> list[int]:
        """The last ``num_byzantine`` ranks are the adversaries."""
        return list(range(self.num_workers - self.num_byzantine, self.num_workers))
