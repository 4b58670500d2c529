"""Crowd labels on the user's own tables and features (``raysign.crowd.tables``, ``raysign crowd
aggregate --input`` and ``raysign crowd mbem``): outputs against counting by hand, the label
mapping against a renamed copy of the same table, the docs' "On your own data" section run as
written, and every refused input with its one-line message."""

from __future__ import annotations

import json
import re
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from raysign.cli import main
from raysign.config import ConfigError
from raysign.crowd.mbem import ClassifierTraining
from raysign.crowd.tables import (
    _check_features,
    aggregate_table,
    load_features,
    load_image_folder,
    mbem_table,
    read_table,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DOCS = Path(__file__).resolve().parents[1] / "docs" / "crowd.md"


def random_table(seed: int = 0, tasks: int = 30, workers: int = 6, per_task: int = 3,
                 names=("cat", "dog", "eel")) -> tuple[pd.DataFrame, dict[str, str]]:
    """Answers (task ids text, worker ids ints, text labels) and the truth of every task."""
    rng = np.random.default_rng(seed)
    truth = {f"t{t:02d}": names[rng.integers(len(names))] for t in range(tasks)}
    rows = []
    for task, label in truth.items():
        for worker in rng.choice(workers, per_task, replace=False):
            said = label if rng.random() < 0.7 else names[rng.integers(len(names))]
            rows.append((task, int(worker), said))
    return pd.DataFrame(rows, columns=["task", "worker", "label"]), truth


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message, message
    return message


# ------------------------------------------------------------------------------ aggregation
def test_majority_vote_table_matches_counting_by_hand():
    answers, truth = random_table()
    gold = pd.Series({t: truth[t] for t in list(truth)[:20]})
    result = aggregate_table(answers, "mv", gold)
    votes = {t: Counter(g["label"]) for t, g in answers.groupby("task")}
    labels = dict(zip(result.labels["task"], result.labels["label"], strict=True))
    for task, count in votes.items():
        top = max(count.values())
        assert count[labels[task]] == top  # ties broken at random among the top labels
        row = result.posteriors.set_index("task").loc[task]
        for name in ("cat", "dog", "eel"):
            assert row[name] == pytest.approx(count[name] / sum(count.values()))
    assert result.accuracy == pytest.approx(np.mean([labels[t] == gold[t] for t in gold.index]))
    workers = result.workers.set_index("worker")
    for worker, group in answers.groupby("worker"):
        agree = np.mean([labels[t] == lab for t, lab in zip(group["task"], group["label"],
                                                             strict=True)])
        assert workers.loc[worker, "agreement"] == pytest.approx(agree)
        assert workers.loc[worker, "n_labels"] == len(group)
        on_gold = group[group["task"].isin(gold.index)]
        right = np.mean([gold[t] == lab for t, lab in zip(on_gold["task"], on_gold["label"],
                                                          strict=True)])
        assert workers.loc[worker, "truth_accuracy"] == pytest.approx(right)


@pytest.mark.parametrize("method", ["wmv", "one-coin", "ds"])
def test_renaming_the_labels_renames_the_outputs(method):
    """Text labels and the same labels as ints in another sort order: the same posteriors
    under the renaming (the class order and the mapping back are the table layer's). Tasks
    whose majority is tied are dropped: ties are broken at random by column position."""
    answers, _ = random_table(seed=1, tasks=60)
    counts = answers.groupby("task")["label"].agg(lambda v: sorted(Counter(v).values())[-2:])
    clear_majority = counts[counts.map(lambda top: len(top) == 1 or top[0] < top[1])].index
    answers = answers[answers["task"].isin(clear_majority)]
    rename = {"cat": 7, "dog": 3, "eel": 5}
    as_ints = answers.assign(label=answers["label"].map(rename))
    text = aggregate_table(answers, method)
    ints = aggregate_table(as_ints, method)
    for name, code in rename.items():
        np.testing.assert_allclose(text.posteriors[name], ints.posteriors[str(code)], atol=1e-9)
    clear = text.posteriors[["cat", "dog", "eel"]].max(axis=1) > 0.6
    assert (text.labels["label"].map(rename)[clear] == ints.labels["label"][clear]).all()


def test_dawid_skene_worker_table_finds_the_perfect_worker_and_the_spammer():
    rng = np.random.default_rng(2)
    truth = rng.choice(["no", "yes"], 40)
    rows = []
    for t, label in enumerate(truth):
        rows += [(t, "perfect", label), (t, "also-good", label if rng.random() < 0.9 else
                                         ("no" if label == "yes" else "yes")),
                 (t, "always-yes", "yes")]
    result = aggregate_table(pd.DataFrame(rows, columns=["task", "worker", "label"]), "ds")
    assert (result.labels["label"].to_numpy() == truth).all()
    workers = result.workers.set_index("worker")
    assert workers.loc["perfect", "said_yes_true_yes"] > 0.97
    assert workers.loc["perfect", "said_no_true_no"] > 0.97
    assert workers.loc["always-yes", "said_yes_true_no"] > 0.97
    assert workers.loc["perfect", "skill"] > 0.97 > 0.6 > workers.loc["always-yes", "skill"]
    one_step = aggregate_table(pd.DataFrame(rows, columns=["task", "worker", "label"]), "ds",
                               options={"n_iter": 1, "alpha": 0.5})
    assert one_step.model.n_iter_ == 1 and one_step.model.alpha == 0.5


def test_cli_reads_tsv_and_sniffed_tables_with_other_column_names(tmp_path, capsys):
    answers, truth = random_table(seed=3)
    table = answers.rename(columns={"task": "item", "worker": "annotator", "label": "answer"})
    table.to_csv(tmp_path / "answers.tsv", sep="\t", index=False)
    table.to_csv(tmp_path / "answers.txt", sep=";", index=False)
    gold = pd.DataFrame({"item": list(truth), "gold": list(truth.values())})
    gold.to_csv(tmp_path / "truth.csv", index=False)
    columns = ["--task-col", "item", "--worker-col", "annotator", "--label-col", "answer",
               "--truth-task-col", "item", "--truth-label-col", "gold"]
    expected = aggregate_table(answers, "mv", pd.Series(truth)).accuracy
    for name in ("answers.tsv", "answers.txt"):
        runs = tmp_path / name.replace(".", "-")
        assert main(["crowd", "aggregate", "--input", str(tmp_path / name), "--truth",
                     str(tmp_path / "truth.csv"), "--method", "mv", "--results-dir", str(runs),
                     *columns]) == 0
        out = capsys.readouterr().out
        assert f"accuracy {expected:.4f} on 30 truth tasks" in out
        folder = next((runs / "crowd-aggregate").iterdir())
        labels = pd.read_csv(folder / "labels.csv")
        assert list(labels.columns) == ["item", "answer"] and len(labels) == 30
        votes = {t: Counter(g["label"]) for t, g in answers.groupby("task")}
        for task, label in zip(labels["item"], labels["answer"], strict=True):
            assert votes[task][label] == max(votes[task].values())
        assert list(pd.read_csv(folder / "posteriors.csv").columns) == ["item", "cat", "dog",
                                                                         "eel"]
        assert len(pd.read_csv(folder / "workers.csv")) == 6
        record = json.loads((folder / "metrics.jsonl").read_text().splitlines()[-1])
        assert record["accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("sep", [";", "|", " ", "\t"])
def test_separator_is_sniffed_when_the_suffix_does_not_say(tmp_path, sep):
    answers, _ = random_table(seed=8, tasks=5)
    answers.to_csv(tmp_path / "answers.dat", sep=sep, index=False)
    read = read_table(tmp_path / "answers.dat")
    assert list(read.columns) == ["task", "worker", "label"]
    assert read.astype(str).values.tolist() == answers.astype(str).values.tolist()


def test_datasets_mode_still_aggregates_the_real_sets(tmp_path, capsys):
    assert main(["crowd", "aggregate", "--datasets", "bluebirds", "--results-dir",
                 str(tmp_path)]) == 0
    rows = pd.read_csv(next((tmp_path / "crowd-aggregate").iterdir()) / "accuracy.csv")
    ds = rows[rows["method"] == "ds"]["accuracy"].item()
    assert ds == pytest.approx(97 / 108)  # docs/crowd.md: 0.8981 on bluebirds


# ------------------------------------------------------------------------------------ MBEM
def clustered_features(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated classes in 5 dimensions, and each row's class."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(0, 2, n)
    return rng.normal(size=(n, 5)) + 3.0 * classes[:, None], classes


def test_mbem_table_maps_task_ids_to_rows_and_predicts_unannotated_rows():
    features, classes = clustered_features(60, 4)
    rng = np.random.default_rng(5)
    ids = np.array([f"id-{v}" for v in rng.permutation(1000)[:60]])  # not in row order
    names = np.array(["down", "up"])
    rows = []
    for r in range(40):
        rows += [(ids[r], "good", names[classes[r]]),
                 (ids[r], "fair", names[classes[r]] if rng.random() < 0.8 else
                  names[1 - classes[r]]),
                 (ids[r], "spammer", names[rng.integers(2)])]
    answers = pd.DataFrame(rows, columns=["task", "worker", "label"])
    truth = pd.DataFrame({"task": ids, "label": names[classes]})
    result = mbem_table(features, answers, truth, ids=ids, rounds=1, seed=0,
                        settings=ClassifierTraining(hidden=16, epochs=30, batch_size=16,
                                                    lr=1e-2))
    assert list(result.predictions["task"]) == list(ids)
    assert result.metrics["annotated"] == 40 and result.metrics["rows"] == 60
    assert result.metrics["accuracy_unannotated"] >= 0.9
    assert np.mean(result.predictions["label"].to_numpy() == names[classes]) >= 0.9
    assert set(result.predictions.columns) == {"task", "label", "down", "up"}


def test_cli_mbem_on_npy_uses_row_numbers_as_task_ids(tmp_path, capsys):
    features, classes = clustered_features(50, 6)
    np.save(tmp_path / "X.npy", features)
    rows = [(r, w, int(classes[r])) for r in range(30) for w in ("a", "b")]
    pd.DataFrame(rows, columns=["task", "worker", "label"]).to_csv(tmp_path / "answers.csv",
                                                                    index=False)
    pd.DataFrame({"task": range(50), "label": classes}).to_csv(tmp_path / "truth.csv",
                                                             index=False)
    assert main(["crowd", "mbem", "--features", str(tmp_path / "X.npy"), "--annotations",
                 str(tmp_path / "answers.csv"), "--truth", str(tmp_path / "truth.csv"),
                 "--epochs", "20", "--rounds", "1", "--hidden", "16", "--batch-size", "16",
                 "--lr", "0.01", "--results-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert float(re.search(r"^accuracy_unannotated ([0-9.]+)", out, re.M).group(1)) >= 0.9
    folder = next((tmp_path / "runs" / "crowd-mbem").iterdir())
    predictions = pd.read_csv(folder / "predictions.csv")
    assert list(predictions["task"]) == list(range(50))
    assert list(predictions.columns) == ["task", "label", "0", "1"]
    assert len(pd.read_csv(folder / "posteriors.csv")) == 30
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    assert [r.get("round") for r in records] == [0, 1, None]  # one per round, then accuracies
    assert {"accuracy", "accuracy_annotated", "accuracy_unannotated"} <= set(records[-1])


def test_features_uint8_are_scaled_and_other_numbers_standardised():
    pixels = np.array([[0, 255], [51, 102]], dtype=np.uint8)
    np.testing.assert_allclose(_check_features(pixels, None, "mlp", "f"),
                               [[0.0, 1.0], [0.2, 0.4]], rtol=1e-6)
    values = np.array([[1.0, 5.0], [3.0, 5.0], [5.0, 5.0]])
    expected = [[-1.2247449, 0.0], [0.0, 0.0], [1.2247449, 0.0]]  # (x - 3) / sqrt(8 / 3)
    np.testing.assert_allclose(_check_features(values, None, "mlp", "f"), expected, rtol=1e-6)
    assert _check_features(np.zeros((2, 8, 8)), None, "cnn", "f").shape == (2, 1, 8, 8)


def test_image_folder_loads_as_written_and_trains_the_cnn(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
    for k, image in enumerate(pixels):
        Image.fromarray(image, mode="L").save(tmp_path / f"pic{k}.png")
    features, ids = load_image_folder(tmp_path)
    assert features.shape == (6, 1, 8, 8) and list(ids) == [f"pic{k}" for k in range(6)]
    np.testing.assert_array_equal(features[:, 0], pixels)
    assert load_features(tmp_path)[0].shape == (6, 1, 8, 8)
    colour = tmp_path / "colour"
    colour.mkdir()
    rgb = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    for k, image in enumerate(rgb):
        Image.fromarray(image, mode="RGB").save(colour / f"c{k}.png")
    np.testing.assert_array_equal(load_image_folder(colour)[0], rgb.transpose(0, 3, 1, 2))
    answers = pd.DataFrame({"task": [f"pic{k}" for k in range(4)], "worker": "w",
                            "label": ["a", "b", "a", "b"]})
    result = mbem_table(features, answers, ids=ids, rounds=0,
                        settings=ClassifierTraining(model="cnn", hidden=8, epochs=1))
    assert len(result.predictions) == 6
    flat_channel = mbem_table(features[:, 0], answers, ids=ids, rounds=0,
                              settings=ClassifierTraining(model="cnn", hidden=8, epochs=1))
    assert len(flat_channel.predictions) == 6  # [N, H, W] images take the CNN too


# ---------------------------------------------------------------------------- refused input
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


GOOD = "task,worker,label\n1,a,x\n1,b,y\n2,a,x\n"
FRAME = pd.DataFrame({"task": [1, 1, 2], "worker": ["a", "b", "a"], "label": ["x", "y", "x"]})


@pytest.mark.parametrize("case, expected", [
    ("missing file", r"answers file '.*nowhere\.csv' does not exist"),
    ("binary file", r"answers file '.*bad\.csv' is not a readable CSV / TSV table"),
    ("misspelled column", r"no column 'label' \(label column\); did you mean 'lable'\?"),
    ("case of a column", r"no column 'label' .*did you mean 'Label'\?"),
    ("header only", r"answers '.*empty\.csv': no answers \(expected one row per answer"),
    ("empty frame", r"answers table: no answers"),
    ("empty cell", r"answers '.*hole\.csv': column 'worker' is empty on line 3"),
    ("numbers and text in a file", r"column 'label' mixes numeric labels \('1'\) and text "
                                   r"labels \('yes'\); labels must be all numbers or all text"),
    ("int and str in a frame", r"column 'label' mixes labels of types int \(1\) and str "
                               r"\('1'\)"),
    ("one class", r"column 'label' holds one class only \('x'\)"),
    ("truth task absent", r"truth '.*truth\.csv': 1 of 2 truth tasks are not tasks of the "
                          r"answers, e.g. \['7'\]"),
    ("truth label type", r"truth '.*truth\.csv': column 'label' holds numbers \(0\) but the "
                         r"answers' 'label' holds text \('x'\)"),
    ("duplicate truth", r"truth table: task 1 appears more than once in column 'task'"),
    ("unknown method", r"method='majority' is not one of \['mv', 'wmv', 'one-coin', 'ds'\]"),
])
def test_bad_tables_are_refused_with_one_line(tmp_path, case, expected):
    truth = None
    method = "ds"
    if case == "missing file":
        answers = tmp_path / "nowhere.csv"
    elif case == "binary file":
        answers = tmp_path / "bad.csv"
        answers.write_bytes(b"\xff\xfe\x00\x81\x9f" * 50)
    elif case == "misspelled column":
        answers = write(tmp_path / "a.csv", GOOD.replace("label", "lable"))
    elif case == "case of a column":
        answers = FRAME.rename(columns={"label": "Label"})
    elif case == "header only":
        answers = write(tmp_path / "empty.csv", "task,worker,label\n")
    elif case == "empty frame":
        answers = FRAME.iloc[:0]
    elif case == "empty cell":
        answers = write(tmp_path / "hole.csv", "task,worker,label\n1,a,x\n1,,y\n")
    elif case == "numbers and text in a file":
        answers = write(tmp_path / "a.csv", "task,worker,label\n1,a,1\n1,b,yes\n")
    elif case == "int and str in a frame":
        answers = FRAME.assign(label=pd.Series([1, "1", 2], dtype=object))
    elif case == "one class":
        answers = FRAME.assign(label="x")
    elif case == "truth task absent":
        answers = write(tmp_path / "a.csv", GOOD)
        truth = write(tmp_path / "truth.csv", "task,label\n1,x\n7,y\n")
    elif case == "truth label type":
        answers = write(tmp_path / "a.csv", GOOD)
        truth = write(tmp_path / "truth.csv", "task,label\n1,0\n")
    elif case == "duplicate truth":
        answers, truth = FRAME, pd.DataFrame({"task": [1, 1], "label": ["x", "y"]})
    else:
        answers, method = FRAME, "majority"
    with pytest.raises(ConfigError) as err:
        aggregate_table(answers, method, truth)
    assert re.search(expected, one_line(err)), str(err.value)


@pytest.mark.parametrize("case, expected", [
    ("task not a row", r"answers: task 9 is not a row of the features \(without ids, answer "
                       r"task ids are row numbers 0\.\.3\)"),
    ("task not an id", r"answers: task 'z' is not among the features' ids"),
    ("truth not a row", r"truth table: 1 of 1 truth tasks are not rows of the features"),
    ("nan features", r"features: row 2 holds NaN or infinite values"),
    ("cnn on flat features", r"model='cnn' needs images \[N, H, W\] or \[N, C, H, W\]"),
    ("duplicate ids", r"features: ids are not unique"),
])
def test_bad_mbem_inputs_are_refused_with_one_line(case, expected):
    features = np.arange(12.0).reshape(4, 3)
    answers = pd.DataFrame({"task": [0, 1, 1], "worker": ["a", "a", "b"],
                            "label": ["x", "y", "y"]})
    ids, truth, settings = None, None, ClassifierTraining(epochs=1)
    if case == "task not a row":
        answers = answers.assign(task=[0, 9, 9])
    elif case == "task not an id":
        ids = np.array(["p", "q", "r", "s"])
        answers = answers.assign(task=["p", "z", "z"])
    elif case == "truth not a row":
        truth = pd.DataFrame({"task": [11], "label": ["x"]})
    elif case == "nan features":
        features[2, 1] = np.nan
    elif case == "cnn on flat features":
        settings = ClassifierTraining(model="cnn", epochs=1)
    else:
        ids = np.array(["p", "q", "p", "s"])
    with pytest.raises(ConfigError) as err:
        mbem_table(features, answers, truth, ids=ids, settings=settings)
    assert re.search(expected, one_line(err)), str(err.value)


def test_unreadable_features_are_refused_with_one_line(tmp_path):
    (tmp_path / "X.npy").write_bytes(b"\x93NUMPY garbage")
    (tmp_path / "X.csv").write_text("1,2\n")
    np.savez(tmp_path / "X.npz", a=np.ones(2), b=np.ones(2))
    for name, expected in [("X.npy", "is not a readable .npy / .npz file"),
                           ("X.csv", "suffix '.csv' is not .npy or .npz"),
                           ("X.npz", "holds arrays ['a', 'b']; expected 'features' (or 'X')"),
                           ("none.npz", "does not exist")]:
        with pytest.raises(ConfigError) as err:
            load_features(tmp_path / name)
        assert expected in one_line(err), str(err.value)


def test_images_of_different_sizes_are_refused(tmp_path):
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    Image.new("L", (8, 9)).save(tmp_path / "b.png")
    with pytest.raises(ConfigError) as err:
        load_features(tmp_path)
    assert "image 'b.png' is (8, 9) pixels, 'a.png' is (8, 8)" in one_line(err)


def test_cli_refuses_bad_input_before_creating_a_run(tmp_path):
    write(tmp_path / "a.csv", GOOD.replace("worker", "wroker"))
    runs = tmp_path / "runs"
    with pytest.raises(SystemExit) as err:
        main(["crowd", "aggregate", "--input", str(tmp_path / "a.csv"), "--results-dir",
              str(runs)])
    message = str(err.value.code)
    assert message.startswith("raysign crowd aggregate: answers '") and "\n" not in message
    assert "did you mean 'wroker'?" in message and not runs.exists()


def test_the_callers_tables_and_features_are_not_modified():
    answers = pd.DataFrame({"task": np.array([0, 0, 1, 1, 2], dtype=object),
                            "worker": ["a", "b", "a", "b", "a"],
                            "label": np.array(["x", "y", "y", "y", "x"], dtype=object)},
                           index=[10, 11, 12, 13, 14])
    truth = pd.Series({0: "x", 1: "y"})
    features = np.arange(15.0).reshape(5, 3)
    before = (answers.copy(deep=True), truth.copy(deep=True), features.copy())
    for method in ("mv", "wmv", "one-coin", "ds"):
        aggregate_table(answers, method, truth)
    mbem_table(features, answers, truth, rounds=1, settings=ClassifierTraining(epochs=1))
    pd.testing.assert_frame_equal(answers, before[0])
    pd.testing.assert_series_equal(truth, before[1])
    np.testing.assert_array_equal(features, before[2])


# ---------------------------------------------------------------------------------- the docs
def own_data_section() -> str:
    text = DOCS.read_text()
    start = text.index("## On your own data")
    return text[start:text.index("\n## ", start + 1)]


def test_docs_own_data_section_runs_as_written(tmp_path, monkeypatch, capsys):
    """The section's CSV blocks become answers.csv and truth.csv, its commands run through
    ``raysign``, its Python blocks run as written, in one namespace."""
    section = own_data_section()
    blocks = re.findall(r"```(\w+)\n(.*?)```", section, re.S)
    tables = [body for kind, body in blocks if kind == "csv"]
    assert len(tables) == 2
    monkeypatch.chdir(tmp_path)
    Path("answers.csv").write_text(tables[0])
    Path("truth.csv").write_text(tables[1])
    cat = np.array([1, 0, 1, 0, 1, 0])  # img1 .. img6: cat, dog, cat, dog, cat, dog
    features = np.random.default_rng(0).normal(size=(6, 4)) + 3.0 * cat[:, None]
    np.savez("features.npz", features=features, ids=np.array([f"img{k}" for k in range(1, 7)]))
    commands = [line for kind, body in blocks if kind == "sh" for line in body.splitlines()]
    assert [c.split()[:3] for c in commands] == [["raysign", "crowd", "aggregate"],
                                                 ["raysign", "crowd", "mbem"]]
    for command in commands:
        assert main(shlex.split(command)[1:]) == 0
    out = capsys.readouterr().out
    assert "accuracy 1.0000 on 3 truth tasks" in out
    aggregate_run = next(Path("runs/crowd-aggregate").iterdir())
    for name in ("labels.csv", "posteriors.csv", "workers.csv", "metrics.jsonl"):
        assert (aggregate_run / name).is_file()
    assert list(pd.read_csv(aggregate_run / "posteriors.csv").columns) == ["task", "cat", "dog"]
    workers = pd.read_csv(aggregate_run / "workers.csv")
    assert {"n_labels", "agreement", "skill", "truth_accuracy",
            "said_cat_true_dog"} <= set(workers.columns)
    mbem_run = next(Path("runs/crowd-mbem").iterdir())
    assert len(pd.read_csv(mbem_run / "predictions.csv")) == 6
    namespace: dict = {}
    python = [body for kind, body in blocks if kind == "python"]
    assert len(python) == 2
    exec(compile(python[0], str(DOCS), "exec"), namespace)
    assert namespace["result"].accuracy == 1.0
    assert list(namespace["result"].posteriors.columns) == ["task", "cat", "dog"]
    exec(compile(python[1], str(DOCS), "exec"), namespace)
    assert list(namespace["result"].predictions.columns) == ["task", "label", "cat", "dog"]
    assert len(namespace["result"].predictions) == 6
