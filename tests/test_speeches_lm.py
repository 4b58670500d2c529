"""scripts/example_speeches_lm.py, the language-model example of docs/api.md and
docs/ddp_hook.md: its held-out split and next-character windows against plain Python on the
real corpus, and its perplexity against numpy. One cheap test (the suite is at its CI limit);
the example's Ray runs are measured by the script itself, not here."""

from __future__ import annotations

import csv
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "example_speeches_lm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("example_speeches_lm", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["example_speeches_lm"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("example_speeches_lm", None)


def test_split_windows_and_perplexity_match_plain_python_and_numpy(example, data_dir):
    path = data_dir / "text" / "parlspeech_hoc_sample.csv"
    csv.field_size_limit(10**7)
    with open(path, newline="", encoding="utf-8") as f:
        speeches = [row[8] for row in list(csv.reader(f))[1:]]  # column 9 is `text`
    assert len(speeches) == 1000
    corpus = example.Corpus.load(path)
    chars = corpus.vocabulary.chars
    train_text, test_text = "\n".join(speeches[:900]), "\n".join(speeches[900:])
    assert corpus.vocabulary.decode(corpus.train_tokens) == train_text
    held_out = [chars.index(c) if c in chars else 0 for c in test_text]
    assert corpus.test_tokens.tolist() == held_out
    inputs, targets = corpus.train_windows(stride=32)
    assert len(inputs) == len(range(0, len(train_text) - 64, 32))
    for row in (0, 1, 777, len(inputs) - 1):
        start = 32 * row
        assert corpus.vocabulary.decode(inputs[row]) == train_text[start:start + 64]
        assert corpus.vocabulary.decode(targets[row]) == train_text[start + 1:start + 65]
    test_inputs, test_targets = corpus.test_windows()  # non-overlapping: every token once
    assert test_inputs.reshape(-1).tolist() == held_out[: test_inputs.size]
    assert test_targets.reshape(-1).tolist() == held_out[1: test_inputs.size + 1]

    # Perplexity: exp of the mean next-token cross-entropy over every target, from numpy.
    torch.manual_seed(0)
    model = example.CharGPT(vocab=11, context=8, d_model=16, n_layer=1, n_head=2).eval()
    tokens = torch.randint(0, 11, (2, 5, 9))
    batches = [(t[:, :-1], t[:, 1:]) for t in tokens]
    with torch.no_grad():
        got = example.held_out_perplexity(model, batches)["perplexity"]
        logits = np.concatenate([model(x).numpy().reshape(-1, 11) for x, _ in batches])
    next_tokens = np.concatenate([y.numpy().reshape(-1) for _, y in batches])
    shifted = logits - logits.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    assert got == pytest.approx(math.exp(-log_p[np.arange(len(next_tokens)), next_tokens].mean()),
                                rel=1e-5)
