"""A character-level GPT on House of Commons speeches, trained with majority vote two ways.

A worked example written as a user would write it, outside ``raysign/``: a small GPT-style
language model (next-character cross-entropy, held-out perplexity) on the 1,000 ParlSpeech
speeches of ``../shared/data/text/parlspeech_hoc_sample.csv``, which the built-in trainer's
model and data tables cannot express. Two runs, each against its fp32 baseline:

- ``raytrain`` (issue 17): Ray Train's ``TorchTrainer`` on 4 CPU workers, data as a
  ``ray.data.Dataset`` (window start offsets, turned into windows by ``map_batches`` inside the
  cluster, one shard per worker through ``ray.train.get_dataset_shard``), the DDP
  majority-vote hook (``raysign.actors.ray_train.prepare_vote_hook``, plain SGD) against plain
  DDP all-reduce (no hook, Adam); checkpoints through ``save_checkpoint``.
- ``vote`` (issue 18): ``SignSGDTrainer`` with a ``Workload`` (model, loss, windows as numpy
  arrays, an ``eval_fn`` returning the perplexity) on 4 workers, with and without 1 Byzantine
  worker (negating its message), majority vote against the fp32 mean.

Data: speeches in file order, joined with a newline; the last 10% of the speeches (100) are
held out for the perplexity, the vocabulary is the training text's characters plus one
unknown symbol. Windows of ``CONTEXT`` characters predict the next character at every
position (targets are the inputs shifted by one).

    python scripts/example_speeches_lm.py vote --steps 300 --out runs/speeches-lm
    python scripts/example_speeches_lm.py raytrain --steps 300 --out runs/speeches-lm

Each writes a CSV (one row per run, with its perplexity curve) and a figure of held-out
perplexity against step under ``--out``. The default learning rates are the best of the
grids in docs/api.md and docs/ddp_hook.md ("A language model ...").
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing raysign
CORPUS = "text/parlspeech_hoc_sample.csv"
HOLDOUT = 0.1  # the last 10% of the speeches, in file order
CONTEXT = 64
UNKNOWN = "\x00"  # index 0: characters of the held-out text never seen in training


# ------------------------------------------------------------------------------- the data
def data_dir() -> Path:
    """``$RAYSIGN_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("RAYSIGN_DATA", REPO.parent / "shared" / "data"))


def load_speeches(path: Path, holdout: float = HOLDOUT) -> tuple[str, str]:
    """(training text, held-out text): the ``text`` column, speeches joined by a newline; the
    last ``holdout`` fraction of the speeches (in file order) is held out."""
    with open(path, newline="", encoding="utf-8") as f:
        speeches = [row["text"] for row in csv.DictReader(f)]
    cut = len(speeches) - round(holdout * len(speeches))
    return "\n".join(speeches[:cut]), "\n".join(speeches[cut:])


@dataclass(frozen=True)
class Vocabulary:
    """Characters <-> token ids; id 0 is the unknown character."""

    chars: str

    @classmethod
    def of(cls, text: str) -> Vocabulary:
        return cls(UNKNOWN + "".join(sorted(set(text) - {UNKNOWN})))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """int64 [len(text)] token ids."""
        index = {c: i for i, c in enumerate(self.chars)}
        return np.array([index.get(c, 0) for c in text], dtype=np.int64)

    def decode(self, tokens) -> str:
        return "".join(self.chars[int(t)] for t in tokens)


def window_starts(num_tokens: int, context: int, stride: int) -> np.ndarray:
    """Start offsets of the windows of ``context + 1`` tokens, every ``stride`` tokens."""
    return np.arange(0, num_tokens - context, stride, dtype=np.int64)


def make_windows(tokens: np.ndarray, starts: np.ndarray, context: int = CONTEXT
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets), int64 [len(starts), context] each: ``tokens[s : s + context]`` and
    the next-token targets ``tokens[s + 1 : s + context + 1]``."""
    rows = starts[:, None] + np.arange(context + 1)[None, :]
    chunk = tokens[rows]
    return chunk[:, :-1].copy(), chunk[:, 1:].copy()


@dataclass(frozen=True)
class Corpus:
    vocabulary: Vocabulary
    train_tokens: np.ndarray
    test_tokens: np.ndarray

    @classmethod
    def load(cls, path: Path | None = None) -> Corpus:
        train, test = load_speeches(path or data_dir() / CORPUS)
        vocabulary = Vocabulary.of(train)
        return cls(vocabulary, vocabulary.encode(train), vocabulary.encode(test))

    def train_windows(self, stride: int) -> tuple[np.ndarray, np.ndarray]:
        return make_windows(self.train_tokens, window_starts(len(self.train_tokens), CONTEXT,
                                                             stride))

    def test_windows(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out text as non-overlapping windows (each character predicted once)."""
        return make_windows(self.test_tokens, window_starts(len(self.test_tokens), CONTEXT,
                                                            CONTEXT))


# ------------------------------------------------------------------------------ the model
class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention and a 4x MLP, each residual."""

    def __init__(self, d_model: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.norm1 = nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(),
                                 nn.Linear(4 * d_model, d_model))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        attended = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.norm2(x))


class CharGPT(nn.Module):
    """A GPT-style character model: token and position embeddings, ``n_layer`` blocks, a
    linear head. ``forward(tokens: int64 [B, T]) -> logits float32 [B, T, vocab]``."""

    def __init__(self, vocab: int, context: int = CONTEXT, d_model: int = 64, n_layer: int = 2,
                 n_head: int = 4):
        super().__init__()
        self.token = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(context, d_model)
        self.blocks = nn.Sequential(*[Block(d_model, n_head) for _ in range(n_layer)])
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[1], device=tokens.device)
        x = self.token(tokens) + self.position(positions)
        return self.head(self.norm(self.blocks(x)))


def next_token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of every position's next-token prediction."""
    return functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def held_out_perplexity(model: nn.Module, batches) -> dict[str, float]:
    """``{"perplexity": exp(mean next-token cross-entropy)}`` over every held-out token."""
    total, count = 0.0, 0
    for x, y in batches:
        total += float(functional.cross_entropy(model(x).flatten(0, 1), y.flatten(),
                                                reduction="sum"))
        count += y.numel()
    return {"perplexity": math.exp(total / count)}


class ModelFactory:
    """``model_fn`` of the workload: a picklable callable building the same ``CharGPT``."""

    def __init__(self, vocab: int, **sizes: int):
        self.vocab, self.sizes = vocab, sizes

    def __call__(self) -> nn.Module:
        return CharGPT(self.vocab, **self.sizes)


def num_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ------------------------------------------------------- issue 18: SignSGDTrainer, Byzantine
VOTE_RUNS = (  # (name, aggregator, Byzantine workers)
    ("vote, 1 Byzantine", "vote", 1),
    ("mean, 1 Byzantine", "mean", 1),
    ("mean, no Byzantine", "mean", 0),
    ("vote, no Byzantine", "vote", 0),
)


def run_vote_trainer(args: argparse.Namespace) -> Path:
    """The four ``SignSGDTrainer`` runs of ``VOTE_RUNS`` on 4 workers; one CSV row each."""
    from raysign.actors.cluster import connect
    from raysign.actors.trainer import SignSGDTrainer
    from raysign.signsgd.config import SignSGDConfig
    from raysign.signsgd.workload import Workload

    corpus = Corpus.load()
    workload = Workload(model_fn=ModelFactory(len(corpus.vocabulary)), loss_fn=next_token_loss,
                        train_data=corpus.train_windows(args.stride),
                        test_data=corpus.test_windows(), eval_fn=held_out_perplexity)
    connect(num_cpus=args.num_cpus)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    lrs = {"vote": args.vote_lr, "mean": args.mean_lr}
    for name, aggregator, byzantine in VOTE_RUNS:
        if (args.only and aggregator not in args.only) or byzantine not in args.byzantine:
            continue
        for lr in lrs[aggregator]:
            config = SignSGDConfig(
                num_workers=args.workers, aggregator=aggregator, num_byzantine=byzantine,
                attack="negate", lr=lr, momentum=0.9, batch_size=args.batch_size,
                max_steps=args.steps, eval_every=args.eval_every, seed=args.seed,
                results_dir=str(out / "runs"), name=f"lm-{aggregator}-byz{byzantine}")
            trainer = SignSGDTrainer(config, workload=workload, progress=False)
            try:
                summary = trainer.run()
            finally:
                trainer.shutdown()
            row = {"run": name, "aggregator": aggregator, "byzantine": byzantine, "lr": lr,
                   "steps": summary.steps, "perplexity": summary.test_metrics["perplexity"],
                   "bytes_per_step_per_worker": summary.bytes_sent_per_worker_per_step,
                   "num_parameters": summary.num_parameters,
                   "wall_seconds": round(summary.wall_seconds, 1),
                   "curve": json.dumps(summary.accuracy_curve), "run_dir": summary.run_dir}
            print(f"{name:20s} lr {lr:g}: perplexity {row['perplexity']:.3f}, "
                  f"{row['bytes_per_step_per_worker']:.0f} B/step/worker, "
                  f"{row['wall_seconds']} s", flush=True)
            rows.append(row)
    path = out / "vote_trainer.csv"
    _write_csv(path, rows, args.append)
    _plot_csv(path, out / "vote_trainer.png",
              f"char GPT on HoC speeches, SignSGDTrainer, {args.workers} workers")
    return path


# ------------------------------------------------------------- issue 17: Ray Train, DDP hook
def written_bytes() -> int:
    """Bytes this process has passed to write(2) calls (``wchar``): gloo's socket writes,
    headers included, while a collective runs."""
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("wchar:")).split(":")[1])


def window_batch(batch: dict, tokens: np.ndarray, context: int) -> dict:
    """``map_batches``: window start offsets -> input and target windows."""
    inputs, targets = make_windows(tokens, batch["start"], context)
    return {"inputs": inputs, "targets": targets}


def train_loop(config: dict) -> None:
    """``train_loop_per_worker``: the same loop with the vote hook or plain DDP."""
    import ray.train

    from raysign.actors.ray_train import load_checkpoint, prepare_vote_hook

    torch.set_num_threads(1)
    torch.manual_seed(config["seed"])  # the same initial model on every rank, in both modes
    model = CharGPT(config["vocab"])
    if config["mode"] == "vote":
        model, state = prepare_vote_hook(model, momentum=0.9, topology="allgather")
        optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    else:
        model = ray.train.torch.prepare_model(model)
        optimizer = torch.optim.Adam(model.parameters(), lr=config["lr"])
    # A run Ray Train restarts after a failure continues from its last checkpoint (the vote
    # run: model, optimizer, every rank's momentum); the data shard starts over.
    checkpoint = ray.train.get_checkpoint()
    step = 0
    if checkpoint and config["mode"] == "vote":
        step = load_checkpoint(checkpoint, model, optimizer, state)
    test = [(torch.from_numpy(x), torch.from_numpy(y))
            for x, y in _batched(config["test_windows"], 1000)]
    shard = ray.train.get_dataset_shard("train")
    written, curve = [], []
    while step < config["steps"]:
        for batch in shard.iter_torch_batches(batch_size=config["batch_size"],
                                              drop_last=True):
            step += 1
            model.train()
            loss = next_token_loss(model(batch["inputs"]), batch["targets"])
            optimizer.zero_grad()
            before = written_bytes()
            loss.backward()  # DDP's exchange (the vote, or the all-reduce) happens here
            written.append(written_bytes() - before)
            optimizer.step()
            if step % config["eval_every"] == 0 or step == config["steps"]:
                _report(config, model, optimizer, state if config["mode"] == "vote" else None,
                        step, loss, test, curve, written)
            if step == config["steps"]:
                break


def _report(config, model, optimizer, state, step, loss, test, curve, written) -> None:
    import ray.train
    import torch.distributed as dist

    from raysign.actors.ray_train import save_checkpoint

    model.eval()
    with torch.no_grad():
        perplexity = held_out_perplexity(model, test)["perplexity"]
    curve.append([step, perplexity])
    # Bytes per step of every rank, after DDP's bucket rebuild (it talks in steps 1-2).
    mine = float(np.mean(written[2:])) if len(written) > 2 else float("nan")
    ranks = [None] * dist.get_world_size()
    dist.all_gather_object(ranks, mine)
    metrics = {"step": step, "loss": loss.item(), "perplexity": perplexity,
               "curve": json.dumps(curve), "written_bytes_per_rank": json.dumps(ranks)}
    with tempfile.TemporaryDirectory() as tmp:
        if state is not None:
            checkpoint = save_checkpoint(tmp, model, optimizer, state, step)
        else:
            if dist.get_rank() == 0:
                torch.save({"step": step, "model": model.module.state_dict(),
                            "optimizer": optimizer.state_dict()}, Path(tmp) / "model.pt")
            checkpoint = ray.train.Checkpoint.from_directory(tmp)
        ray.train.report(metrics, checkpoint=checkpoint)


def _batched(windows: tuple[np.ndarray, np.ndarray], size: int):
    inputs, targets = windows
    for i in range(0, len(inputs), size):
        yield inputs[i:i + size], targets[i:i + size]


def run_ray_train(args: argparse.Namespace) -> Path:
    """The hook and plain DDP on ``args.workers`` Ray Train workers: CSV and figure."""
    import ray.data
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from raysign.actors.cluster import connect

    corpus = Corpus.load()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    connect(num_cpus=args.num_cpus)
    ray.data.DataContext.get_current().enable_progress_bars = False
    tokens = corpus.train_tokens
    starts = window_starts(len(tokens), CONTEXT, args.stride)
    # The windows are made inside the cluster: the driver holds only the start offsets.
    dataset = ray.data.from_items([{"start": int(s)} for s in starts]).map_batches(
        window_batch, fn_kwargs={"tokens": tokens, "context": CONTEXT}, batch_format="numpy")
    d = num_parameters(CharGPT(len(corpus.vocabulary)))
    m = args.workers
    rows = []
    runs = [("vote", lr) for lr in args.hook_lr] + [("ddp", lr) for lr in args.ddp_lr]
    for mode, lr in runs:
        if args.only and mode not in args.only:
            continue
        started = time.time()
        trainer = TorchTrainer(
            train_loop,
            train_loop_config={"mode": mode, "lr": lr, "seed": args.seed, "steps": args.steps,
                               "batch_size": args.batch_size, "eval_every": args.eval_every,
                               "vocab": len(corpus.vocabulary),
                               "test_windows": corpus.test_windows()},
            datasets={"train": dataset},
            scaling_config=ScalingConfig(num_workers=m, use_gpu=False,
                                         resources_per_worker={"CPU": args.cpus_per_worker}),
            run_config=RunConfig(name=f"lm-{mode}-lr{lr:g}", storage_path=str(out / "ray")))
        result = trainer.fit()
        metrics = result.metrics
        written = json.loads(metrics["written_bytes_per_rank"])
        computed = ((m - 1) * math.ceil(d / 8) if mode == "vote"
                    else 2 * (m - 1) / m * 4 * d)
        row = {"run": "vote hook (SGD)" if mode == "vote" else "DDP all-reduce (Adam)",
               "mode": mode, "lr": lr, "steps": metrics["step"],
               "perplexity": metrics["perplexity"], "num_parameters": d,
               "bytes_per_rank_per_step_computed": computed,
               "bytes_per_rank_per_step_measured_mean": float(np.mean(written)),
               "wall_seconds": round(time.time() - started, 1),
               "checkpoint": result.checkpoint.path if result.checkpoint else "",
               "curve": metrics["curve"]}
        print(f"{row['run']:22s} lr {lr:g}: perplexity {row['perplexity']:.3f}, "
              f"{row['bytes_per_rank_per_step_measured_mean']:.0f} B/rank/step written "
              f"({computed:.0f} computed), {row['wall_seconds']} s", flush=True)
        rows.append(row)
    path = out / "ray_train.csv"
    _write_csv(path, rows, args.append)
    _plot_csv(path, out / "ray_train.png", f"char GPT on HoC speeches, {m} Ray Train workers")
    return path


def _write_csv(path: Path, rows: list[dict], append: bool) -> None:
    """Write ``rows``, or add them to the rows already in ``path`` with ``append``."""
    old = []
    if append and path.exists():
        with open(path, newline="") as f:
            old = list(csv.DictReader(f))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(old + rows)
    print(f"wrote {path} ({len(old)} earlier rows kept)" if append else f"wrote {path}")


def _plot_csv(path: Path, figure: Path, title: str) -> None:
    """Perplexity against step, one line per row of the CSV ``path``: the best learning rate
    of each kind of run bold, the other grid points thin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    best = {}
    for row in rows:
        score = float(row["perplexity"])
        score = score if math.isfinite(score) else math.inf
        if row["run"] not in best or score < best[row["run"]][0]:
            best[row["run"]] = (score, row)
    colours = {run: f"C{i}" for i, run in enumerate(best)}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        steps, values = zip(*json.loads(row["curve"]), strict=True)
        top = best[row["run"]][1] is row
        ax.plot(steps, values, color=colours[row["run"]], marker="o", markersize=3,
                linewidth=2.2 if top else 0.8, alpha=1.0 if top else 0.45,
                label=f"{row['run']}, lr {float(row['lr']):g}")
    ax.set_xlabel("step")
    ax.set_ylabel("held-out perplexity (last 10% of speeches)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figure, dpi=120)
    print(f"wrote {figure}")


# --------------------------------------------------------------------------------- the CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("part", choices=("vote", "raytrain"),
                        help="vote: SignSGDTrainer with a Byzantine worker (issue 18); "
                             "raytrain: TorchTrainer, vote hook vs DDP (issue 17)")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--out", default="runs/speeches-lm")
    parser.add_argument("--batch-size", type=int, default=16, help="windows per worker")
    parser.add_argument("--stride", type=int, default=CONTEXT // 2,
                        help="training windows start every this many characters")
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-cpus", type=int, default=None,
                        help="logical CPUs of the local Ray (default: the machine's)")
    parser.add_argument("--cpus-per-worker", type=float, default=0.25)
    parser.add_argument("--vote-lr", type=float, nargs="+", default=[3e-3])
    parser.add_argument("--mean-lr", type=float, nargs="+", default=[3.0])
    parser.add_argument("--hook-lr", type=float, nargs="+", default=[3e-3])
    parser.add_argument("--ddp-lr", type=float, nargs="+", default=[1e-2])
    parser.add_argument("--append", action="store_true",
                        help="add the rows to the part's CSV under --out instead of replacing it")
    parser.add_argument("--byzantine", type=int, nargs="+", default=[1, 0], choices=(0, 1),
                        help="vote: run only the runs with these numbers of Byzantine workers")
    parser.add_argument("--only", nargs="+", default=[], choices=("vote", "mean", "ddp"),
                        help="run only these aggregators (vote, mean) or modes (vote, ddp)")
    args = parser.parse_args(argv)
    for name in ("steps", "workers", "batch_size", "stride", "eval_every"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)} must be >= 1")
    kinds = {"vote": ("vote", "mean"), "raytrain": ("vote", "ddp")}[args.part]
    if args.only and not set(args.only) & set(kinds):
        parser.error(f"--only {' '.join(args.only)} selects no run of {args.part}: use "
                     f"{' or '.join(kinds)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.part == "vote":
        run_vote_trainer(args)
    else:
        run_ray_train(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
