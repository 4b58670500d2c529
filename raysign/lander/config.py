"""The Neural Lander experiment's configuration (Shi et al., ICRA 2019, sec. VI): data, residual
network, training and evaluation settings, one frozen dataclass shared by ``raysign lander``,
the sweep (``tune_configs/lander.py``) and the benchmark (``scripts/bench_lander.py``).

Controllers: ``baseline`` (no residual), ``neural`` (spectrally normalised residual),
``nosn`` (the same network without normalisation), ``oracle`` (the true residual); the
generalisation pair ``neural_gen`` / ``nosn_gen`` are trained only on data above
``gen_min_height`` so that the lower hover heights lie outside their training range.
"""

from __future__ import annotations

from dataclasses import dataclass

from raysign.config import check_range
from raysign.lander.collect import CollectConfig
from raysign.lander.residual import ResidualTraining

CONTROLLERS = ("baseline", "neural", "nosn", "oracle", "neural_gen", "nosn_gen")


@dataclass(frozen=True)
class LanderConfig:
    """Data, network and evaluation settings shared by ``raysign lander``, the sweep and the
    benchmark."""

    collect_seeds: int = 4
    flights: int = 8
    duration: float = 10.0
    gamma: float = 4.0
    width: int = 64
    depth: int = 4
    steps: int = 2000
    batch_size: int = 512
    lr: float = 3e-3
    gen_min_height: float = 0.12
    eval_seeds: int = 10
    first_eval_seed: int = 1000
    kp: float = 4.0
    kd: float = 4.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_range("collect_seeds", self.collect_seeds, 1, 1000)
        check_range("flights", self.flights, 1, 10_000)
        check_range("duration", self.duration, 0.1, 1000.0)
        check_range("gamma", self.gamma, 0.0, None, low_open=True)
        check_range("width", self.width, 1, 4096)
        check_range("depth", self.depth, 2, 16)
        check_range("steps", self.steps, 1, None)
        check_range("gen_min_height", self.gen_min_height, 0.0, 1.0)
        check_range("eval_seeds", self.eval_seeds, 1, 1000)
        # Evaluation seeds start past the collection seeds (seed + k, k < collect_seeds).
        check_range("first_eval_seed", self.first_eval_seed, self.collect_seeds, None)
        check_range("kp", self.kp, 0.0, None, low_open=True)
        check_range("kd", self.kd, 0.0, None, low_open=True)

    def collect_config(self) -> CollectConfig:
        return CollectConfig(flights=self.flights, duration=self.duration)

    def residual_training(self) -> ResidualTraining:
        return ResidualTraining(steps=self.steps, batch_size=self.batch_size, lr=self.lr,
                                seed=self.seed)

    def evaluation_seeds(self) -> list[int]:
        """The seeds of the evaluation episodes: ``seed + first_eval_seed + k``."""
        return [self.seed + self.first_eval_seed + k for k in range(self.eval_seeds)]
