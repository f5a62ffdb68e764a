"""The two measured parts of the retrieval speed benchmark, each run in its own process.

* :func:`run_tutorial`: the TFRS basic-retrieval tutorial recipe, replayed.
* :func:`run_tfrec`: tfrec's ID-only :class:`~tfrec.models.retrieval.TwoTowerModel`.

TensorFlow is imported inside the functions, so the parent process that only
launches the parts stays light.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from benchmarks import _report
from benchmarks._retrieval_pairs import (
    PairData,
    Settings,
    catalogue_rows,
    decode_strings,
    epoch_timer,
    throughput,
    top_k_accuracy,
    tutorial_split,
)


def _tutorial_model(data: PairData, movies: Any, s: Settings) -> tuple[Any, Any, Any]:
    """The tutorial's compiled model with its user and movie towers.

    StringLookup + Embedding towers over the unique user ids and catalogue
    titles, ``tfrs.tasks.Retrieval`` with ``FactorizedTopK`` over ``movies`` (the
    catalogue dataset) and Adagrad, as in the tutorial.

    Returns:
        ``(model, user_model, movie_model)``.
    """
    import tensorflow as tf
    import tensorflow_recommenders as tfrs
    import tf_keras as keras

    unique_movie_titles = np.unique(data.catalogue)
    unique_user_ids = np.unique(data.users)
    user_model = keras.Sequential(
        [
            keras.layers.StringLookup(vocabulary=unique_user_ids, mask_token=None),
            keras.layers.Embedding(len(unique_user_ids) + 1, s.embedding_dim),
        ]
    )
    movie_model = keras.Sequential(
        [
            keras.layers.StringLookup(vocabulary=unique_movie_titles, mask_token=None),
            keras.layers.Embedding(len(unique_movie_titles) + 1, s.embedding_dim),
        ]
    )
    task = tfrs.tasks.Retrieval(
        metrics=tfrs.metrics.FactorizedTopK(
            candidates=movies.batch(s.candidate_batch).map(movie_model)
        )
    )

    class MovielensModel(tfrs.Model):
        def __init__(self) -> None:
            super().__init__()
            self.movie_model = movie_model
            self.user_model = user_model
            self.task = task

        def compute_loss(self, features: Any, training: bool = False) -> tf.Tensor:
            user_embeddings = self.user_model(features["user_id"])
            positive_movie_embeddings = self.movie_model(features["movie_title"])
            return self.task(user_embeddings, positive_movie_embeddings)

    model = MovielensModel()
    model.compile(optimizer=keras.optimizers.Adagrad(learning_rate=s.learning_rate))
    return model, user_model, movie_model


def _tfrs_rounding(
    query: np.ndarray, candidates: np.ndarray, true_rows: np.ndarray, top_k: int
) -> dict[str, Any]:
    """Top-k accuracy computed TFRS's way, and the pairs it counts differently.

    TFRS takes the true score from a separate ``reduce_sum`` and the others from
    a matmul; the pairs lost/gained are those whose hit differs from the one with
    every score from the same matmul.
    """
    import tensorflow as tf

    scores = tf.linalg.matmul(query, candidates, transpose_b=True).numpy()  # [N, M]
    separate = tf.reduce_sum(query * candidates[true_rows], axis=1).numpy()  # [N]
    own = scores[np.arange(len(true_rows)), true_rows]  # [N]
    hit_separate = np.sum(scores > separate[:, None], axis=1) < top_k  # [N]
    hit_same = np.sum(scores > own[:, None], axis=1) < top_k  # [N]
    return {
        "tfrs_style_top_k_accuracy": float(np.mean(hit_separate)),
        "pairs_lost_to_tfrs_rounding": int(np.sum(hit_same & ~hit_separate)),
        "pairs_gained_by_tfrs_rounding": int(np.sum(~hit_same & hit_separate)),
    }


def _split_matches(train: Any, test_pairs: dict[str, Any], data: PairData, s: Settings) -> bool:
    """Whether :func:`tutorial_split`'s rows are the tutorial's shuffled take/skip pairs."""
    train_idx, test_idx = tutorial_split(
        len(data.users), s.num_train, s.num_test, s.seed, s.shuffle_buffer
    )
    train_pairs = next(train.batch(1 << 20).as_numpy_iterator())
    return all(
        np.array_equal(decode_strings(pairs[key]), column[idx])
        for pairs, idx in ((train_pairs, train_idx), (test_pairs, test_idx))
        for key, column in (("user_id", data.users), ("movie_title", data.titles))
    )


def run_tutorial(data: PairData, settings: Settings) -> dict[str, Any]:
    """Replays the TFRS basic-retrieval tutorial and measures it (see module doc)."""
    import tensorflow as tf

    import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow)

    s = settings
    with _report.Timer() as build:
        tf.random.set_seed(s.seed)
        ratings = tf.data.Dataset.from_tensor_slices(
            {"movie_title": data.titles, "user_id": data.users}
        )
        movies = tf.data.Dataset.from_tensor_slices(data.catalogue)
        shuffled = ratings.shuffle(s.shuffle_buffer, seed=s.seed, reshuffle_each_iteration=False)
        train = shuffled.take(s.num_train)
        test = shuffled.skip(s.num_train).take(s.num_test)
        model, user_model, movie_model = _tutorial_model(data, movies, s)
        cached_train = train.shuffle(s.shuffle_buffer).batch(s.batch_size).cache()
        cached_test = test.batch(s.eval_batch_size).cache()

    timer = epoch_timer()
    with _report.Timer() as fit:
        model.fit(cached_train, epochs=s.epochs, callbacks=[timer], verbose=0)
    with _report.Timer() as evaluate:
        metrics = model.evaluate(cached_test, return_dict=True, verbose=0)
    tfrs_top_k = float(metrics[f"factorized_top_k/top_{s.top_k}_categorical_accuracy"])

    # The same metric in numpy over the same test pairs and candidate rows.
    test_pairs = next(test.batch(1 << 20).as_numpy_iterator())
    query = user_model(test_pairs["user_id"]).numpy()
    candidates = movie_model(tf.constant(data.catalogue)).numpy()
    true_rows = catalogue_rows(data.catalogue, decode_strings(test_pairs["movie_title"]))
    numpy_top_k = top_k_accuracy(query, candidates, true_rows, s.top_k)
    return {
        "model": "TFRS basic_retrieval tutorial recipe",
        "settings": dataclasses.asdict(s),
        "num_train": s.num_train,
        "num_test": len(test_pairs["user_id"]),
        "num_users": len(np.unique(data.users)),
        "num_titles": len(np.unique(data.catalogue)),
        "num_candidates": len(data.catalogue),
        "build_s": round(build.seconds, 3),
        "fit_wall_s": round(fit.seconds, 3),
        "eval_s": round(evaluate.seconds, 3),
        **throughput(s.num_train, timer.seconds, timer.cpu_seconds),
        "top_k": s.top_k,
        "top_k_accuracy": numpy_top_k,
        "tfrs_top_k_accuracy": tfrs_top_k,
        "metric_abs_diff_numpy_vs_tfrs": abs(numpy_top_k - tfrs_top_k),
        # TFRS's way: the true score from a separate reduce_sum, the others from a matmul.
        **_tfrs_rounding(query, candidates, true_rows, s.top_k),
        # The tfrec part reads rows by tutorial_split; check they are the tutorial's pairs.
        "split_matches_tutorial_shuffle": _split_matches(train, test_pairs, data, s),
    }


#: The ID-only two-tower as a RetrievalConfig (``encoder="none"``): the query is
#: the user embedding, the candidate the item-id embedding, no content features,
#: score = u . v (matrix factorisation). Examples are (user, target) pairs, no history.
TFREC_BASE: dict[str, Any] = {
    "embedding_dim": 32,
    "encoder": "none",
    "use_user_embedding": True,
    "use_item_features": False,
    "logq_correction": False,
    "loss": "full",
    "optimizer": "adam",
    "learning_rate": 0.01,
    "batch_size": 2048,
    "epochs": 5,
    "seed": 42,
}
TFREC_QUICK: dict[str, Any] = {"embedding_dim": 4, "batch_size": 64, "epochs": 2}


def tfrec_config(quick: bool, overrides: dict[str, Any]) -> Any:
    """The tfrec model's RetrievalConfig: :data:`TFREC_BASE` (+ quick sizes) + overrides."""
    from tfrec.cli.common import apply_overrides
    from tfrec.models.retrieval import RetrievalConfig

    base = {**TFREC_BASE, **(TFREC_QUICK if quick else {})}
    return apply_overrides(RetrievalConfig.from_dict(base), overrides)  # flat names nest


def run_tfrec(data: PairData, settings: Settings, config: Any) -> dict[str, Any]:
    """Trains tfrec's ID-only TwoTowerModel on the tutorial split and measures it.

    Args:
        data: The pairs (same as the tutorial part).
        settings: Split sizes, seed and ``top_k`` (the tutorial's).
        config: The :class:`~tfrec.models.retrieval.RetrievalConfig` to train.

    Returns:
        Timings, throughput, accuracy and the config.
    """
    import tensorflow as tf

    import tfrec  # noqa: F401  (Keras-2 guard before TensorFlow)
    from tfrec.data.tfdata import make_dataset
    from tfrec.data.vocab import IdVocabulary
    from tfrec.models.retrieval import TwoTowerModel
    from tfrec.training.optimizers import make_optimizer

    s = settings
    with _report.Timer() as build:
        train_idx, test_idx = tutorial_split(
            len(data.users), s.num_train, s.num_test, s.seed, s.shuffle_buffer
        )
        # Same vocabularies as the tutorial: every user id, every catalogue title.
        user_vocab = IdVocabulary(np.unique(data.users).tolist(), name="user")
        item_vocab = IdVocabulary(np.unique(data.catalogue).tolist(), name="item")

        def features(rows: np.ndarray) -> dict[str, np.ndarray]:
            return {
                "user": user_vocab.lookup(data.users[rows]).astype(np.int32),  # [N]
                "target": item_vocab.lookup(data.titles[rows]).astype(np.int32),  # [N]
            }

        train = features(train_idx)
        test = features(test_idx)
        loop = config.training
        tf.random.set_seed(loop.seed)
        model = TwoTowerModel(config, num_users=user_vocab.size, num_items=item_vocab.size)
        model.compile(optimizer=make_optimizer(config.optimizer), jit_compile=loop.jit_compile)
        dataset = make_dataset(train, batch_size=loop.batch_size, shuffle=True, seed=loop.seed)

    timer = epoch_timer()
    with _report.Timer() as fit:
        model.fit(dataset, epochs=config.training.epochs, callbacks=[timer], verbose=0)
    with _report.Timer() as evaluate:
        query = model.query_embeddings(test["user"]).numpy()  # [N, D]
        vectors = model.candidate_embeddings().numpy()  # [I, D]
        catalogue = vectors[item_vocab.lookup(data.catalogue)]  # [M, D]
        true_rows = catalogue_rows(data.catalogue, data.titles[test_idx])
        accuracy = top_k_accuracy(query, catalogue, true_rows, s.top_k)
    return {
        "model": "tfrec TwoTowerModel, ID-only (user embedding query, item-id candidates)",
        "config": config.to_dict(),
        "num_train": len(train_idx),
        "num_test": len(test_idx),
        "num_users": user_vocab.size,
        "num_items": item_vocab.size,
        "num_candidates": len(data.catalogue),
        "build_s": round(build.seconds, 3),
        "fit_wall_s": round(fit.seconds, 3),
        "eval_s": round(evaluate.seconds, 3),
        **throughput(len(train_idx), timer.seconds, timer.cpu_seconds),
        "top_k": s.top_k,
        "top_k_accuracy": accuracy,
    }
