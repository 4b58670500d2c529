"""``raysign train`` and ``scripts/run_signsgd.py``: one distributed signSGD run.

With no options this is the main job of the README: majority-vote Signum with 7 Ray worker
actors on Fashion-MNIST in a local Ray session, printing test accuracy, bytes per step against
fp32 and the time split, and writing ``runs/signsgd/<timestamp>/``.

``--results-dir`` and ``--data-dir`` take a path or a URI (``s3://bucket/runs``,
``file:///shared/runs``; ``raysign.storage``); in a ``ray job submit`` job a path must lie
outside the job's temporary working directory. Only the driver reads the data (it puts the
arrays in the object store), so a data URI is fetched here, before Ray starts. ``--resume``
takes a checkpoint or its run folder, local or a URI, and the run goes on writing there.
"""

from __future__ import annotations

import argparse
import json

from raysign.actors.cluster import connect
from raysign.config import ConfigError, add_config_arguments, to_dict
from raysign.config import config_from_args as config_from_args_of
from raysign.data import local_data_dir
from raysign.signsgd.checkpoint import CheckpointError, load_checkpoint, open_checkpoint
from raysign.signsgd.config import SignSGDConfig

_HELP = {
    "dataset": "fashion-mnist or mnist",
    "data_dir": "folder with mnist/ and fashion-mnist/, a path or a URI such as "
                "s3://bucket/data (default: $RAYSIGN_DATA, else ../shared/data)",
    "model": "mlp, cnn, resnet18 or resnet50",
    "num_workers": "data-parallel worker actors (M)",
    "aggregator": "vote (majority vote of packed signs), or an fp32 aggregator: mean "
                  "(parameter server), median, trimmed_mean, krum, multi_krum, "
                  "centered_clipping; a ByzFL chain such as byzfl:NNM+TrMean; or your own, "
                  "by import path (mypkg.agg:my_median; docs/byzantine.md)",
    "vote_shards": "vote actors, each owning a contiguous slice of the parameters (S)",
    "transport": "direct (the default: workers call the vote actors themselves, no message "
                 "passes through the driver; fastest across nodes) or objects (messages are "
                 "task returns held in the driver's memory; docs/signsgd.md)",
    "overlap": "send vote shard s during the backward pass, as soon as its slice of the "
               "gradient is final (direct transport; falls back to the sequential round, "
               "with a warning, where it cannot keep its results; docs/cluster.md#overlap)",
    "lr": "learning rate",
    "momentum": "Signum momentum beta (0 = signSGD)",
    "weight_decay": "lambda in x <- x - lr (V + lambda x)",
    "lr_schedule": "constant, cosine (lr to lr_min over lr_decay_steps) or step (lr times "
                   "lr_gamma every lr_step_size steps); the same on every replica",
    "lr_warmup_steps": "linear warm-up: step t <= N uses lr_t times t / N",
    "lr_decay_steps": "cosine: steps from lr to lr_min (0 = max_steps)",
    "lr_min": "cosine: the final learning rate",
    "lr_step_size": "step: steps between decays",
    "lr_gamma": "step: factor of each decay",
    "batch_size": "mini-batch per worker",
    "accumulation_steps": "mini-batches whose mean gradient makes one step (before the vote)",
    "precision": "fp32, or bf16 / fp16 autocast of the forward pass and loss",
    "clip_grad_norm": "clip each worker's gradient to this global norm before momentum "
                      "(0 = off)",
    "epochs": "passes over each worker's shard",
    "max_steps": "stop after this many steps (0 = use epochs)",
    "num_byzantine": "adversarial workers (must be below half)",
    "attack": "negate, scaled_negate, random, or (seeing the honest messages) colluding, "
              "alie, ipm; or your own, by import path (mypkg.attacks:flip_top_k)",
    "attack_scale": "scale of scaled_negate",
    "clip_tau": "clipping radius of centered_clipping",
    "seed": "seed for initialisation, sharding and batches",
    "eval_every": "test accuracy every N steps (0 = once per epoch)",
    "checksum_every": "compare honest replicas' parameters every N steps",
    "checkpoint_every": "write checkpoint.pt every N steps (0 = once per epoch)",
    "train_subset": "use only the first N training images (0 = all)",
    "test_subset": "use only the first N test images (0 = all)",
    "results_dir": "root folder for results: a path, or a URI such as s3://bucket/runs or "
                   "file:///shared/runs (in a Ray job: storage every node reaches)",
    "name": "run name (runs/<name>/<timestamp>/)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser, SignSGDConfig, _HELP)
    parser.add_argument("--address", default=None,
                        help="join: auto or host:port (default: $RAY_ADDRESS, else a private Ray)")
    parser.add_argument("--num-cpus", type=int, default=None, help="CPUs of a local instance")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--resume", default=None, metavar="CHECKPOINT",
                        help="continue from a checkpoint.pt (or the run folder holding it), a "
                             "path or a URI; the run goes on writing into that folder")


def config_from_args(args: argparse.Namespace) -> SignSGDConfig:
    return config_from_args_of(SignSGDConfig, args)


def run(args: argparse.Namespace) -> int:
    from raysign.actors.trainer import SignSGDTrainer

    run_dir = checkpoint = None
    try:  # fails before Ray starts
        config = config_from_args(args)
        local_data_dir(config.data_dir, [config.dataset])  # a URI: fetched once, here
        if args.resume:
            run_dir, checkpoint = open_checkpoint(args.resume)
            load_checkpoint(checkpoint, to_dict(config))
    except (ConfigError, CheckpointError, OSError) as err:  # OSError: a URI that is missing
        raise SystemExit(f"raysign train: {err}") from None
    connect(args.address, args.num_cpus)
    trainer = SignSGDTrainer(config, run_dir=run_dir, progress=not args.no_progress)
    try:
        summary = trainer.run(resume=checkpoint)
    finally:
        trainer.shutdown()
    trainer.run_dir.close()
    stages = ", ".join(f"{k} {1e3 * v:.1f} ms" for k, v in summary.stage_seconds.items())
    print(f"test accuracy      {summary.test_accuracy:.4f} after {summary.steps} steps "
          f"({config.aggregator}, {config.num_workers} workers, "
          f"{config.num_byzantine} Byzantine)")
    print(f"bytes per step     {summary.bytes_sent_per_worker_per_step:,.0f} sent per worker vs "
          f"{summary.fp32_bytes_per_step:,.0f} for fp32 ({summary.compression_ratio:.1f}x fewer)")
    print(f"time per step      {stages}")
    print(f"replicas identical {summary.replicas_identical} (re-synced {summary.resyncs})")
    print(f"results: {summary.run_dir}")
    print(json.dumps({"test_accuracy": summary.test_accuracy,
                      "compression_ratio": summary.compression_ratio}))
    return 0
