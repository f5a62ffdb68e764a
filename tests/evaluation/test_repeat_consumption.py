"""Held-out items that repeat a history item: counted as misses, or rankable on request.

Item vocabulary of the crafted cases: indices 0 (padding) and 1 (OOV) are never
ranked, items 2..9 are real (vocab 10).
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import pandas as pd
import pytest

from tfrec.evaluation import evaluate_full_ranking, ranking_metrics, sampled_ranking_metrics
from tfrec.evaluation.config import EvalConfig

LOG2_3 = math.log2(3)


def arr(*values: int) -> np.ndarray:
    return np.array(values, dtype=np.int64)


# Three users, scores of items 0..9 (0 and 1 are never ranked):
#   A: history {2, 3} scored 0.9, 0.8; target 4 (0.7), then 7 (0.3), 6 (0.2), ...
#   B: history {5} scored 1.0; 9 (0.9), target 6 (0.8), then 4 (0.3), ...
#   C: history {7, 8}; target 7 = a repeat of a history item, the best score 0.95.
SCORES = np.array(
    [
        # 0    1    2    3    4     5    6     7     8     9
        [0.0, 0.0, 0.9, 0.8, 0.7, 0.1, 0.2, 0.3, 0.05, 0.0],  # A
        [0.0, 0.0, 0.1, 0.2, 0.3, 1.0, 0.8, 0.05, 0.0, 0.9],  # B
        [0.0, 0.0, 0.1, 0.2, 0.3, 0.4, 0.35, 0.95, 0.5, 0.0],  # C
    ]
)
RELEVANT = [arr(4), arr(6), arr(7)]
HISTORY = [arr(2, 3), arr(5), arr(7, 8)]


def test_masked_repeat_is_a_miss_and_the_user_stays_in_the_denominator() -> None:
    # History masked: A ranks 4, 7, 6, ... -> hit at 1; B ranks 9, 6, ... -> hit at 2;
    # C's target 7 is removed with the history: a miss, C still counts.
    # HR@1 = 1/3; HR@2 = 2/3 = 0.6667; NDCG@2 = (1 + 1/log2(3) + 0) / 3 = 0.5436;
    # MRR = (1 + 1/2 + 0) / 3 = 0.5. (Skipping C would give HR@2 = 1.0 over 2 users.)
    got = ranking_metrics(SCORES, RELEVANT, HISTORY, ks=(1, 2))
    assert got["users"] == 3.0
    assert got["skipped_users"] == 0.0
    assert got["masked_target_users"] == 1.0
    assert got["repeat_target_users"] == 1.0
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["hr@2"] == pytest.approx(2 / 3)
    assert got["ndcg@2"] == pytest.approx((1 + 1 / LOG2_3) / 3)
    assert got["ndcg@2"] == pytest.approx(0.5436, abs=1e-4)
    assert got["recall@2"] == pytest.approx(2 / 3)
    assert got["precision@2"] == pytest.approx((1 / 2 + 1 / 2) / 3)
    assert got["map@2"] == pytest.approx((1 + 1 / 2) / 3)
    assert got["mrr"] == pytest.approx(0.5)


def test_unmasked_history_items_are_rankable_and_the_repeat_can_be_hit() -> None:
    # Nothing masked: A ranks 2, 3, 4 -> target at 3 (miss @2); B ranks 5, 9, 6 -> at 3;
    # C ranks 7 first -> hit. HR@1 = HR@2 = 1/3; NDCG@2 = 1/3; MRR = (1/3 + 1/3 + 1) / 3.
    got = ranking_metrics(SCORES, RELEVANT, HISTORY, ks=(1, 2), mask_exclude=False)
    assert (got["users"], got["skipped_users"]) == (3.0, 0.0)
    assert got["masked_target_users"] == 0.0
    assert got["repeat_target_users"] == 1.0  # still reported
    assert got["hr@1"] == pytest.approx(1 / 3)
    assert got["hr@2"] == pytest.approx(1 / 3)
    assert got["ndcg@2"] == pytest.approx(1 / 3)
    assert got["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1) / 3)


def test_evaluation_loop_logs_the_repeats(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="tfrec.evaluation.protocol"):
        got = evaluate_full_ranking(
            lambda rows: SCORES[rows], np.arange(3), RELEVANT, HISTORY, ks=(2,), batch_size=2
        )
    assert (got["users"], got["hr@2"]) == (3.0, pytest.approx(2 / 3))  # batches 2 + 1
    assert any("1 users (1 items) had a held-out item" in r.getMessage() for r in caplog.records)


def test_multi_relevant_user_recall_counts_masked_items() -> None:
    # Random split: the user's test items are {4, 7}, history {2, 3, 7}. Item 7 is masked
    # (a miss) but stays in |rel| = 2. Ranking without 2, 3, 7: 4 (0.7), 6 (0.2), 5, ...
    # recall@1 = 1/2; precision@1 = 1; NDCG@2 = 1 / (1 + 1/log2(3)) (ideal: 2 hits on top);
    # MAP@2 = (1/1) / min(2, 2) = 1/2.
    scores = SCORES[:1]
    got = ranking_metrics(scores, [arr(4, 7)], [arr(2, 3, 7)], ks=(1, 2))
    assert got["users"] == 1.0 and got["masked_target_users"] == 1.0
    assert got["conflicts"] == 1.0  # one masked relevant item
    assert got["recall@1"] == pytest.approx(1 / 2)
    assert got["precision@1"] == 1.0
    assert got["ndcg@2"] == pytest.approx(1 / (1 + 1 / LOG2_3))
    assert got["map@2"] == pytest.approx(1 / 2)
    # Unmasked, 7 (0.3) is ranked: 2 (0.9), 3, 4 (0.7), 7 (0.3) -> recall@4 = 2/2.
    unmasked = ranking_metrics(scores, [arr(4, 7)], [arr(2, 3, 7)], ks=(4,), mask_exclude=False)
    assert unmasked["recall@4"] == 1.0 and unmasked["masked_target_users"] == 0.0


def test_sampled_protocol_counts_the_masked_repeat_as_a_miss() -> None:
    # 5 negatives from the items outside the user's history and targets. A: the drawable
    # items are exactly {5, 6, 7, 8, 9}, all below 4 (0.7) -> rank 1. B: 6 of {2, 3, 4, 7,
    # 8, 9} minus one; only 9 (0.9) beats 6 (0.8) -> rank <= 2. C: 7 (0.95) beats all.
    # Masked: C is a miss -> HR@2 = 2/3. Unmasked (SASRec): C's 7 is ranked -> HR@2 = 1.
    kwargs = dict(ks=(2,), num_negatives=5, seed=0)
    masked = sampled_ranking_metrics(SCORES, RELEVANT, HISTORY, **kwargs)
    assert (masked["users"], masked["masked_target_users"]) == (3.0, 1.0)
    assert masked["hr@2"] == pytest.approx(2 / 3)
    unmasked = sampled_ranking_metrics(SCORES, RELEVANT, HISTORY, mask_exclude=False, **kwargs)
    assert (unmasked["users"], unmasked["masked_target_users"]) == (3.0, 0.0)
    assert unmasked["hr@2"] == 1.0
    # Two test items, one masked: the user's mean is over both -> hr@1 = (1 + 0) / 2
    # (the drawable negatives {5, 6, 8, 9} all score below 4's 0.7).
    half = sampled_ranking_metrics(
        SCORES[:1], [arr(4, 7)], [arr(2, 3, 7)], ks=(1,), num_negatives=3
    )
    assert half["hr@1"] == pytest.approx(1 / 2)


def test_bad_mask_exclude_is_rejected() -> None:
    with pytest.raises(ValueError, match="mask_exclude: expected True or False, got 'no'"):
        ranking_metrics(SCORES, RELEVANT, HISTORY, ks=(1,), mask_exclude="no")


# ---------------------------------------------------------------- config and CLI


def test_eval_config_mask_field_and_old_configs() -> None:
    assert EvalConfig().mask == "history"
    assert EvalConfig.from_json(EvalConfig(mask="none").to_json()).mask == "none"
    # Configs saved before `mask` existed keep their meaning.
    assert EvalConfig.from_dict({"mask_history": False}).mask == "none"
    assert EvalConfig.from_dict({"mask_history": True, "report_unmasked": True}).mask == "both"
    assert EvalConfig.from_dict({"mask_history": True, "report_unmasked": False}).mask == "history"
    with pytest.raises(ValueError, match=r"EvalConfig.mask: expected one of"):
        EvalConfig.from_dict({"mask": "train"})
    with pytest.raises(ValueError, match="given together"):
        EvalConfig.from_dict({"mask": "none", "mask_history": True})
    with pytest.raises(ValueError, match=r"EvalConfig.mask='all'"):
        EvalConfig(mask="all")


def _parse(command: str, argv: list[str]) -> argparse.Namespace:
    from tfrec.cli import evaluate, train

    parser = argparse.ArgumentParser()
    subparsers = parser.add_subparsers(dest="command")
    {"train": train, "evaluate": evaluate}[command].register(subparsers)
    return parser.parse_args([command, *argv])


def test_cli_eval_mask_choices_match_the_config_and_are_saved() -> None:
    from tfrec.cli.evaluate import _eval_mask
    from tfrec.cli.train import experiment_config

    args = _parse("train", ["--dataset", "synthetic", "--output-dir", "x", "--eval-mask", "none"])
    kind, config = experiment_config(args)
    assert kind == "retrieval"
    assert config.evaluation.mask == "none"
    assert '"mask": "none"' in config.to_json()  # saved with the run's config.json
    _, preset = experiment_config(_parse("train", ["--dataset", "beauty", "--output-dir", "x"]))
    assert preset.evaluation.mask == "both"  # the beauty preset reports both
    with pytest.raises(SystemExit):
        _parse("train", ["--dataset", "synthetic", "--output-dir", "x", "--eval-mask", "all"])
    assert _eval_mask(_parse("evaluate", ["--model-dir", "m", "--eval-mask", "both"])) == "both"
    assert _eval_mask(_parse("evaluate", ["--model-dir", "m", "--no-mask-history"])) == "none"
    assert _eval_mask(_parse("evaluate", ["--model-dir", "m"])) is None  # as saved
    with pytest.raises(ValueError, match="--no-mask-history contradicts --eval-mask history"):
        _eval_mask(_parse("evaluate", ["--model-dir", "m", "--no-mask-history", "--eval-mask",
                                       "history"]))  # fmt: skip


# ---------------------------------------------------------------- experiment


def _interactions(rows: list[tuple[str, str, int]]):
    from tfrec.data.interactions import Interactions

    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "timestamp"])
    return Interactions.from_frame(frame, name="repeat", has_timestamps=True)


def _experiment(mask: str):
    """u1..u3 over items a..h (indices 2..9); u3's valid and test items repeat its history."""
    from tfrec.data.interactions import concat_interactions
    from tfrec.data.splits import Split
    from tfrec.models.retrieval import RetrievalConfig
    from tfrec.training.retrieval import RetrievalExperiment, RetrievalExperimentConfig

    train = _interactions(
        [("u1", "a", 1), ("u1", "b", 2), ("u2", "c", 1), ("u2", "d", 2), ("u3", "e", 1),
         ("u3", "f", 2), ("u3", "g", 3), ("u3", "h", 4)]
    )  # fmt: skip
    valid = _interactions([("u1", "c", 5), ("u2", "e", 5), ("u3", "e", 5)])  # u3: repeat of e
    test = _interactions([("u1", "d", 9), ("u2", "a", 9), ("u3", "f", 9)])  # u3: repeat of f
    split = Split(train=train, valid=valid, test=test, protocol="crafted")
    config = RetrievalExperimentConfig(
        model=RetrievalConfig(embedding_dim=4, encoder="mean", max_history=4),
        evaluation=EvalConfig(ks=[1, 10], mask=mask),
    )
    data = concat_interactions(train, valid, test)
    return RetrievalExperiment(config, data=data, split=split)


@pytest.mark.parametrize(
    ("mask", "expected_hr10"),
    [
        # K = 10 >= the 8 real items: every rankable target is hit, so HR@10 is the
        # share of users whose target can be ranked: 2/3 masked (u3 misses), 1 unmasked.
        ("history", {"test/hr@10": 2 / 3}),
        ("none", {"test_unmasked/hr@10": 1.0}),
        ("both", {"test/hr@10": 2 / 3, "test_unmasked/hr@10": 1.0}),
    ],
)
def test_experiment_reports_every_user_under_the_mode_keys(mask, expected_hr10) -> None:
    experiment = _experiment(mask)
    test_metrics = experiment.evaluate_part("test")
    groups = {key.split("/")[0] for key in test_metrics}
    assert groups == {key.split("/")[0] for key in expected_hr10}
    for key, value in expected_hr10.items():
        group = key.split("/")[0]
        assert test_metrics[key] == pytest.approx(value)
        assert test_metrics[f"{group}/users"] == 3.0
        assert test_metrics[f"{group}/repeat_target_users"] == 1.0
        masked = group == "test"
        assert test_metrics[f"{group}/masked_target_users"] == float(masked)
        assert test_metrics[f"{group}/mask_history"] == float(masked)
    # Early stopping uses the mode's first report, same denominator: the validation part
    # has the same shape (u3's item repeats its history).
    first = next(iter(expected_hr10.values()))
    assert experiment._validation_metrics()["hr@10"] == pytest.approx(first)


@pytest.mark.slow
def test_two_stage_counts_the_repeat_as_a_miss() -> None:
    from testing_utils import successor_walks, train_tiny_ranker

    from tfrec.data.splits import Split, leave_one_out
    from tfrec.evaluation.two_stage import evaluate_two_stage
    from tfrec.models.retrieval import RetrievalConfig, TwoTowerModel
    from tfrec.models.two_stage import RetrievalScorer

    base = leave_one_out(successor_walks(num_users=6))
    # Each user walked all 8 items: train + valid hold 7, the test item is the 8th. u0's
    # test item becomes its first item, a repeat.
    frame = base.test.frame.copy()
    first = base.train.frame.groupby("user_id")["item_id"].first()
    frame.loc[frame["user_id"] == "u0", "item_id"] = first["u0"]
    test = _interactions(list(frame[["user_id", "item_id", "timestamp"]].itertuples(index=False)))
    split = Split(train=base.train, valid=base.valid, test=test, protocol="crafted")
    trained, users, items = train_tiny_ranker(
        split, max_history=4, num_negatives=3, eval_negatives=4, ndcg_k=3, use_item_features=False
    )
    retrieval = TwoTowerModel(
        RetrievalConfig(embedding_dim=4, encoder="mean", max_history=4), users.size, items.size
    )
    scorer = RetrievalScorer(retrieval)
    # Masked: the 5 other users have exactly one rankable item, their target -> HR@1 = 5/6.
    masked = evaluate_two_stage(trained, scorer, split, num_candidates=3, ks=(1, 8))
    for stage in ("retrieval", "two_stage"):
        assert masked[stage]["users"] == 6.0 and masked[stage]["masked_target_users"] == 1.0
        assert masked[stage]["hr@1"] == pytest.approx(5 / 6)
        assert masked[stage]["hr@8"] == pytest.approx(5 / 6)  # u0's target is unreachable
    # Unmasked: all 8 items rankable, so every target is in the top 8, u0's repeat too.
    unmasked = evaluate_two_stage(
        trained, scorer, split, num_candidates=3, ks=(1, 8), mask_history=False
    )
    for stage in ("retrieval", "two_stage"):
        assert unmasked[stage]["users"] == 6.0 and unmasked[stage]["masked_target_users"] == 0.0
        assert unmasked[stage]["repeat_target_users"] == 1.0
        assert unmasked[stage]["hr@8"] == 1.0
