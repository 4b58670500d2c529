"""Your own model, loss and data for the vote trainer: ``Workload`` and its checks.

``SignSGDTrainer(config, workload=Workload(...))`` runs distributed signSGD with majority vote
(Bernstein et al., ICLR 2019, Algorithm 1) on any torch model. A workload is code and data;
the run's numbers stay in ``SignSGDConfig``:

- ``model_fn() -> nn.Module``: called on every replica right after
  ``torch.manual_seed(config.seed)``, so every replica starts bit-identical;
- ``loss_fn(outputs, targets) -> scalar tensor``: ``outputs = model(inputs)`` on a batch
  ``(inputs, targets)``;
- ``train_data``: ``(inputs [N, ...], targets [N, ...])`` numpy arrays, a map-style torch
  ``Dataset`` (``__len__``, ``__getitem__(i) -> (input, target)``), or a ``ray.data.Dataset``
  with ``columns=(inputs column, targets column)``. Each worker draws its own disjoint shard
  (``raysign.data.shard_indices``); arrays go to Ray's object store once, a torch Dataset
  object is pickled once and read by index on the workers, a ``ray.data.Dataset`` is read by
  every worker inside the cluster, keeping its shard (``raysign.actors.ray_data``; this
  module only carries the object and never imports Ray);
- ``test_data``: arrays, a torch Dataset or a ``ray.data.Dataset`` (the same ``columns``),
  or None for no evaluation. A ``ray.data.Dataset`` is read in order, in batches, by the
  worker that evaluates, every evaluation (``eval_batches``);
- ``eval_fn(model, batches) -> dict[str, float]``: ``batches`` iterates once over the test
  set's ``(inputs, targets)`` batches; the model is in eval mode under ``torch.no_grad``.
  Default: ``{"test_loss": ...}``, the sample-weighted mean of ``loss_fn``;
- ``lr_scheduler_fn(optimizer) -> LRScheduler``: a torch scheduler over the optimizer that
  carries the learning rate, stepped once per optimizer step (with no arguments) on every
  replica; step t uses the rate after t - 1 scheduler steps.

With no workload the trainer runs the built-in one named by the config (``model``,
``dataset``, cross-entropy, ``{"test_accuracy": ...}``): ``builtin_functions``.

``check_workload`` runs on the driver before any actor starts: every callable survives a
cloudpickle round trip, the model builds, one forward pass and loss on one training batch
give a finite scalar with a gradient, ``eval_fn`` returns a dict of floats, the scheduler
steps. A failure is one ``ConfigError`` naming the callable and the problem.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import cloudpickle
import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import Dataset, IterableDataset, Subset, default_collate

from raysign.config import ConfigError
from raysign.signsgd.models import build_model

Batch = tuple[Any, Any]
# Test batches of this many samples (the built-in accuracy has always used 1000).
EVAL_BATCH = 1000
# fp16 autocast: the loss is multiplied by this before backward and the gradient divided by
# it after, so small gradients do not flush to zero in fp16; a step whose scaled gradient
# overflows is non-finite and the worker abstains from that vote.
FP16_LOSS_SCALE = 2.0**12
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_CALLABLES = ("model_fn", "loss_fn", "eval_fn", "lr_scheduler_fn")


@dataclass(frozen=True)
class WorkloadFunctions:
    """The code of a workload, what every worker actor receives (data travels separately)."""

    model_fn: Callable[[], nn.Module]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    eval_fn: Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]] | None = None
    lr_scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None = None


@dataclass(frozen=True, eq=False)
class Workload:
    """A user's model, loss and data for ``SignSGDTrainer`` (see the module docstring)."""

    model_fn: Callable[[], nn.Module]
    loss_fn: Callable[[Any, Any], torch.Tensor]
    train_data: Any
    test_data: Any = None
    eval_fn: Callable[[nn.Module, Iterable[Batch]], Mapping[str, float]] | None = None
    lr_scheduler_fn: Callable[[torch.optim.Optimizer], Any] | None = None
    # The (inputs, targets) columns of a ray.data.Dataset train_data or test_data (both).
    columns: tuple[str, str] | None = None

    def __post_init__(self) -> None:
        for name in _CALLABLES:
            fn = getattr(self, name)
            if not callable(fn) and not (fn is None and name in ("eval_fn", "lr_scheduler_fn")):
                raise ConfigError(f"workload.{name}={fn!r} is not callable")
        streamed = [f for f in ("train_data", "test_data") if is_ray_dataset(getattr(self, f))]
        if streamed:
            columns = self.columns
            if (not isinstance(columns, (tuple, list)) or len(columns) != 2
                    or not all(isinstance(c, str) for c in columns)):
                raise ConfigError(f"workload.columns={columns!r}: a ray.data.Dataset "
                                  f"{streamed[0]} needs columns=(inputs column, targets "
                                  "column), two column names")
        elif self.columns is not None:
            raise ConfigError(f"workload.columns={self.columns!r} is only for a "
                              "ray.data.Dataset train_data or test_data; got "
                              f"{type(self.train_data).__name__} and "
                              f"{type(self.test_data).__name__}")
        if "train_data" not in streamed:
            _check_data_form("train_data", self.train_data)
        if self.test_data is not None:
            if "test_data" not in streamed:
                _check_data_form("test_data", self.test_data)
        elif self.eval_fn is not None:
            raise ConfigError("workload.eval_fn is given but workload.test_data is None: give "
                              "the test set it evaluates on")

    @property
    def functions(self) -> WorkloadFunctions:
        eval_fn = self.eval_fn or functools.partial(mean_test_loss, loss_fn=self.loss_fn)
        return WorkloadFunctions(self.model_fn, self.loss_fn, eval_fn, self.lr_scheduler_fn)


# ---------------------------------------------------------------------------- built-in
def accuracy(model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
    """Top-1 accuracy over (inputs, integer labels [B]) batches: ``{"test_accuracy": ...}``."""
    correct = total = 0
    for x, y in batches:
        correct += int((model(x).argmax(1).cpu() == y.cpu()).sum())
        total += len(y)
    return {"test_accuracy": correct / total}


def mean_test_loss(model: nn.Module, batches: Iterable[Batch],
                   loss_fn: Callable[[Any, Any], torch.Tensor]) -> dict[str, float]:
    """``{"test_loss": ...}``: ``loss_fn`` per batch, averaged with the batches' sizes."""
    weighted = count = 0.0
    for x, y in batches:
        weighted += float(loss_fn(model(x), y)) * len(y)
        count += len(y)
    return {"test_loss": weighted / count}


def builtin_functions(model: str) -> WorkloadFunctions:
    """The workload a config names: model ``model`` (``raysign.signsgd.models``),
    cross-entropy, top-1 accuracy, the config's own schedule."""
    return WorkloadFunctions(functools.partial(build_model, model), functional.cross_entropy,
                             accuracy)


# ------------------------------------------------------------------------- data forms
def is_ray_dataset(data: Any) -> bool:
    """Whether ``data`` is a ``ray.data.Dataset`` (told by its class, without importing Ray)."""
    return any(c.__module__ == "ray.data.dataset" and c.__name__ == "Dataset"
               for c in type(data).__mro__)


@dataclass(frozen=True)
class RayDataSource:
    """A ``ray.data.Dataset`` as a worker receives it: the Dataset (its plan), the (inputs,
    targets) column names and the row count N the driver's probe found
    (``raysign.actors.ray_data.probe``). Only the Dataset's own methods read it, so this
    module never imports Ray."""

    dataset: Any
    columns: tuple[str, str]
    num_rows: int

    def __len__(self) -> int:
        return self.num_rows

    def batches(self, size: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every row in the Dataset's own order (``preserve_order``) as (inputs [n, ...],
        targets [n, ...]) numpy batches of ``size`` rows, the last one shorter (None: Ray
        Data's blocks as they come). ``RuntimeError`` if the Dataset yields another number
        of rows than N."""
        self.dataset.context.execution_options.preserve_order = True
        rows = 0
        for batch in self.dataset.iter_batches(batch_size=size, batch_format="numpy"):
            x, y = batch[self.columns[0]], batch[self.columns[1]]
            rows += len(x)
            if rows > self.num_rows:
                break
            yield x, y
        if rows != self.num_rows:
            more = "at least " if rows > self.num_rows else ""
            raise RuntimeError(f"the ray.data.Dataset yielded {more}{rows} rows where the "
                               f"driver's probe counted {self.num_rows}: a ray.data.Dataset "
                               "must yield the same rows every time it is read")


def _check_data_form(field: str, data: Any) -> None:
    if isinstance(data, (tuple, list)):
        if len(data) != 2 or not all(isinstance(a, np.ndarray) for a in data):
            raise ConfigError(f"workload.{field} must be (inputs, targets) numpy arrays, got "
                              f"a {type(data).__name__} of {[type(a).__name__ for a in data]}")
        inputs, targets = data
        if inputs.ndim == 0 or targets.ndim == 0 or len(inputs) != len(targets):
            raise ConfigError(f"workload.{field}: inputs {inputs.shape} and targets "
                              f"{targets.shape} must have the same first dimension N >= 1")
        return
    if isinstance(data, IterableDataset):
        raise ConfigError(f"workload.{field} is an IterableDataset ({type(data).__name__}); "
                          "give a map-style torch Dataset (__len__ and __getitem__) or "
                          "(inputs, targets) numpy arrays")
    if not isinstance(data, Dataset) or not hasattr(data, "__len__"):
        raise ConfigError(f"workload.{field} must be (inputs, targets) numpy arrays or a "
                          f"map-style torch Dataset with __len__, got {type(data).__name__}")


def data_parts(data: Any) -> tuple[Any, Any]:
    """``(inputs, targets)`` for arrays, ``(dataset, None)`` for a torch Dataset: the two
    arguments a worker receives (``take_shard``, ``eval_batches``)."""
    if isinstance(data, (tuple, list)):
        return data[0], data[1]
    return data, None


def data_length(inputs: Any, targets: Any = None) -> int:
    return len(targets) if targets is not None else len(inputs)


def take_shard(inputs: Any, targets: Any, indices: np.ndarray) -> tuple[Any, Any]:
    """Rows ``indices`` of arrays (copied), or a ``Subset`` of a Dataset (read lazily)."""
    if targets is not None:
        return inputs[indices], targets[indices]
    return Subset(inputs, indices.tolist()), None


class ArrayBatches:
    """Batches of a worker's shard held as arrays: ``batch(idx)`` -> (inputs, targets)."""

    def __init__(self, inputs: np.ndarray, targets: np.ndarray):
        self.inputs = torch.as_tensor(np.ascontiguousarray(inputs))
        self.targets = torch.as_tensor(np.ascontiguousarray(targets))

    def __len__(self) -> int:
        return len(self.targets)

    def batch(self, idx: np.ndarray) -> Batch:
        rows = torch.from_numpy(idx)
        return self.inputs[rows], self.targets[rows]


class DatasetBatches:
    """Batches of a worker's shard of a torch Dataset, collated item by item
    (``torch.utils.data.default_collate``)."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, idx: np.ndarray) -> Batch:
        inputs, targets = default_collate([self.dataset[int(i)] for i in idx])
        return inputs, targets


def shard_batches(inputs: Any, targets: Any = None) -> ArrayBatches | DatasetBatches:
    """The batch reader of a shard given as ``data_parts``."""
    if targets is not None:
        return ArrayBatches(inputs, targets)
    return DatasetBatches(inputs)


def eval_batches(inputs: Any, targets: Any = None, device: str | torch.device = "cpu",
                 batch: int = EVAL_BATCH) -> Iterator[Batch]:
    """The test set in order, ``batch`` samples at a time, on ``device``: arrays, a torch
    Dataset (``targets`` None) or a ``RayDataSource`` (``targets`` None), which is read here,
    in the Dataset's order, in the same batches as its rows given as arrays."""
    if isinstance(inputs, RayDataSource):
        for x, y in inputs.batches(batch):
            yield (_to(torch.from_numpy(np.array(x)), device),
                   _to(torch.from_numpy(np.array(y)), device))
        return
    n = data_length(inputs, targets)
    reader = DatasetBatches(inputs) if targets is None else None
    for start in range(0, n, batch):
        if reader is None:
            x = torch.from_numpy(np.array(inputs[start : start + batch]))
            y = torch.from_numpy(np.array(targets[start : start + batch]))
        else:
            x, y = reader.batch(np.arange(start, min(start + batch, n)))
        yield _to(x, device), _to(y, device)


def _to(value: Any, device: str | torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


# ------------------------------------------------------------------------- precision
def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``precision`` (bf16, fp16) on ``device``; fp32: no context."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=AUTOCAST_DTYPES[precision])


# ----------------------------------------------------------------------- lr schedules
def scheduled_lr(k: int, *, lr: float, schedule: str, warmup_steps: int = 0,
                 decay_steps: int = 0, lr_min: float = 0.0, step_size: int = 0,
                 gamma: float = 0.1) -> float:
    """The learning rate after ``k`` optimizer steps (step t uses ``k = t - 1``):

    - constant: ``lr``;
    - cosine: ``lr_min + (lr - lr_min) (1 + cos(pi min(k, T) / T)) / 2`` with T = decay_steps;
    - step: ``lr gamma^floor(k / step_size)``;

    times ``(k + 1) / warmup_steps`` while ``k < warmup_steps``."""
    if schedule == "cosine":
        t = min(k, decay_steps)
        value = lr_min + (lr - lr_min) * (1.0 + math.cos(math.pi * t / decay_steps)) / 2.0
    elif schedule == "step":
        value = lr * gamma ** (k // step_size)
    else:
        value = lr
    if k < warmup_steps:
        value *= (k + 1) / warmup_steps
    return value


class ConfigSchedule(torch.optim.lr_scheduler.LRScheduler):
    """``scheduled_lr`` as a torch scheduler; its state is plain numbers (checkpoints load it
    with ``weights_only=True``)."""

    def __init__(self, optimizer: torch.optim.Optimizer, schedule: dict[str, Any]):
        self.schedule = dict(schedule)
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [scheduled_lr(self.last_epoch, **self.schedule) for _ in self.optimizer.param_groups]


def config_lr_scheduler_fn(config: Any) -> Callable[[torch.optim.Optimizer], Any] | None:
    """The config's schedule (``lr_schedule`` and its parameters) as an ``lr_scheduler_fn``;
    None for a constant rate without warmup (the rate is then ``config.lr`` throughout)."""
    if config.lr_schedule == "constant" and not config.lr_warmup_steps:
        return None
    schedule = dict(lr=config.lr, schedule=config.lr_schedule,
                    warmup_steps=config.lr_warmup_steps,
                    decay_steps=config.lr_decay_steps or config.max_steps, lr_min=config.lr_min,
                    step_size=config.lr_step_size, gamma=config.lr_gamma)
    return functools.partial(ConfigSchedule, schedule=schedule)


# ---------------------------------------------------------------------------- checks
def check_workload(workload: Workload, config: Any, pickler: Any = cloudpickle,
                   train_sample: tuple[int, Batch] | None = None,
                   test_sample: Batch | None = None) -> int:
    """Check ``workload`` on this process before any actor starts (see the module docstring);
    ``pickler`` is the serialiser that ships it (Ray's copy of cloudpickle). ``train_sample``:
    for a ``ray.data.Dataset`` training set, its row count N and first ``(inputs, targets)``
    arrays, read in the cluster by the caller (``raysign.actors.ray_data.probe``);
    ``test_sample``: for a ``ray.data.Dataset`` test set, its first ``(inputs, targets)``
    arrays, read the same way. Returns the number of trainable parameters. Raises
    ``ConfigError`` naming the callable at fault."""
    for name in _CALLABLES:
        fn = getattr(workload, name)
        if fn is not None:
            _round_trip(f"workload.{name}", fn, pickler)
    streamed = is_ray_dataset(workload.train_data)
    if streamed and train_sample is None:
        raise ValueError("check_workload needs train_sample for a ray.data.Dataset train_data")
    train = data_parts(workload.train_data)
    if train[1] is None:
        _round_trip("workload.train_data", train[0], pickler)
    if workload.lr_scheduler_fn is not None and config_lr_scheduler_fn(config) is not None:
        raise ConfigError(f"workload.lr_scheduler_fn and lr_schedule={config.lr_schedule!r} "
                          f"(lr_warmup_steps={config.lr_warmup_steps}) both set the learning "
                          "rate: keep one (lr_schedule='constant' with lr_warmup_steps=0, or "
                          "no lr_scheduler_fn)")
    n = train_sample[0] if streamed else data_length(*train)
    per_worker = n // config.num_workers
    if per_worker < config.batch_size:
        raise ConfigError(f"workload.train_data has {n} samples: {per_worker} per worker for "
                          f"num_workers={config.num_workers}, fewer than batch_size="
                          f"{config.batch_size}; give more data, fewer workers or smaller "
                          "batches")
    device = torch.device("cpu")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = _call("workload.model_fn", workload.model_fn)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"workload.model_fn must return a torch.nn.Module, got "
                          f"{type(model).__name__}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("workload.model_fn returned a model with no trainable parameters")
    if streamed:
        sample = train_sample[1]
        x, y = ArrayBatches(*sample).batch(np.arange(min(config.batch_size, len(sample[1]))))
    else:
        x, y = _first_batch(*train, config.batch_size)
    _check_loss(workload, model, params, x, y, config.precision, device)
    if workload.test_data is not None:
        if is_ray_dataset(workload.test_data):
            if test_sample is None:
                raise ValueError("check_workload needs test_sample for a ray.data.Dataset "
                                 "test_data")
            batch = ArrayBatches(*test_sample).batch(np.arange(len(test_sample[1])))
        else:
            test = data_parts(workload.test_data)
            batch = next(eval_batches(*test, batch=min(config.batch_size, data_length(*test))))
        _check_eval(workload.functions.eval_fn, "workload.eval_fn" if workload.eval_fn else
                    "workload.loss_fn (the default eval_fn: mean test loss)", model, batch,
                    config.precision, device)
    if workload.lr_scheduler_fn is not None:
        _check_scheduler(workload.lr_scheduler_fn, config.lr)
    return sum(p.numel() for p in params)


def _first_batch(inputs: Any, targets: Any, size: int) -> Batch:
    """The first ``size`` training samples as one batch, read as the workers read theirs
    (a Dataset: exactly ``size`` items)."""
    if targets is not None:
        return ArrayBatches(inputs[:size], targets[:size]).batch(np.arange(size))
    items = [_call(f"workload.train_data[{i}]", inputs.__getitem__, i) for i in range(size)]
    if not (isinstance(items[0], (tuple, list)) and len(items[0]) == 2):
        raise ConfigError(f"workload.train_data[0] must be an (input, target) pair, got "
                          f"{_describe(items[0])}")
    return _call("collating a batch of workload.train_data", default_collate, items)


def _round_trip(what: str, value: Any, pickler: Any) -> None:
    try:
        pickler.loads(pickler.dumps(value))
    except Exception as err:  # pickling raises many types (TypeError, PicklingError, ...)
        raise ConfigError(f"{what} cannot be shipped to the workers: cloudpickle failed with "
                          f"{type(err).__name__}: {err}") from None


def _call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except Exception as err:  # user code: any exception is the user's problem, named here
        raise ConfigError(f"{what} failed: {type(err).__name__}: {err}") from None


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor {value.dtype} {list(value.shape)}"
    return type(value).__name__


def _check_loss(workload: Workload, model: nn.Module, params: list[nn.Parameter], x: Any,
                y: Any, precision: str, device: torch.device) -> None:
    model.train()
    with autocast(precision, device):
        try:
            outputs = model(x)
        except Exception as err:  # user code
            raise ConfigError(f"workload.model_fn: the model fails on a training batch (inputs "
                              f"{_describe(x)}): {type(err).__name__}: {err}") from None
        try:
            loss = workload.loss_fn(outputs, y)
        except Exception as err:  # user code
            raise ConfigError(f"workload.loss_fn fails on (outputs {_describe(outputs)}, "
                              f"targets {_describe(y)}): {type(err).__name__}: {err}") from None
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise ConfigError(f"workload.loss_fn must return a scalar tensor (0-d), got "
                          f"{_describe(loss)}")
    if not bool(torch.isfinite(loss)):
        raise ConfigError(f"workload.loss_fn returned {float(loss.detach())} on the first training "
                          "batch; it must be finite")
    if not loss.requires_grad:
        raise ConfigError("workload.loss_fn returned a tensor with no gradient: compute it "
                          "from the model's outputs with torch operations (no .item(), "
                          ".detach() or numpy)")
    loss.backward()
    if all(p.grad is None for p in params):
        raise ConfigError("workload.loss_fn: no parameter of the model receives a gradient")


def _check_eval(eval_fn: Callable[..., Any], what: str, model: nn.Module, batch: Batch,
                precision: str, device: torch.device) -> None:
    model.eval()
    with torch.no_grad(), autocast(precision, device):
        metrics = _call(what, eval_fn, model, iter([batch]))
    if not isinstance(metrics, Mapping) or not metrics:
        raise ConfigError(f"{what} must return a non-empty dict of metric name -> float, got "
                          f"{_describe(metrics)}")
    for key, value in metrics.items():
        ok = isinstance(key, str) and not isinstance(value, bool) and (
            isinstance(value, (int, float, np.number))
            or (isinstance(value, torch.Tensor) and value.numel() == 1))
        if not ok:
            raise ConfigError(f"{what} must return a dict of str -> float; {key!r} maps to "
                              f"{_describe(value)}")


def _check_scheduler(fn: Callable[..., Any], lr: float) -> None:
    optimizer = torch.optim.SGD([torch.zeros(1)], lr=lr)
    scheduler = _call("workload.lr_scheduler_fn", fn, optimizer)
    if (not isinstance(scheduler, torch.optim.lr_scheduler.LRScheduler)
            or isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)):
        raise ConfigError("workload.lr_scheduler_fn must return a torch LRScheduler stepped "
                          "without arguments (ReduceLROnPlateau needs a metric), got "
                          f"{type(scheduler).__name__}")
    optimizer.step()
    _call("workload.lr_scheduler_fn's scheduler.step()", scheduler.step)
    rate = optimizer.param_groups[0]["lr"]
    if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate >= 0):
        raise ConfigError(f"workload.lr_scheduler_fn's scheduler set lr={rate!r}; it must be "
                          "a finite number >= 0")


def describe_workload(workload: Workload | None, num_parameters: int,
                      train_size: int) -> dict[str, Any]:
    """What config.json and the checkpoint record of the workload (code is not config): the
    callables' names, the parameter count and the training-set size."""
    if workload is None:
        return {"kind": "built-in", "num_parameters": num_parameters, "train_size": train_size}

    def name(fn: Any) -> str | None:
        if fn is None:
            return None
        return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"

    inputs, targets = data_parts(workload.train_data)
    if is_ray_dataset(inputs):
        data = f"ray.data.Dataset columns {list(workload.columns)}"
    elif targets is not None:
        data = (f"arrays {inputs.dtype} {list(inputs.shape)}, {targets.dtype} "
                f"{list(targets.shape)}")
    else:
        data = type(inputs).__name__
    return {"kind": "user", **{f: name(getattr(workload, f)) for f in _CALLABLES},
            "train_data": data, "num_parameters": num_parameters, "train_size": train_size}
