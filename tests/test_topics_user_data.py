"""Spectral LDA on the user's own corpus (issue 19): every input format read into the counts a
plain Python word count gives, ``raysign topics --input`` recovering planted topics with the
closed-form perplexity, ``--transform`` on new documents, the sweep reading its trial's input,
docs/topics.md's Python block run as written, and every bad input stopped in one line before
any work."""
import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from raysign import cli
from raysign.topics.corpus import CorpusError, read_corpus

DOCS_PAGE = Path(__file__).resolve().parents[1] / "docs" / "topics.md"
# Three topics of 8 words each; every document draws 30 words from one of them, joined by the
# stop words "the" and "and". A topic is uniform over its 8 words, so a model that recovers
# the topics scores a held-out perplexity of 8 (closed form).
GROUPS = [["apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "plum"],
          ["engine", "wheel", "brake", "clutch", "piston", "gear", "tyre", "exhaust"],
          ["violin", "piano", "cello", "flute", "drum", "guitar", "harp", "oboe"]]
N_DOCS = 60
SHORT_TEXT = "Apple, the plum."  # under 3 words: in doc_topics.csv, not in the fit
NEW_TEXTS = ["apple banana cherry plum plum", "piano violin drum harp harp"]


def planted_texts(seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" the and ".join(rng.choice(GROUPS[d % 3], size=30)) for d in range(N_DOCS)]


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory) -> Path:
    """my_texts/ (one file per document, the group of doc i is i % 3; then more/short.txt, a
    document of 2 words, and a hidden file that is no document), corpus.csv (the 60 planted
    texts in column ``text``), new_texts.csv."""
    root = tmp_path_factory.mktemp("user_corpus")
    (root / "my_texts").mkdir()
    texts = planted_texts()
    for d, text in enumerate(texts):
        (root / "my_texts" / f"doc{d:03d}.txt").write_text(text)
    (root / "my_texts" / "more").mkdir()
    (root / "my_texts" / "more" / "short.txt").write_text(SHORT_TEXT)
    (root / "my_texts" / ".notes").write_text("zebra zebra zebra")
    pd.DataFrame({"id": range(N_DOCS), "text": texts}).to_csv(root / "corpus.csv", index=False)
    pd.DataFrame({"text": NEW_TEXTS}).to_csv(root / "new_texts.csv", index=False)
    (root.parent / f"{root.name}.stamp.json").write_text(json.dumps(file_stamps(root)))
    return root


def file_stamps(root: Path) -> dict[str, list]:
    """{relative path: [mtime_ns, sha256]} of the user's files (not the run folders)."""
    return {p.relative_to(root).as_posix(): [p.stat().st_mtime_ns,
                                             hashlib.sha256(p.read_bytes()).hexdigest()]
            for p in sorted(root.rglob("*"))
            if p.is_file() and not {"runs", "bad"} & set(p.relative_to(root).parts)}


def plain_counts(texts: list[str], drop=("the", "and")) -> tuple[np.ndarray, list[str]]:
    """Dense counts over the sorted words, by str.split (the planted words are plain)."""
    counters = [Counter(w for w in t.lower().split() if w not in drop) for t in texts]
    vocab = sorted(set().union(*counters))
    return np.array([[c[w] for w in vocab] for c in counters]), vocab


def test_folder_and_csv_give_the_plain_word_counts(corpus_dir):
    from raysign.topics.corpus import load_corpus

    expected, words = plain_counts(planted_texts())
    for path, options in [(corpus_dir / "corpus.csv", {"text_col": "text"}),
                          (corpus_dir / "corpus.csv", {"stop_words": "english"})]:
        X, vocab = read_corpus(path, **options)
        assert vocab == words and X.dtype == np.int64
        np.testing.assert_array_equal(X.toarray(), expected)
    folder = load_corpus(corpus_dir / "my_texts")
    expected, words = plain_counts(planted_texts() + ["apple plum"])
    assert folder.vocab == words
    np.testing.assert_array_equal(folder.counts.toarray(), expected)
    assert folder.names == [f"doc{d:03d}.txt" for d in range(N_DOCS)] + ["more/short.txt"]


def test_document_frequency_limits_and_stop_words_prune_as_counted(tmp_path):
    texts = ["zebra apple apple the", "apple banana the", "banana cherry the", "cherry the"]
    (tmp_path / "t.tsv").write_text("text\n" + "\n".join(texts) + "\n")
    # "the" is in 4 of 4 documents: max_df 0.9 drops it; zebra is in 1: min_df 2 drops it.
    _, vocab = read_corpus(tmp_path / "t.tsv", stop_words="none", min_df=2, max_df=0.9)
    assert vocab == ["apple", "banana", "cherry"]
    _, vocab = read_corpus(tmp_path / "t.tsv", stop_words="none", max_df=3)
    assert vocab == ["apple", "banana", "cherry", "zebra"]
    X, vocab = read_corpus(tmp_path / "t.tsv", max_features=2)
    assert vocab == ["apple", "banana"] and X.toarray().tolist() == [[2, 0], [1, 1], [0, 1],
                                                                     [0, 0]]


def write_count_formats(folder: Path, counts: np.ndarray, vocab: list[str]) -> None:
    folder.mkdir()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    lines = []
    for row in counts:
        ids = np.flatnonzero(row)
        lines.append(" ".join([str(len(ids))] + [f"{i}:{row[i]}" for i in ids]))
    (folder / "corpus.ldac").write_text("\n".join(lines) + "\n")
    sp.save_npz(folder / "corpus.npz", sp.csr_matrix(counts))


def test_ldac_and_npz_read_every_document_with_the_vocabulary_beside_them(tmp_path):
    counts = np.array([[2, 0, 1, 0], [0, 0, 0, 0], [1, 3, 0, 5]])
    vocab = ["alpha", "beta", "gamma", "delta"]
    write_count_formats(tmp_path / "c", counts, vocab)
    for name in ("corpus.ldac", "corpus.npz"):
        X, words = read_corpus(tmp_path / "c" / name)
        assert words == vocab
        np.testing.assert_array_equal(X.toarray(), counts)  # the empty document kept
    other = tmp_path / "elsewhere.txt"
    other.write_text("\n".join(vocab) + "\n")
    X, words = read_corpus(tmp_path / "c" / "corpus.npz", vocab_file=other)
    assert words == vocab


def test_new_documents_are_counted_on_the_fitted_vocabulary(tmp_path):
    fitted = ["apple", "banana", "cherry"]
    (tmp_path / "new.csv").write_text("text\n\"banana kiwi banana\"\napple\n")
    X, words = read_corpus(tmp_path / "new.csv", vocabulary=fitted)
    assert words == fitted and X.toarray().tolist() == [[0, 2, 0], [1, 0, 0]]
    # An .npz over another vocabulary: columns moved by word, unknown words dropped.
    write_count_formats(tmp_path / "n", np.array([[4, 1, 2], [0, 3, 0]]),
                        ["cherry", "kiwi", "apple"])
    X, words = read_corpus(tmp_path / "n" / "corpus.npz", vocabulary=fitted)
    assert X.toarray().tolist() == [[2, 0, 4], [0, 0, 0]]


@pytest.fixture(scope="module")
def cli_run(corpus_dir):
    out = corpus_dir / "runs"
    code = cli.main(["topics", "--input", str(corpus_dir / "my_texts"), "--k", "3",
                     "--chunks", "1", "--top", "8", "--results-dir", str(out),
                     "--transform", str(corpus_dir / "new_texts.csv")])
    assert code == 0
    return next((out / "topics").iterdir())


def topic_of_group(topic_word: pd.DataFrame) -> list[int]:
    """For each planted group, the topic whose 8 most probable words are exactly it."""
    found = []
    for group in GROUPS:
        matches = [i for i in range(3) if set(topic_word.nlargest(8, f"topic_{i}")["word"])
                   == set(group)]
        assert len(matches) == 1, (group, topic_word)
        found.append(matches[0])
    return found


def test_cli_recovers_the_planted_topics_and_the_closed_form_perplexity(cli_run):
    [record] = [json.loads(line) for line in (cli_run / "metrics.jsonl").read_text().splitlines()]
    assert (record["docs"], record["words"], record["dropped"]) == (N_DOCS + 1, 24, 1)
    assert (record["train_docs"], record["heldout_docs"]) == (54, 6)
    # The true model's perplexity is 8 (uniform over 8 words); uniform over all 24 gives 24.
    assert 8.0 <= record["heldout_perplexity"] < 8.5
    assert record["npmi"] > 0 and np.isfinite(record["umass"])
    topic_word = pd.read_csv(cli_run / "topic_word.csv")
    np.testing.assert_allclose(topic_word.iloc[:, 1:].sum(0), 1.0, rtol=1e-9)
    topics = topic_of_group(topic_word)
    with open(cli_run / "topics.csv") as fh:
        for row in csv.DictReader(fh):
            group = topics.index(int(row["topic"]))
            assert set(row["words"].split()) == set(GROUPS[group])
    assert (cli_run / "vocab.txt").read_text().split() == list(topic_word["word"])


def test_cli_doc_topics_put_every_document_in_its_planted_topic(cli_run):
    topics = topic_of_group(pd.read_csv(cli_run / "topic_word.csv"))
    theta = pd.read_csv(cli_run / "doc_topics.csv")
    assert list(theta["document"]) == [f"doc{d:03d}.txt" for d in range(N_DOCS)] + \
        ["more/short.txt"]
    proportions = theta.iloc[:, 1:].to_numpy()
    np.testing.assert_allclose(proportions.sum(1), 1.0, rtol=1e-9)
    assert list(proportions.argmax(1)) == [topics[d % 3] for d in range(N_DOCS)] + [topics[0]]
    assert proportions[:N_DOCS].max(1).min() > 0.9
    new = pd.read_csv(cli_run / "new_doc_topics.csv")
    assert list(new["document"]) == [0, 1]
    assert list(new.iloc[:, 1:].to_numpy().argmax(1)) == [topics[0], topics[2]]


def test_sweep_trial_reads_the_input_set_on_the_command_line(corpus_dir, cli_run, tmp_path,
                                                             monkeypatch):
    from raysign.actors.sweep import fixed_entries
    from raysign.config import config_from_mapping
    from raysign.topics.config import TopicsConfig
    from raysign.tune_configs.topics import PATH_FIELDS, evaluate

    monkeypatch.chdir(corpus_dir)
    fixed = fixed_entries(["input=my_texts", "text_col=text", "min_df=1"], PATH_FIELDS)
    assert fixed == {"input": str(corpus_dir / "my_texts"), "text_col": "text", "min_df": 1}
    monkeypatch.chdir(tmp_path)  # a trial runs in its own folder
    scores = evaluate(config_from_mapping(TopicsConfig, {"k": 3, "alpha0": 1.0, **fixed}))
    [record] = [json.loads(line) for line in (cli_run / "metrics.jsonl").read_text().splitlines()]
    for name in ("heldout_perplexity", "umass", "npmi"):
        np.testing.assert_allclose(scores[name], record[name], rtol=1e-9)


def docs_example() -> str:
    [code] = re.findall(r"<!-- topics-example -->\s*```python\n(.*?)```", DOCS_PAGE.read_text(),
                        flags=re.DOTALL)
    return code


def test_docs_python_example_runs_as_written(corpus_dir, monkeypatch, capsys):
    monkeypatch.chdir(corpus_dir)
    namespace = {"__name__": "__main__"}
    exec(compile(docs_example(), "docs/topics.md example", "exec"), namespace)
    theta, theta_new = namespace["theta"], namespace["theta_new"]
    assert theta.shape == (N_DOCS + 1, 3) and theta_new.shape == (2, 3)
    np.testing.assert_allclose(theta.sum(1), 1.0, rtol=1e-9)
    printed = capsys.readouterr().out.splitlines()
    top = eval(printed[0])  # the printed top words: each topic's 5 are from one group
    assert sorted(next(g for g, words in enumerate(GROUPS) if set(t) <= set(words))
                  for t in top) == [0, 1, 2]
    assert 8.0 <= eval(printed[1])["heldout_perplexity"] < 8.5


def bad_inputs(root: Path) -> list[tuple[str, list[str], str]]:
    """(case, raysign topics arguments, the message expected) for every bad input."""
    (root / "bad").mkdir()
    bad = root / "bad"
    (bad / "garbage.npz").write_bytes(b"not a zip file at all")
    (bad / "vocab.txt").write_text("alpha\nbeta\n")
    (bad / "latin1").mkdir()
    (bad / "latin1" / "a.txt").write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (bad / "corpus.json").write_text("{}")
    (bad / "stop.csv").write_text("text\nthe and of\nit is the\n")
    sp.save_npz(bad / "wide.npz", sp.csr_matrix(np.ones((4, 3), dtype=np.int64)))
    (bad / "far.ldac").write_text("2 0:1 5:2\n")
    (bad / "novocab").mkdir()
    (bad / "novocab" / "c.ldac").write_text("1 0:3\n")
    texts = str(root / "my_texts")
    return [
        ("unreadable file", ["--input", str(bad / "garbage.npz")],
         r"garbage.npz: not a scipy sparse matrix file \(scipy.sparse.save_npz; ValueError"),
        ("not UTF-8", ["--input", str(bad / "latin1")], r"a.txt: not UTF-8 text \(byte 3\)"),
        ("unknown format", ["--input", str(bad / "corpus.json")],
         r"input='.*corpus.json' has an unknown corpus format '.json'; valid: a folder of text"),
        ("missing input", ["--input", str(bad / "nope.csv")],
         r"input='.*nope.csv' does not exist \(a folder of text files"),
        ("misspelled column", ["--input", str(root / "corpus.csv"), "--text-col", "txt"],
         r"corpus.csv: no column 'txt' \(--text-col\); columns are \['id', 'text'\]; "
         r"did you mean 'text'\?"),
        ("only stop words", ["--input", str(bad / "stop.csv")],
         r"stop.csv: --stop-words english removed every word of its 2 documents; use "
         r"--stop-words none"),
        ("min-df too high", ["--input", texts, "--min-df", "100"],
         r"my_texts: --min-df 100 and --max-df 1 removed every word of its 61 documents \(the "
         r"24 words left after stop words are each in \d+ to 21 documents\)"),
        ("vocabulary size", ["--input", str(bad / "wide.npz")],
         r"wide.npz: 3 columns but the vocabulary .*vocab.txt has 2 words"),
        ("word id beyond vocabulary", ["--input", str(bad / "far.ldac")],
         r"far.ldac: line 1 has word id 5, beyond the vocabulary's 2 words \(ids 0 to 1\)"),
        ("no vocabulary", ["--input", str(bad / "novocab" / "c.ldac")],
         r"c.ldac: vocabulary file '.*novocab/vocab.txt' not found; give --vocab PATH"),
        ("fewer documents than topics", ["--input", texts, "--k", "70"],
         r"my_texts: 54 training documents of 3 or more words, fewer than k=70 topics"),
        ("vocabulary smaller than topics", ["--input", texts, "--k", "30"],
         r"my_texts: a vocabulary of 24 words, k=30 topics need more than k words"),
        ("bad min-df", ["--input", texts, "--min-df", "2.5"],
         r"min_df=2.5 must be a fraction of documents in \(0, 1\) or a whole number"),
    ]


def test_every_bad_input_stops_in_one_line_naming_it_before_any_work(corpus_dir, tmp_path):
    for case, argv, message in bad_inputs(corpus_dir):
        out = tmp_path / case.replace(" ", "_")
        with pytest.raises(SystemExit) as stopped:
            cli.main(["topics", "--chunks", "1", "--results-dir", str(out), *argv])
        text = str(stopped.value.code)
        assert len(text.splitlines()) == 1, (case, text)
        assert re.search(message, text), (case, text)
        assert not out.exists(), case  # no run folder: nothing started


def test_user_files_are_left_as_they_were(corpus_dir, cli_run):
    # corpus_dir recorded every file before any test read it; the job has read my_texts/ and
    # new_texts.csv, other tests corpus.csv.
    before = json.loads((corpus_dir.parent / f"{corpus_dir.name}.stamp.json").read_text())
    assert before == file_stamps(corpus_dir)


def test_python_callers_get_the_same_one_line_value_error(tmp_path):
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(CorpusError, match=r"x.json: unknown corpus format '.json'; valid: a"):
        read_corpus(tmp_path / "x.json")
    assert issubclass(CorpusError, ValueError)


def test_fit_refuses_fewer_documents_or_words_than_topics_in_one_line():
    from raysign.topics.estimator import TensorLDA

    X = sp.csr_matrix(np.array([[3, 1, 0, 0], [0, 2, 2, 0], [1, 0, 0, 5], [9, 0, 0, 0]]))
    with pytest.raises(ValueError, match=r"^X has 3 documents of 3 or more words and 4 words; "
                                         r"n_topics=4 needs at least 4"):
        TensorLDA(4).fit(X[:3])
    with pytest.raises(ValueError, match=r"4 words; n_topics=4 needs .* more than 4 words$"):
        TensorLDA(4).fit(X)


def test_holdout_is_another_name_for_heldout():
    argv = ["topics", "--holdout", "0.25"]
    assert cli.build_parser(argv).parse_args(argv).heldout == 0.25
