"""Aggregators against plain-Python references, loaders against the published counts, and the
simulated annotators against their definitions."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raysign.crowd.aggregate import (
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    WeightedMajorityVote,
)
from raysign.crowd.annotations import Annotations, load_crowd
from raysign.crowd.simulate import (
    assign_workers,
    classwise_hammer_spammer_confusions,
    draw_labels,
    hammer_spammer_confusions,
    items_for_budget,
    simulate_annotations,
)


def reference_dawid_skene(rows, n_items, n_workers, k, n_iter, alpha, prior_alpha,
                          one_coin=False):
    """Dawid-Skene EM written with dicts and loops, one annotation at a time."""
    votes = defaultdict(lambda: [0.0] * k)
    for i, _, label in rows:
        votes[i][label] += 1
    q = []
    for i in range(n_items):
        total = sum(votes[i])
        q.append([v / total for v in votes[i]] if total else [1.0 / k] * k)

    def m_step(q):
        prior = [sum(q[i][c] for i in range(n_items)) + prior_alpha for c in range(k)]
        prior = [p / sum(prior) for p in prior]
        if one_coin:
            correct, seen = [0.0] * n_workers, [0] * n_workers
            for i, w, label in rows:
                correct[w] += q[i][label]
                seen[w] += 1
            acc = [(correct[w] + alpha) / (seen[w] + 2 * alpha) for w in range(n_workers)]
            err = [[[acc[w] if obs == c else (1 - acc[w]) / (k - 1) for c in range(k)]
                    for obs in range(k)] for w in range(n_workers)]
            return err, prior
        counts = [[[alpha] * k for _ in range(k)] for _ in range(n_workers)]
        for i, w, label in rows:
            for c in range(k):
                counts[w][label][c] += q[i][c]
        err = [[[0.0] * k for _ in range(k)] for _ in range(n_workers)]
        for w in range(n_workers):
            for c in range(k):
                col = sum(counts[w][obs][c] for obs in range(k))
                for obs in range(k):
                    err[w][obs][c] = counts[w][obs][c] / col if col else 1.0 / k
        return err, prior

    def e_step(err, prior):
        logp = [[math.log(prior[c]) for c in range(k)] for _ in range(n_items)]
        for i, w, label in rows:
            for c in range(k):
                logp[i][c] += math.log(err[w][label][c])
        out = []
        for i in range(n_items):
            top = max(logp[i])
            z = sum(math.exp(v - top) for v in logp[i])
            out.append([math.exp(v - top) / z for v in logp[i]])
        return out

    err, prior = m_step(q)
    for it in range(n_iter):
        q = e_step(err, prior)
        if it < n_iter - 1:
            err, prior = m_step(q)
    return np.array(q), np.array(err), np.array(prior)


crowd_inputs = st.tuples(
    st.integers(2, 4),  # classes
    st.integers(1, 8),  # items
    st.integers(1, 5),  # workers
    st.integers(0, 2**31 - 1),  # seed
)


def random_annotations(k, n_items, n_workers, seed):
    rng = np.random.default_rng(seed)
    pairs = [(i, w) for i in range(n_items) for w in range(n_workers) if rng.random() < 0.7]
    if not pairs:
        pairs = [(0, 0)]
    items, workers = (np.array(c) for c in zip(*pairs, strict=True))
    labels = rng.integers(0, k, len(items))
    return Annotations(items, workers, labels, n_items, n_workers, k)


@pytest.mark.parametrize("model", [DawidSkene, OneCoinDawidSkene])
@settings(max_examples=25, deadline=None)
@given(params=crowd_inputs)
def test_em_matches_plain_python_reference_on_small_inputs(model, params):
    annotations = random_annotations(*params)
    fitted = model(n_iter=6, tol=0.0, alpha=0.1, prior_alpha=1.0).fit(annotations)
    rows = list(zip(annotations.items.tolist(), annotations.workers.tolist(),
                    annotations.labels.tolist(), strict=True))
    q, err, prior = reference_dawid_skene(
        rows, annotations.n_items, annotations.n_workers, annotations.n_classes,
        fitted.n_iter_, 0.1, 1.0, one_coin=model is OneCoinDawidSkene)
    np.testing.assert_allclose(fitted.probas_, q, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.errors_, err, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fitted.priors_, prior, rtol=1e-9, atol=1e-12)


@settings(max_examples=25, deadline=None)
@given(params=crowd_inputs)
def test_majority_vote_matches_counter_of_votes(params):
    annotations = random_annotations(*params)
    mv = MajorityVote(seed=3).fit(annotations)
    votes = defaultdict(Counter)
    for i, label in zip(annotations.items.tolist(), annotations.labels.tolist(), strict=True):
        votes[i][label] += 1
    for i in range(annotations.n_items):
        if votes[i]:
            top = max(votes[i].values())
            assert votes[i][int(mv.labels_[i])] == top
            assert mv.probas_[i, int(mv.labels_[i])] == pytest.approx(
                top / sum(votes[i].values()))
        else:
            np.testing.assert_allclose(mv.probas_[i], 1.0 / annotations.n_classes)


def test_weighted_majority_vote_follows_weights_over_counts():
    # item 0: two low-weight workers say 0, one high-weight worker says 1
    annotations = Annotations([0, 0, 0], [0, 1, 2], [0, 0, 1], 1, 3, 2)
    wmv = WeightedMajorityVote(weights=np.array([0.1, 0.1, 1.0])).fit(annotations)
    assert wmv.labels_.tolist() == [1]
    np.testing.assert_allclose(wmv.probas_[0], [0.2 / 1.2, 1.0 / 1.2])


def test_em_objective_never_decreases_and_recovers_simulated_confusions():
    rng = np.random.default_rng(0)
    k, m = 3, 20
    truth = rng.integers(0, k, 3000)
    # workers with accuracy 0.5..0.9 and structured confusion
    confusions = np.empty((m, k, k))
    for w in range(m):
        acc = 0.5 + 0.4 * w / (m - 1)
        confusions[w] = (1 - acc) / (k - 1)
        np.fill_diagonal(confusions[w], acc)
    annotations = simulate_annotations(truth, 5, confusions, rng)
    ds = DawidSkene(tol=0.0, n_iter=50).fit(annotations)
    assert np.all(np.diff(ds.loss_history_) >= -1e-9)
    # close to the confusions counted against the hidden truth (the best any method can do)
    counted = np.zeros((m, k, k))
    np.add.at(counted, (annotations.workers, annotations.labels, truth[annotations.items]), 1)
    counted /= counted.sum(axis=1, keepdims=True)
    assert np.abs(ds.errors_ - counted).max() < 0.05
    assert np.abs(ds.errors_ - confusions).max() < 0.15
    assert np.mean(ds.labels_ == truth) > np.mean(MajorityVote().fit_predict(annotations) == truth)


@pytest.mark.parametrize("name,items,workers,labels", [
    ("bluebirds", 108, 39, 4212), ("rte", 800, 164, 8000), ("temp", 462, 76, 4620)])
def test_loaders_give_published_counts_and_full_truth(data_dir, name, items, workers, labels):
    dataset = load_crowd(name, data_dir)
    a = dataset.annotations
    assert (a.n_items, a.n_workers, len(a), a.n_classes) == (items, workers, labels, 2)
    assert np.all(dataset.truth >= 0)
    assert np.all(a.labels_per_item() > 0)


def test_dawid_skene_beats_majority_vote_on_bluebirds(data_dir):
    # Welinder et al. report ~0.76 for majority vote on bluebirds; confusion models do better
    dataset = load_crowd("bluebirds", data_dir)
    mv = dataset.accuracy(MajorityVote().fit_predict(dataset.annotations))
    ds = dataset.accuracy(DawidSkene().fit_predict(dataset.annotations))
    assert mv == pytest.approx(0.759, abs=0.01)
    assert ds > mv + 0.1


def test_assignment_gives_distinct_workers_per_item_and_the_budget():
    n = items_for_budget(1000, 3)
    assert n == 333
    items, workers = assign_workers(n, 3, 7, np.random.default_rng(1))
    assert len(items) == 999
    per_item = workers.reshape(n, 3)
    assert np.all(np.sort(per_item, axis=1)[:, 1:] != np.sort(per_item, axis=1)[:, :-1])
    # every worker is equally likely: 999 labels over 7 workers, about 143 each
    counts = np.bincount(workers, minlength=7)
    assert counts.min() > 100 and counts.max() < 190


def test_hammer_spammer_workers_follow_their_definition():
    rng = np.random.default_rng(2)
    conf = hammer_spammer_confusions(2000, 4, 0.3, rng)
    hammer = np.all(conf == np.eye(4), axis=(1, 2))
    spammer = np.all(conf == 0.25, axis=(1, 2))
    assert np.all(hammer ^ spammer)
    assert abs(hammer.mean() - 0.3) < 0.04
    cw = classwise_hammer_spammer_confusions(2000, 4, 0.3, rng)
    cols_hammer = np.all(cw == np.eye(4)[None], axis=1)  # [w, c]
    cols_spam = np.all(cw == 0.25, axis=1)
    assert np.all(cols_hammer ^ cols_spam)
    assert abs(cols_hammer.mean() - 0.3) < 0.02
    np.testing.assert_allclose(cw.sum(axis=1), 1.0)


def test_drawn_labels_follow_the_confusion_columns():
    rng = np.random.default_rng(3)
    conf = np.array([[[0.7, 0.2], [0.3, 0.8]]])  # one worker, [l, c]
    truth = rng.integers(0, 2, 40000)
    items = np.arange(40000)
    labels = draw_labels(truth, items, np.zeros(40000, np.int64), conf, rng)
    for c in range(2):
        freq = np.bincount(labels[truth == c], minlength=2) / np.sum(truth == c)
        np.testing.assert_allclose(freq, conf[0, :, c], atol=0.015)
