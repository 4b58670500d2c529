"""Crowd labels and features of the user's own data: crowd-kit's (task, worker, label) tables in,
aggregated labels, posteriors, worker qualities and MBEM predictions out.

The answer table has one row per answer: a task id, a worker id and the label the worker gave
(crowd-kit's ``task, worker, label``; the column names are arguments). Ids and labels are of any
hashable kind; labels are mapped to classes in sorted order and back in every output. A truth
table has a task and a label column; its tasks must be tasks of the answers (for
``aggregate_table``) or rows of the features (for ``mbem_table``).

Labels must be all numbers or all text: a column holding both (``1`` and ``"yes"``, or the
Python int ``1`` beside the string ``"1"``; in a file, ``1`` beside ``yes``) is refused, because
the two spellings of one class would become two classes. Every check runs before any work and
raises ``ConfigError`` with one line naming the file (or table), the column, the value and what
would be valid. Nothing the caller passes in is modified.

Features for MBEM (``load_features``): a ``.npy`` array, a ``.npz`` with ``features`` (or ``X``)
and optionally ``ids``, or a folder of same-sized images (ids = file names without suffix). Row
``r`` of the features is the task whose id is ``ids[r]``; without ``ids`` the task ids are the row
numbers ``0 .. N-1``.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raysign.config import ConfigError, check_choice, check_range
from raysign.crowd.aggregate import (
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
)
from raysign.crowd.annotations import Annotations
from raysign.crowd.mbem import ClassifierTraining, mbem, predict_proba

METHODS = {"mv": MajorityVote, "wmv": WeightedMajorityVote, "one-coin": OneCoinDawidSkene,
           "ds": DawidSkene}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


# ------------------------------------------------------------------------------ reading tables
def _separator(path: Path) -> str:
    """``\\t`` for .tsv / .tab, ``,`` for .csv, else sniffed from the first lines."""
    suffix = path.suffix.lower()
    if suffix in (".tsv", ".tab"):
        return "\t"
    if suffix == ".csv":
        return ","
    with open(path, newline="", errors="replace") as handle:
        head = handle.read(8192)
    try:
        return csv.Sniffer().sniff(head, delimiters=",\t;| ").delimiter
    except csv.Error:
        return ","


def read_table(path: str | Path, text_columns: tuple[str, ...] = (), what: str = "answers",
               ) -> pd.DataFrame:
    """A CSV / TSV file as a DataFrame (separator from the suffix, else sniffed). Only empty
    cells are missing values; ``text_columns`` are read as text (ids keep leading zeros)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file {str(path)!r} does not exist or is not a file "
                          "(expected a CSV or TSV table)")
    try:
        sep = _separator(path)
        header = pd.read_csv(path, sep=sep, nrows=0).columns
        dtype = {c: str for c in text_columns if c in header}
        return pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=False, na_values=[""])
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ConfigError(f"{what} file {str(path)!r} is not a readable CSV / TSV table: "
                          f"{reason}") from None


def _require_columns(frame: pd.DataFrame, columns: dict[str, str], source: str) -> None:
    """Fail naming the first missing column (and the close match, if any)."""
    present = [str(c) for c in frame.columns]
    for option, name in columns.items():
        if name in frame.columns:
            continue
        lower = {c.lower(): c for c in present}
        close = [lower[name.lower()]] if name.lower() in lower else \
            difflib.get_close_matches(name, present, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"{source}: no column {name!r} ({option}); {hint}"
                          f"the columns are {present}")


def _show(value: Any) -> str:
    """``repr`` of a plain Python value (numpy scalars unwrapped)."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _row_name(frame: pd.DataFrame, position: int, from_file: bool) -> str:
    return f"line {position + 2}" if from_file else f"row {_show(frame.index[position])}"


def _check_filled(frame: pd.DataFrame, column: str, source: str, from_file: bool) -> None:
    missing = np.flatnonzero(frame[column].isna().to_numpy())
    if len(missing):
        raise ConfigError(f"{source}: column {column!r} is empty on "
                          f"{_row_name(frame, int(missing[0]), from_file)} (empty cells: "
                          f"{len(missing)}; every row needs a value)")


def _is_number(value: Any) -> bool:
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return True
    return isinstance(value, (int, float, np.number, bool, np.bool_))


def _check_label_kinds(values: pd.Series, column: str, source: str) -> None:
    """Fail when a label column mixes numbers and text (see the module docstring)."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("mixed-integer", "mixed"):
        number = next((v for v in values if not isinstance(v, str)), None)
        text = next((v for v in values if isinstance(v, str)), None)
        raise ConfigError(f"{source}: column {column!r} mixes labels of types "
                          f"{type(number).__name__} ({_show(number)}) and str ({text!r}); labels "
                          "must be all numbers or all text")
    if kind == "string":
        numeric = np.array([_is_number(v) for v in values])
        if numeric.any() and not numeric.all():
            number = values.iloc[int(np.argmax(numeric))]
            text = values.iloc[int(np.argmin(numeric))]
            raise ConfigError(f"{source}: column {column!r} mixes numeric labels ({number!r}) "
                              f"and text labels ({text!r}); labels must be all numbers or all "
                              "text")


def _label_kind(values: pd.Series) -> str:
    """``text`` or ``numbers`` for a column that passed ``_check_label_kinds``."""
    return "text" if pd.api.types.infer_dtype(values, skipna=True) == "string" else "numbers"


def _ids(values: pd.Series) -> np.ndarray:
    """Ids as a sortable array: a column mixing kinds (ints and strings) becomes text."""
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("mixed-integer", "mixed", "mixed-integer-float"):
        return values.astype(str).to_numpy()
    return values.to_numpy()


@dataclass(frozen=True)
class AnswerTable:
    """Checked answers: the codes (``annotations``, classes sorted, the original names in
    ``item_ids`` / ``worker_ids`` / ``classes``), and the truth: its task ids and class codes."""

    annotations: Annotations
    truth_tasks: np.ndarray | None = field(default=None, repr=False)
    truth_codes: np.ndarray | None = field(default=None, repr=False)

    @property
    def classes(self) -> np.ndarray:
        return self.annotations.classes

    @property
    def tasks(self) -> np.ndarray:
        return self.annotations.item_ids


def _as_frame(table: Any, source: str) -> tuple[pd.DataFrame, bool]:
    if isinstance(table, (str, Path)):
        return table, True
    if isinstance(table, pd.Series):  # crowd-kit's truth: labels indexed by task
        return table.rename_axis("task").rename("label").reset_index(), False
    if not isinstance(table, pd.DataFrame):
        raise ConfigError(f"{source}: expected a pandas DataFrame or a file path, got "
                          f"{type(table).__name__}")
    return table, False


def answer_table(answers: pd.DataFrame | str | Path, truth: Any = None, *, task_col: str = "task",
                 worker_col: str = "worker", label_col: str = "label",
                 truth_task_col: str = "task", truth_label_col: str = "label",
                 truth_tasks_from: np.ndarray | None = None) -> AnswerTable:
    """Check and code an answer table (a DataFrame or a CSV / TSV path) and an optional truth
    table (DataFrame, path, or a Series of labels indexed by task). Truth tasks must be tasks
    of the answers unless ``truth_tasks_from`` lists the allowed task ids (MBEM: the feature
    rows). Fails with ``ConfigError`` before any work (module docstring)."""
    source = f"answers {str(answers)!r}" if isinstance(answers, (str, Path)) else "answers table"
    if isinstance(answers, (str, Path)):
        frame = read_table(answers, (task_col, worker_col), "answers")
        from_file = True
    else:
        frame, from_file = _as_frame(answers, source)
    _require_columns(frame, {"task column": task_col, "worker column": worker_col,
                             "label column": label_col}, source)
    if len(frame) == 0:
        raise ConfigError(f"{source}: no answers (expected one row per answer with columns "
                          f"{task_col!r}, {worker_col!r}, {label_col!r})")
    for column in (task_col, worker_col, label_col):
        _check_filled(frame, column, source, from_file)
    labels = frame[label_col]
    _check_label_kinds(labels, label_col, source)
    truth_tasks = truth_labels = None
    if truth is not None:
        truth_source = f"truth {str(truth)!r}" if isinstance(truth, (str, Path)) else \
            "truth table"
        if isinstance(truth, (str, Path)):
            tframe = read_table(truth, (truth_task_col,), "truth")
            truth_file = True
        else:
            tframe, truth_file = _as_frame(truth, truth_source)
            if isinstance(truth, pd.Series):
                truth_task_col, truth_label_col = "task", "label"
        _require_columns(tframe, {"truth task column": truth_task_col,
                                  "truth label column": truth_label_col}, truth_source)
        if len(tframe) == 0:
            raise ConfigError(f"{truth_source}: no rows (expected one row per task with columns "
                              f"{truth_task_col!r}, {truth_label_col!r})")
        for column in (truth_task_col, truth_label_col):
            _check_filled(tframe, column, truth_source, truth_file)
        _check_label_kinds(tframe[truth_label_col], truth_label_col, truth_source)
        kinds = _label_kind(labels), _label_kind(tframe[truth_label_col])
        if kinds[0] != kinds[1]:
            raise ConfigError(f"{truth_source}: column {truth_label_col!r} holds {kinds[1]} "
                              f"({_show(tframe[truth_label_col].iloc[0])}) but the answers' "
                              f"{label_col!r} holds {kinds[0]} ({_show(labels.iloc[0])}); "
                              "truth and answers need labels of one kind")
        truth_tasks, truth_labels = _ids(tframe[truth_task_col]), tframe[truth_label_col]
        duplicated = pd.Series(truth_tasks).duplicated()
        if duplicated.any():
            task = truth_tasks[int(np.argmax(duplicated.to_numpy()))]
            raise ConfigError(f"{truth_source}: task {_show(task)} appears more than once in "
                              f"column {truth_task_col!r} (one truth label per task)")
    tasks = _ids(frame[task_col])
    allowed = tasks if truth_tasks_from is None else truth_tasks_from
    if truth_tasks is not None:  # ids compare as text, as they read from a file
        absent = ~np.isin(truth_tasks.astype(str), np.asarray(allowed).astype(str))
        if absent.any():
            where = "tasks of the answers" if truth_tasks_from is None else "rows of the features"
            raise ConfigError(f"{truth_source}: {int(absent.sum())} of {len(truth_tasks)} truth "
                              f"tasks are not {where}, e.g. {truth_tasks[absent][:3].tolist()} "
                              f"(answers' tasks look like {pd.unique(tasks)[:3].tolist()})")
    all_labels = labels if truth_labels is None else pd.concat(
        [labels.astype(object), truth_labels.astype(object)], ignore_index=True)
    if pd.api.types.infer_dtype(all_labels) == "string":
        classes = np.unique(all_labels.to_numpy(dtype=str))
        codes = np.searchsorted(classes, labels.to_numpy(dtype=str))
    else:
        classes = np.unique(pd.to_numeric(all_labels).to_numpy())
        codes = np.searchsorted(classes, pd.to_numeric(labels).to_numpy())
    if len(classes) < 2:
        raise ConfigError(f"{source}: column {label_col!r} holds one class only "
                          f"({_show(classes[0])}); aggregation needs at least two")
    coded = Annotations.from_arrays(tasks, _ids(frame[worker_col]), codes,
                                    n_classes=len(classes))
    coded = Annotations(coded.items, coded.workers, coded.labels, coded.n_items,
                        coded.n_workers, coded.n_classes, coded.item_ids, coded.worker_ids,
                        classes)
    if truth_tasks is None:
        return AnswerTable(coded)
    values = truth_labels.to_numpy(dtype=str) if classes.dtype.kind in "OUS" else \
        pd.to_numeric(truth_labels).to_numpy()
    return AnswerTable(coded, truth_tasks, np.searchsorted(classes, values).astype(np.int64))


# --------------------------------------------------------------------------------- aggregation
@dataclass
class AggregateResult:
    """Aggregated labels, per-task posteriors, per-worker quality and (with truth) accuracy."""

    method: str
    labels: pd.DataFrame
    posteriors: pd.DataFrame
    workers: pd.DataFrame
    accuracy: float | None
    n_truth: int
    model: Any = field(repr=False, default=None)


def _truth_on(tasks: np.ndarray, table: AnswerTable) -> np.ndarray:
    """Truth class code of each of ``tasks`` (-1 where unknown)."""
    if table.truth_tasks is None:
        return np.full(len(tasks), -1, dtype=np.int64)
    codes = pd.Series(table.truth_codes, index=table.truth_tasks.astype(str))
    return codes.reindex(np.asarray(tasks).astype(str)).fillna(-1).to_numpy().astype(np.int64)


def aggregate_table(answers: pd.DataFrame | str | Path, method: str = "ds", truth: Any = None,
                    *, task_col: str = "task", worker_col: str = "worker",
                    label_col: str = "label", truth_task_col: str = "task",
                    truth_label_col: str = "label", seed: int = 0,
                    options: dict[str, Any] | None = None) -> AggregateResult:
    """Aggregate an answer table with ``method`` (``mv``, ``wmv``, ``one-coin``, ``ds``).

    Returns ``labels`` (task, label: the original label values), ``posteriors`` (task + one
    column per class), ``workers`` (worker, ``n_labels``, ``agreement`` with the aggregated
    labels, ``skill``: the method's quality estimate - the agreement for mv, the weight for
    wmv, the accuracy for one-coin, ``sum_c prior[c] P(says c | true c)`` for ds - plus
    ``truth_accuracy`` with truth and, for ds, the confusion matrix as columns
    ``said_<l>_true_<c>``), and the accuracy on the truth tasks when truth is given.
    ``options`` go to the method's class (e.g. ``{"alpha": 0.0}`` for ``DawidSkene``).
    """
    check_choice("method", method.replace("_", "-"), list(METHODS))
    method = method.replace("_", "-")
    table = answer_table(answers, truth, task_col=task_col, worker_col=worker_col,
                         label_col=label_col, truth_task_col=truth_task_col,
                         truth_label_col=truth_label_col)
    ann = table.annotations
    model = METHODS[method](seed=seed, **(options or {})).fit(ann)
    predicted = model.labels_
    classes = table.classes
    labels = pd.DataFrame({task_col: ann.item_ids, label_col: classes[predicted]})
    posteriors = pd.DataFrame(model.probas_, columns=[str(c) for c in classes])
    posteriors.insert(0, task_col, ann.item_ids)
    n = ann.labels_per_worker()
    agree = np.bincount(ann.workers, predicted[ann.items] == ann.labels, minlength=ann.n_workers)
    agreement = agree / np.maximum(n, 1)
    if method == "ds":
        diagonal = np.einsum("wcc->wc", model.errors_)
        skill = diagonal @ model.priors_
    elif method == "mv":
        skill = agreement
    else:
        skill = model.skills_
    workers = pd.DataFrame({worker_col: ann.worker_ids, "n_labels": n,
                            "agreement": agreement, "skill": skill})
    truth_codes = _truth_on(ann.item_ids, table)
    known = truth_codes >= 0
    accuracy = float(np.mean(predicted[known] == truth_codes[known])) if known.any() else None
    if table.truth_tasks is not None:
        on_truth = truth_codes[ann.items] >= 0
        right = np.bincount(ann.workers[on_truth],
                            ann.labels[on_truth] == truth_codes[ann.items][on_truth],
                            minlength=ann.n_workers)
        seen = np.bincount(ann.workers[on_truth], minlength=ann.n_workers)
        workers["truth_accuracy"] = np.where(seen > 0, right / np.maximum(seen, 1), np.nan)
    if method == "ds":
        names = [f"said_{said}_true_{true}" for said in classes for true in classes]
        confusion = pd.DataFrame(model.errors_.reshape(ann.n_workers, -1), columns=names)
        workers = pd.concat([workers, confusion], axis=1)
    return AggregateResult(method, labels, posteriors, workers, accuracy, int(known.sum()),
                           model)


# ------------------------------------------------------------------------------------ features
def load_image_folder(folder: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Images of one size in ``folder`` as uint8 [N, C, H, W] (C = 1 when every image is
    grayscale, else 3) and their ids (file names without suffix), sorted by name."""
    from PIL import Image

    folder = Path(folder)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ConfigError(f"features folder {str(folder)!r} holds no images "
                          f"(expected files ending in {list(IMAGE_SUFFIXES)})")
    images = []
    for path in files:
        try:
            with Image.open(path) as image:
                images.append(image.copy())
        except OSError as err:
            raise ConfigError(f"features image {str(path)!r} is not a readable image: "
                              f"{err}") from None
    sizes = {image.size for image in images}
    if len(sizes) > 1:
        odd = next(k for k, image in enumerate(images) if image.size != images[0].size)
        raise ConfigError(f"features folder {str(folder)!r}: image {files[odd].name!r} is "
                          f"{images[odd].size} pixels, {files[0].name!r} is {images[0].size} "
                          "(all images must have one size)")
    gray = all(image.mode in ("L", "1") for image in images)
    arrays = [np.asarray(image.convert("L" if gray else "RGB")) for image in images]
    stacked = np.stack(arrays)
    stacked = stacked[:, None] if gray else stacked.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(stacked), np.array([p.stem for p in files])


def load_features(path: str | Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Features and their task ids (None: the ids are the row numbers) from a ``.npy`` file,
    a ``.npz`` with ``features`` (or ``X``, or its one array) and optionally ``ids``, or a
    folder of images (``load_image_folder``)."""
    path = Path(path)
    if path.is_dir():
        return load_image_folder(path)
    if not path.is_file():
        raise ConfigError(f"features {str(path)!r} does not exist (expected a .npy or .npz file "
                          "or a folder of images)")
    if path.suffix.lower() not in (".npy", ".npz"):
        raise ConfigError(f"features {str(path)!r}: suffix {path.suffix!r} is not .npy or .npz "
                          "(or give a folder of images)")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ConfigError(f"features {str(path)!r} is not a readable .npy / .npz file: "
                          f"{str(err).splitlines()[0]}") from None
    if isinstance(loaded, np.ndarray):
        return loaded, None
    with loaded:
        names = [n for n in loaded.files if n != "ids"]
        key = next((n for n in ("features", "X") if n in names), None)
        if key is None and len(names) != 1:
            raise ConfigError(f"features {str(path)!r} holds arrays {loaded.files}; expected "
                              "'features' (or 'X') and optionally 'ids'")
        features = loaded[key or names[0]]
        ids = loaded["ids"] if "ids" in loaded.files else None
    return features, ids


def _check_features(features: np.ndarray, ids: np.ndarray | None, model: str,
                    source: str) -> np.ndarray:
    """float32 features: uint8 divided by 255, other numbers standardised per feature."""
    features = np.asarray(features)
    if features.ndim < 2 or len(features) == 0:
        raise ConfigError(f"{source}: shape {features.shape}; expected [N, ...] with N >= 1 rows")
    if features.dtype.kind not in "biuf":
        raise ConfigError(f"{source}: dtype {features.dtype} is not numeric")
    if ids is not None:
        if ids.shape != (len(features),):
            raise ConfigError(f"{source}: ids has shape {ids.shape}, expected ({len(features)},)"
                              " (one id per row)")
        if len(np.unique(ids)) != len(ids):
            raise ConfigError(f"{source}: ids are not unique (one id per row)")
    if model == "cnn" and features.ndim == 3:
        features = features[:, None]
    if model == "cnn" and (features.ndim != 4 or min(features.shape[2:]) < 4):
        raise ConfigError(f"{source}: model='cnn' needs images [N, H, W] or [N, C, H, W] with "
                          f"H, W >= 4, got {features.shape} (use model='mlp')")
    if features.dtype == np.uint8:
        return (features / 255.0).astype(np.float32)
    values = features.astype(np.float64)
    bad = ~np.isfinite(values.reshape(len(values), -1)).all(axis=1)
    if bad.any():
        raise ConfigError(f"{source}: row {int(np.argmax(bad))} holds NaN or infinite values "
                          f"(rows with them: {int(bad.sum())}; features must be finite)")
    std = values.std(axis=0)
    values = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return values.astype(np.float32)


def _rows_of(tasks: np.ndarray, ids: np.ndarray | None, n_rows: int, source: str,
             what: str) -> np.ndarray:
    """Feature row of each task id (module docstring)."""
    if ids is None:
        text = pd.Series(tasks).astype(str)
        numeric = text.str.fullmatch(r"\d+")
        rows = np.where(numeric, pd.to_numeric(text.where(numeric, "-1")), -1).astype(np.int64)
        bad = (rows < 0) | (rows >= n_rows)
        if bad.any():
            raise ConfigError(f"{source}: task {_show(tasks[int(np.argmax(bad))])} is not a row of "
                              f"the features (without ids, {what} task ids are row numbers "
                              f"0..{n_rows - 1})")
        return rows
    lookup = {str(v): r for r, v in enumerate(ids)}
    rows = np.array([lookup.get(str(t), -1) for t in tasks], dtype=np.int64)
    if (rows < 0).any():
        raise ConfigError(f"{source}: task {_show(tasks[int(np.argmax(rows < 0))])} is not among "
                          f"the features' ids (e.g. {ids[:3].tolist()})")
    return rows


@dataclass
class MBEMTableResult:
    """MBEM on user data: ``predictions`` (task, label, one probability column per class) for
    every feature row, ``posteriors`` of the annotated tasks (task + one column per class), the
    accuracy of the model and of majority vote on the truth tasks, and one record per round."""

    predictions: pd.DataFrame
    posteriors: pd.DataFrame
    metrics: dict[str, Any]
    rounds: list[dict[str, float]]
    model: Any = field(repr=False, default=None)


def mbem_table(features: np.ndarray, answers: pd.DataFrame | str | Path, truth: Any = None, *,
               ids: np.ndarray | None = None, settings: ClassifierTraining | None = None,
               rounds: int = 2, val_fraction: float = 0.1, seed: int = 0,
               task_col: str = "task", worker_col: str = "worker", label_col: str = "label",
               truth_task_col: str = "task", truth_label_col: str = "label",
               source: str = "features") -> MBEMTableResult:
    """MBEM (``raysign.crowd.mbem``) on ``features`` [N, ...] (row ``r`` is task ``ids[r]``, or
    task ``r`` without ids) and an answer table. The classifier trains on the annotated rows
    (``val_fraction`` of them held out for model selection) and predicts every row. With
    truth, ``metrics`` holds ``accuracy`` (model, all truth rows), ``accuracy_annotated`` and
    ``accuracy_unannotated`` (truth rows with / without answers) and ``mv_accuracy``
    (majority vote, annotated truth rows)."""
    settings = settings or ClassifierTraining()
    check_range("rounds", rounds, 0, 20)
    check_range("val_fraction", val_fraction, 0.0, 0.5, low_open=True)
    x = _check_features(features, ids, settings.model, source)
    allowed = None if ids is None else np.asarray(ids).astype(str)
    table = answer_table(answers, truth, task_col=task_col, worker_col=worker_col,
                         label_col=label_col, truth_task_col=truth_task_col,
                         truth_label_col=truth_label_col,
                         truth_tasks_from=allowed if allowed is not None else
                         np.arange(len(x)).astype(str))
    ann = table.annotations
    if ann.n_items < 2:
        raise ConfigError("answers: MBEM needs answers on at least 2 tasks, got "
                          f"{ann.n_items}")
    rows = _rows_of(ann.item_ids, ids, len(x), "answers", "answer")
    order = np.random.default_rng(seed).permutation(ann.n_items)
    n_val = max(1, int(round(val_fraction * ann.n_items)))
    result = mbem(ann, x[rows], np.sort(order[n_val:]), np.sort(order[:n_val]), settings,
                  rounds=rounds, seed=seed)
    probas = predict_proba(result.model.model, x)
    classes = table.classes
    row_ids = np.arange(len(x)) if ids is None else np.asarray(ids)
    predictions = pd.DataFrame({task_col: row_ids, label_col: classes[probas.argmax(1)]})
    for k, name in enumerate(classes):
        predictions[str(name)] = probas[:, k]
    posteriors = pd.DataFrame(result.probas, columns=[str(c) for c in classes])
    posteriors.insert(0, task_col, ann.item_ids)
    metrics: dict[str, Any] = {"rows": len(x), "annotated": ann.n_items,
                               "answers": len(ann), "classes": len(classes)}
    if table.truth_tasks is not None:
        codes = table.truth_codes
        truth_rows = _rows_of(table.truth_tasks, ids, len(x), "truth", "truth")
        right = probas.argmax(1)[truth_rows] == codes
        annotated = np.isin(truth_rows, rows)
        metrics["accuracy"] = float(right.mean())
        metrics["truth_rows"] = len(truth_rows)
        if annotated.any():
            metrics["accuracy_annotated"] = float(right[annotated].mean())
            mv = MajorityVote(seed=seed).fit_predict(ann)
            mv_of_row = dict(zip(rows.tolist(), mv.tolist(), strict=True))
            mv_right = [mv_of_row[r] == c for r, c in
                        zip(truth_rows[annotated], codes[annotated], strict=True)]
            metrics["mv_accuracy"] = float(np.mean(mv_right))
        if (~annotated).any():
            metrics["accuracy_unannotated"] = float(right[~annotated].mean())
    return MBEMTableResult(predictions, posteriors, metrics, result.rounds, result.model.model)
