"""Evaluation loops over a score function."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from tfrec.evaluation import (
    evaluate_full_ranking,
    evaluate_sampled,
    ranking_metrics,
    sampled_ranking_metrics,
)


def make_case(num_queries: int = 11, num_items: int = 25):
    rng = np.random.default_rng(0)
    table = np.round(rng.random((40, num_items)), 1)  # scores per user index
    query_ids = rng.choice(40, size=num_queries, replace=False)  # not 0..Q-1 on purpose
    relevant = [rng.choice(np.arange(2, num_items), 2, replace=False) for _ in query_ids]
    exclude = [rng.choice(np.arange(2, num_items), 3, replace=False) for _ in query_ids]
    calls: list[int] = []

    def score_fn(ids: np.ndarray) -> np.ndarray:
        calls.append(ids.size)
        return table[ids]

    return table, query_ids, relevant, exclude, score_fn, calls


def test_full_ranking_equals_one_shot_metrics() -> None:
    table, query_ids, relevant, exclude, score_fn, calls = make_case()
    got = evaluate_full_ranking(score_fn, query_ids, relevant, exclude, ks=(1, 5), batch_size=4)
    assert calls == [4, 4, 3]
    expected = ranking_metrics(table[query_ids], relevant, exclude, ks=(1, 5))
    assert got == pytest.approx(expected, rel=1e-12)


def test_sampled_equals_one_shot_and_ignores_batch_size() -> None:
    table, query_ids, relevant, exclude, score_fn, _ = make_case()
    kwargs = dict(ks=(1, 5), num_negatives=10, seed=7)
    got = evaluate_sampled(score_fn, query_ids, relevant, exclude, batch_size=3, **kwargs)
    expected = sampled_ranking_metrics(table[query_ids], relevant, exclude, **kwargs)
    assert got == pytest.approx(expected, rel=1e-12)


def test_logs_progress(caplog: pytest.LogCaptureFixture) -> None:
    _, query_ids, relevant, exclude, score_fn, _ = make_case()
    with caplog.at_level(logging.INFO, logger="tfrec.evaluation.protocol"):
        evaluate_full_ranking(
            score_fn, query_ids, relevant, exclude, ks=(1,), batch_size=4, log_every_s=1e-9
        )
    messages = [r.getMessage() for r in caplog.records]
    assert any("4/11 queries" in m for m in messages)
    assert any("done: 11 queries (11 evaluated, 0 skipped" in m for m in messages)


def test_bad_score_fn_output_and_arguments() -> None:
    _, query_ids, relevant, exclude, _, _ = make_case()
    with pytest.raises(ValueError, match=r"score_fn: expected scores of shape \[4, num_items\]"):
        evaluate_full_ranking(lambda ids: np.zeros((1, 25)), query_ids, relevant, batch_size=4)
    with pytest.raises(ValueError, match="relevant: expected one array per query"):
        evaluate_full_ranking(lambda ids: ids, query_ids, relevant[:-1])
    with pytest.raises(ValueError, match="exclude: expected one array per query"):
        evaluate_sampled(lambda ids: ids, query_ids, relevant, exclude[:2])
    with pytest.raises(ValueError, match="batch_size: expected >= 1"):
        evaluate_full_ranking(lambda ids: ids, query_ids, relevant, batch_size=0)
    with pytest.raises(ValueError, match="query_ids: expected a non-empty 1-D"):
        evaluate_full_ranking(lambda ids: ids, np.zeros((2, 2)), relevant)
