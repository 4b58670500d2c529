"""TopicsConfig: every field validated on construction; the CLI, Tune and the benchmark build it."""
import dataclasses
import math
import re
from pathlib import Path

import pytest

from raysign.config import ConfigError, to_dict
from raysign.data import default_data_dir
from raysign.topics.config import TopicsConfig
from raysign.topics.estimator import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("field, value, allowed", [
    ("k", 0, r"\[1, inf\)"),
    ("k", -3, r"\[1, inf\)"),
    ("alpha0", 0.0, r"\(0.0, inf\)"),
    ("alpha0", math.nan, r"\(0.0, inf\)"),
    ("method", "svd", r"not one of \['power', 'tl-power', 'als'\]"),
    ("refine_steps", -1, r"\[0, inf\)"),
    ("refine_inner", 0, r"\[1, inf\)"),
    ("chunks", 0, r"\[1, inf\)"),
    ("heldout", 0.0, r"\(0.0, 1.0\)"),
    ("heldout", 1.0, r"\(0.0, 1.0\)"),
    ("heldout", 1.5, r"\(0.0, 1.0\)"),
    ("seed", -1, r"\[0, inf\)"),
    ("top", 0, r"\[1, inf\)"),
    ("top", True, r"\[1, inf\)"),
    ("data_dir", "/no/such/raysign/data", r"does not exist \(the folder holding topics/nyt"),
    ("data_dir", "nope://bucket/data", r"has the scheme 'nope'"),
    ("results_dir", "nope://bucket/runs", r"has the scheme 'nope'"),
    ("input", "/no/such/corpus.csv", r"does not exist \(a folder of text files, a .csv"),
    ("input", str(ROOT / "pyproject.toml"), r"unknown corpus format '.toml'; valid: a folder"),
    ("transform", "/no/such/new", r"does not exist \(a folder of text files"),
    ("transform", str(ROOT / "README.md"), r"unknown corpus format '.md'"),
    ("vocab", "/no/such/vocab.txt", r"does not exist \(a text file with one word per line"),
    ("text_col", "", r"must name the text column"),
    ("stop_words", "french", r"not one of \['english', 'none'\]"),
    ("min_df", 0.0, r"\(0.0, inf\)"),
    ("min_df", 2.5, r"a fraction of documents in \(0, 1\) or a whole number"),
    ("max_df", -1.0, r"\(0.0, inf\)"),
    ("max_df", 7.5, r"a fraction of documents in \(0, 1\) or a whole number"),
    ("max_features", -1, r"\[0, inf\)"),
])
def test_bad_field_raises_config_error_naming_the_field_and_what_is_allowed(field, value,
                                                                             allowed):
    named = rf"^{field}={re.escape(repr(value))} .*{allowed}"
    with pytest.raises(ConfigError, match=named):
        TopicsConfig(**{field: value})


def test_every_validated_field_has_a_rejection_case():
    checked = {"k", "alpha0", "method", "refine_steps", "refine_inner", "chunks", "heldout",
               "seed", "top", "data_dir", "results_dir", "input", "transform", "vocab",
               "text_col", "stop_words", "min_df", "max_df", "max_features"}
    assert {f.name for f in dataclasses.fields(TopicsConfig)} == checked


def test_defaults_are_the_documented_run_and_data_dir_resolves_to_the_shared_folder():
    config = TopicsConfig()
    assert (config.k, config.alpha0, config.method, config.chunks, config.heldout) == \
        (20, 1.0, "power", 4, 0.1)
    assert config.data_dir == str(default_data_dir())
    assert TopicsConfig(**to_dict(config)) == config
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.k = 3


def test_replace_revalidates():
    with pytest.raises(ConfigError, match="^chunks=0"):
        dataclasses.replace(TopicsConfig(), chunks=0)


@pytest.mark.parametrize("method", METHODS)
def test_estimator_carries_every_model_field(method):
    config = TopicsConfig(k=7, alpha0=0.5, method=method, refine_steps=2, refine_inner=4,
                          seed=11)
    est = config.estimator()
    assert (est.n_topics, est.alpha0, est.method, est.refine_steps, est.refine_inner,
            est.seed) == (7, 0.5, method, 2, 4, 11)
